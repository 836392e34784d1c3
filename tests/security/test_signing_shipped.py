"""A task shipped by value never carries its signing key: the worker resolves its own."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from resumable import ConfigurationError, Storage, resumable

SECRET = "a-secret-that-must-not-travel-0123456789"


def make_signed_task(store: str, signing_key: str | None) -> Any:
    """A local (by-value) generator task on ``store`` that signs with ``signing_key``."""

    @resumable(
        state=0,
        store=store,
        key="signed",
        on_success="keep",
        storage=Storage(signing_key=signing_key),
    )
    def task(n: int, state: int = 0) -> Any:
        for i in range(state, n):
            yield i + 1
        return state

    return task


def test_pickled_task_does_not_hold_the_key(tmp_path: Path) -> None:
    """The bytes of a task pickled by value do not contain its signing key."""
    task = make_signed_task(str(tmp_path / "store"), SECRET)
    data = cloudpickle.dumps(task)
    assert SECRET.encode() not in data
    assert SECRET.encode("utf-16-le") not in data


def test_worker_resolves_the_key_from_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipped signed task signs and verifies with the worker's $RESUMABLE_SIGNING_KEY."""
    task = make_signed_task(str(tmp_path / "store"), SECRET)
    assert task(3) == 0
    data = cloudpickle.dumps(task)
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", SECRET)
    shipped = pickle.loads(data)
    assert shipped(5) == 3  # resumed from the original's signed snapshot


def test_worker_without_the_key_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped signed task on a worker without the key fails clearly, never runs unsigned."""
    task = make_signed_task(str(tmp_path / "store"), SECRET)
    data = cloudpickle.dumps(task)
    monkeypatch.delenv("RESUMABLE_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="RESUMABLE_SIGNING_KEY"):
        pickle.loads(data)


def test_unsigned_task_ships_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task without a signing key ships and runs as before, whatever the worker's env."""
    monkeypatch.delenv("RESUMABLE_SIGNING_KEY", raising=False)
    task = make_signed_task(str(tmp_path / "store"), None)
    assert task(2) == 0
    assert pickle.loads(cloudpickle.dumps(task))(4) == 2
