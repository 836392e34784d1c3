"""examples/pytorch_resume.py resumes bit-identically after SIGKILLs and in-process retries."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numpy")

from resumable.torch import ResumableSampler  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pytorch_resume.py"


def start(workdir: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """The example in a new process, its snapshots in ``workdir/store``."""
    env = {**os.environ, "RESUMABLE_STORE": str(workdir / "store"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--out", str(out), *extra],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    """Wait for ``proc`` to exit successfully; its remaining output."""
    assert proc.stdout is not None
    with proc.stdout:
        output = proc.stdout.read()
    assert proc.wait() == 0, output
    return output


def tensors(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every tensor in a nest of dicts, lists and tuples, with where it sits."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors(value, f"{path}/{key}")
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from tensors(value, f"{path}/{index}")


def assert_bit_identical(expected_file: Path, actual_file: Path) -> None:
    """Both final states hold the same tensors, equal bit for bit."""
    expected = dict(tensors(torch.load(expected_file)))
    actual = dict(tensors(torch.load(actual_file)))
    assert len(expected) > 10
    assert expected.keys() == actual.keys()
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, different


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final state of a run never interrupted."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    out = workdir / "final.pt"
    output = finish(start(workdir, out))
    assert "resumed" not in output
    return out


def test_sigkill_three_times_then_finish(uninterrupted: Path, tmp_path: Path) -> None:
    """Three SIGKILLs at random moments, then a run to the end: the same bits as no kill."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    out = tmp_path / "final.pt"
    resumed = 0
    for _ in range(3):
        proc = start(tmp_path, out)
        assert proc.stdout is not None
        lines_before_kill = rng.randint(1, 8)
        saved = 0
        while saved < lines_before_kill:
            line = proc.stdout.readline()
            assert line, f"the example ended before the kill (seed {seed})"
            resumed += line.startswith("resumed")
            saved += line.startswith("saved")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
    output = finish(start(tmp_path, out))
    assert "resumed at epoch" in output
    assert resumed == 2, f"seed {seed}"
    assert_bit_identical(uninterrupted, out)


@pytest.mark.parametrize("fail_at", [5, 130])
def test_in_process_retry(uninterrupted: Path, tmp_path: Path, fail_at: int) -> None:
    """An exception at a chosen step, retried in the same process: the same bits as no failure."""
    out = tmp_path / "final.pt"
    output = finish(start(tmp_path, out, "--fail-at", str(fail_at)))
    assert "resumed at epoch" in output
    assert_bit_identical(uninterrupted, out)


def test_sampler_skips_exactly_the_done_samples() -> None:
    """A sampler started late yields the rest of the same epoch's order, and no more."""
    full = list(ResumableSampler(100, seed=5, epoch=3))
    assert sorted(full) == list(range(100))
    assert full != list(ResumableSampler(100, seed=5, epoch=4))
    assert full != list(ResumableSampler(100, seed=6, epoch=3))
    for start in (0, 1, 48, 100):
        assert list(ResumableSampler(100, seed=5, epoch=3, start=start)) == full[start:]
    with pytest.raises(ValueError, match="past the end"):
        ResumableSampler(10, start=11)
