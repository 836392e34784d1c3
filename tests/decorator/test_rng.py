"""capture_rng / restore_rng: every global generator in use continues where it was."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import ConfigurationError, Dir, RetryPolicy, ctx, resumable
from resumable.torch import capture_rng, restore_rng


def test_random_continues_after_restore() -> None:
    """Python's random draws the same numbers after a restore."""
    random.seed(1)
    states = capture_rng()
    expected = [random.random() for _ in range(5)]
    random.seed(99)
    restore_rng(states)
    assert [random.random() for _ in range(5)] == expected


def test_numpy_continues_after_restore() -> None:
    """NumPy's global generator, Gaussian cache included, continues after a restore."""
    np = pytest.importorskip("numpy")
    np.random.seed(3)
    np.random.normal()  # leaves a cached Gaussian behind
    states = pickle.loads(pickle.dumps(capture_rng()))
    expected = (np.random.normal(size=4), np.random.randint(0, 1000, size=4))
    np.random.seed(5)
    restore_rng(states)
    assert np.array_equal(np.random.normal(size=4), expected[0])
    assert np.array_equal(np.random.randint(0, 1000, size=4), expected[1])


def test_torch_continues_after_restore() -> None:
    """Torch's CPU generator draws the same dropout mask after a restore."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(4)
    states = pickle.loads(pickle.dumps(capture_rng()))
    expected = torch.nn.functional.dropout(torch.ones(64), 0.5)
    torch.manual_seed(8)
    restore_rng(states)
    assert torch.equal(torch.nn.functional.dropout(torch.ones(64), 0.5), expected)


def test_states_are_plain_data() -> None:
    """The states hold only builtins: they unpickle where torch and NumPy are absent."""
    pytest.importorskip("torch")
    pytest.importorskip("numpy")
    states = capture_rng()
    assert {"random", "numpy", "torch"} <= set(states)

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(plain(k) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return isinstance(value, (int, float, str, bytes, type(None)))

    assert plain(states)


def test_capture_imports_nothing() -> None:
    """capture_rng imports neither torch nor NumPy; it captures only what is in use."""
    code = (
        "import sys, resumable.torch as rt\n"
        "states = rt.capture_rng()\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
        "assert set(states) == {'version', 'random'}, states.keys()\n"
        "rt.restore_rng(states)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_restore_refuses_other_data() -> None:
    """restore_rng says what it takes when handed something else."""
    with pytest.raises(ValueError, match="capture_rng"):
        restore_rng({"random": random.getstate()})


# -- @resumable(rng=True) ---------------------------------------------------------------------

STEPS = 12

# A task drawing from `random` and NumPy's global generator at every step. It seeds only when
# it starts from the initial state: on a resume the generators are where the snapshot was.
TASK = """
import asyncio, json, os, random, sys, time
import numpy as np
from resumable import RetryPolicy, ctx, resumable

STEPS = {steps}
FAIL_AT = int(os.environ.get("FAIL_AT", "-1"))
PAUSE = float(os.environ.get("PAUSE", "0"))


def draw(i):
    time.sleep(PAUSE)
    drawn = [random.random(), float(np.random.random()), random.randint(0, 10**9)]
    if i == FAIL_AT and ctx().attempt_number() == 0:  # after drawing: the generators moved
        raise RuntimeError("simulated failure at step %d" % i)
    return drawn


ONCE_MORE = RetryPolicy(attempts=2, wait=0)


@resumable(state={{"i": 0, "seq": []}}, rng=True, retry=ONCE_MORE, store=sys.argv[1])
def sync_task(state):
    if state["i"] == 0:
        random.seed(11)
        np.random.seed(11)
    for i in range(state["i"], STEPS):
        state = {{"i": i + 1, "seq": state["seq"] + [draw(i)]}}
        yield state
        print("step", i + 1, flush=True)
    return state["seq"]


@resumable(state={{"i": 0, "seq": []}}, rng=True, retry=ONCE_MORE, store=sys.argv[1])
async def async_task(state):
    if state["i"] == 0:
        random.seed(11)
        np.random.seed(11)
    for i in range(state["i"], STEPS):
        state = {{"i": i + 1, "seq": state["seq"] + [draw(i)]}}
        yield state
        print("step", i + 1, flush=True)


