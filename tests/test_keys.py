"""Default keys: stable across processes, different for different arguments, clear errors."""

from __future__ import annotations

import dataclasses
import enum
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
        "from tests.test_keys import job\n"
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
    assert name.startswith("tests.test_keys.")


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
