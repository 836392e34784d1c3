"""Default keys: stable across processes, different for different arguments, clear errors."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from resumable import ConfigurationError, StateError, ctx, resumable
from resumable._keys import call_key, check_key, task_name


def job(n: int, items: list[str], opts: dict[str, Any] | None = None, state: int = 0) -> None:
    """A task signature to derive keys from."""


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Cfg:
    lr: float
    layers: tuple[int, ...]


def test_same_call_same_key_in_another_process() -> None:
    """A fresh interpreter derives the same key for the same call."""
    here = call_key(job, (3, ["a", "b"]), {"opts": {"x": 1.5, "y": {2, 1}}}, "state")
    code = (
        "from tests.decorator.test_keys import job\n"
        "from resumable._keys import call_key\n"
        "print(call_key(job, (3, ['a', 'b']), {'opts': {'y': {1, 2}, 'x': 1.5}}, 'state'))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there


def test_positional_and_keyword_calls_agree() -> None:
    """job(3, x) and job(n=3, items=x) are the same call, defaults included."""
    assert call_key(job, (3, ["a"]), {}, "state") == call_key(
        job, (), {"n": 3, "items": ["a"], "opts": None}, "state"
    )


def test_state_is_not_part_of_the_key() -> None:
    """The injected state never changes the key."""
    assert call_key(job, (3, []), {"state": 1}, "state") == call_key(job, (3, []), {}, "state")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 2),
        (1, 1.0),
        (1, True),
        ("1", 1),
        (b"x", "x"),
        ([1, 2], (1, 2)),
        (Path("a"), "a"),
        (Color.RED, 1),
        (Cfg(0.1, (1,)), Cfg(0.2, (1,))),
    ],
)
def test_different_arguments_different_keys(a: object, b: object) -> None:
    """Values that differ (even 1 and 1.0, or a list and a tuple) give different keys."""
    assert call_key(job, (a, []), {}, "state") != call_key(job, (b, []), {}, "state")


def test_undigestable_argument_suggests_key() -> None:
    """An argument without a stable digest raises StateError that suggests key=."""
    with pytest.raises(StateError, match="key="):
        call_key(job, (threading.Lock(), []), {}, "state")


def test_task_name_is_a_safe_path_segment() -> None:
    """Nested functions' <locals> never reach the store path."""

    def inner() -> None: ...

    name = task_name(inner)
    assert "<" not in name
    assert name.startswith("tests.decorator.test_keys.")


@pytest.mark.parametrize("bad", ["", "/", "a/../b", "..", "a//b", "a\\b", "a::b", "a b", "x?y"])
def test_bad_explicit_keys(bad: str) -> None:
    """Keys that are empty or could escape the store are refused."""
    with pytest.raises(ConfigurationError):
        check_key(bad)


def test_methods_share_a_key_across_instances(tmp_path: Path) -> None:
    """Self is not part of the digest: equal arguments on two instances share a key."""
    keys: list[str] = []

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        @resumable(store=str(tmp_path))
        def fit(self, epochs: int) -> None:
            keys.append(ctx().key)

    Model("a").fit(3)
    Model("b").fit(3)
    Model("a").fit(4)
    assert keys[0] == keys[1] != keys[2]


def test_callable_key_receives_self(tmp_path: Path) -> None:
    """A key callable gets the instance first, so instances can be told apart."""
    keys: list[str] = []

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        @resumable(store=str(tmp_path), key=lambda self, epochs: f"{self.name}-{epochs}")
        def fit(self, epochs: int) -> None:
            keys.append(ctx().key)

    Model("a").fit(3)
    Model("b").fit(3)
    assert keys == ["a-3", "b-3"]


# -- tasks of the script being run (__main__) -------------------------------------------------

JOBS = """
import asyncio, json, sys

from resumable import ctx, resumable

STORE = sys.argv[1] if len(sys.argv) > 1 else "memory://keys"


@resumable(state=0, store=STORE)
def job(n, state=0):
    yield n
    return ctx().key


@resumable(store=STORE)
async def ajob(n):
    return ctx().key


def keys():
    return [job(3), asyncio.run(ajob(3))]


if __name__ == "__main__":
    print(json.dumps(keys()))
"""


def _keys_of(args: list[str], cwd: Path, path: Path | None = None) -> list[str]:
    """The keys the tasks of the jobs script give when run with ``python *args``."""
    env = {k: v for k, v in os.environ.items() if k != "RESUMABLE_STORE"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), *([str(path)] if path else [])]
    )
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    keys: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return keys


def test_script_and_imported_module_share_keys(tmp_path: Path) -> None:
    """`python jobs.py` and a process that imports `jobs` give the same keys, sync and async."""
    (tmp_path / "jobs.py").write_text(JOBS)
    as_script = _keys_of(["jobs.py"], tmp_path)
    as_module = _keys_of(["-c", "import jobs, json; print(json.dumps(jobs.keys()))"], tmp_path)
    assert as_script == as_module
    assert as_script[0].startswith("jobs.job-")
    assert as_script[1].startswith("jobs.ajob-")
    # From another folder, by an absolute path, and with -m: still the same keys.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _keys_of([str(tmp_path / "jobs.py")], elsewhere) == as_script
    assert _keys_of(["-m", "jobs"], elsewhere, path=tmp_path) == as_script


def test_same_script_in_another_folder_gets_the_same_keys(tmp_path: Path) -> None:
    """No folder of this machine is part of a key: a copy elsewhere resumes the same tasks."""
    for where in ("a", "b/c"):
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "jobs.py").write_text(JOBS)
    assert _keys_of(["jobs.py"], tmp_path / "a") == _keys_of(["jobs.py"], tmp_path / "b/c")


def test_different_scripts_get_different_keys(tmp_path: Path) -> None:
    """Two scripts that define the same task names do not share snapshots."""
    (tmp_path / "train.py").write_text(JOBS)
    (tmp_path / "evaluate.py").write_text(JOBS)
    train, evaluate = _keys_of(["train.py"], tmp_path), _keys_of(["evaluate.py"], tmp_path)
    assert train[0].startswith("train.job-")
    assert evaluate[0].startswith("evaluate.job-")
    assert set(train).isdisjoint(evaluate)


def test_script_inside_a_package_is_named_as_imported(tmp_path: Path) -> None:
    """`python pkg/jobs.py` and `python -m pkg.jobs` both give `pkg.jobs` keys."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "jobs.py").write_text(JOBS)
    by_path = _keys_of(["pkg/jobs.py"], tmp_path)
    assert by_path == _keys_of(["-m", "pkg.jobs"], tmp_path)
    assert by_path[0].startswith("pkg.jobs.job-")


def test_explicit_key_pins_a_script_task(tmp_path: Path) -> None:
    """key= gives a script's task the key chosen, whatever the script is called."""
    pinned = JOBS.replace(
        "@resumable(state=0, store=STORE)", '@resumable(state=0, store=STORE, key="train/v1")'
    )
    (tmp_path / "jobs.py").write_text(pinned)
    assert _keys_of(["jobs.py"], tmp_path)[0] == "train/v1"


def test_interactive_main_keeps_its_name(tmp_path: Path) -> None:
    """Without a file (python -c, a notebook) the module is still called __main__."""
    code = JOBS.replace('if __name__ == "__main__":', "if True:")
    assert _keys_of(["-c", code], tmp_path)[0].startswith("__main__.job-")