if __name__ == "__main__":
    if sys.argv[2] == "sync":
        seq = sync_task()
    else:
        seq = asyncio.run(async_task())["seq"]
    print("RESULT", json.dumps(seq), flush=True)
"""


@pytest.fixture
def task_script(tmp_path: Path) -> Path:
    """The rng=True task as a script: python task.py STORE sync|async."""
    pytest.importorskip("numpy")
    script = tmp_path / "rng_task.py"
    script.write_text(TASK.format(steps=STEPS))
    return script


def run_task(script: Path, store: Path, kind: str, **env: str) -> list[Any]:
    """Run the task to its end in a subprocess; the sequence it drew."""
    done = subprocess.run(
        [sys.executable, str(script), str(store), kind],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        timeout=120,
    )
    line = next(s for s in done.stdout.splitlines() if s.startswith("RESULT "))
    seq: list[Any] = json.loads(line.removeprefix("RESULT "))
    return seq


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_rng_in_process_retry_draws_the_same(task_script: Path, tmp_path: Path, kind: str) -> None:
    """A failure mid-way and a retry from the snapshot: the same draws as no failure."""
    expected = run_task(task_script, tmp_path / "a", kind)
    assert len(expected) == STEPS
    assert run_task(task_script, tmp_path / "b", kind, FAIL_AT="7") == expected


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_rng_sigkill_then_resume_draws_the_same(
    task_script: Path, tmp_path: Path, kind: str
) -> None:
    """SIGKILLed after a few steps, run again: the same draws as an uninterrupted run."""
    expected = run_task(task_script, tmp_path / "a", kind)
    store = tmp_path / "b"
    proc = subprocess.Popen(
        [sys.executable, str(task_script), str(store), kind],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PAUSE": "0.05"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "step 5":
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert run_task(task_script, store, kind) == expected


def test_rng_off_by_default_draws_differ(task_script: Path, tmp_path: Path) -> None:
    """Without rng= the same retry draws other numbers: what rng=True is for."""
    plain = task_script.read_text().replace("rng=True, ", "")
    task_script.write_text(plain)
    expected = run_task(task_script, tmp_path / "a", "sync")
    assert run_task(task_script, tmp_path / "b", "sync", FAIL_AT="7") != expected


def test_rng_snapshot_is_a_normal_state_snapshot(tmp_path: Path) -> None:
    """A task without rng= loads a snapshot written with rng=True: the same state."""

    @resumable(state=0, rng=True, store=tmp_path, key="shared", on_success="keep")
    def with_rng(state: int) -> Iterator[int]:
        yield 41

    @resumable(state=0, store=tmp_path, key="shared")
    def without(state: int) -> int:
        return state + 1

    with_rng()
    before = random.getstate()
    assert without() == 42
    assert random.getstate() == before  # nothing restored without rng=True


def test_rng_restored_only_from_a_snapshot(tmp_path: Path) -> None:
    """A fresh start leaves the generators alone; a resume puts them back."""
    seen: list[float] = []

    @resumable(state=0, rng=True, store=tmp_path, retry=RetryPolicy(attempts=2, wait=0))
    def task(state: int) -> Iterator[int]:
        for i in range(state, 3):
            seen.append(random.random())
            yield i + 1
            if i == 1 and ctx().attempt_number() == 0:
                raise RuntimeError("once")

    random.seed(5)
    task()
    random.seed(5)
    expected = [random.random() for _ in range(3)]
    assert seen == [*expected[:2], expected[2]]


def test_rng_needs_pickled_state() -> None:
    """rng=True with Dir() or without state= is refused when decorating."""
    with pytest.raises(ConfigurationError, match="rng=True"):
        resumable(state=Dir("x"), rng=True)
    with pytest.raises(ConfigurationError, match="rng=True"):
        resumable(rng=True)
    with pytest.raises(ConfigurationError, match="rng"):
        resumable(state=0, rng=1)  # type: ignore[arg-type]
