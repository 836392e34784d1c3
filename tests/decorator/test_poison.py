"""A streak of failures never loses or locks progress; failure marks are visible and clearable."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import (
    RetryPolicy,
    resumable,
)

from ..conftest import store_files


def _flaky_steps(failures: int) -> tuple[list[int], object, object]:
    """A sync and an async task: one snapshot, then the next step fails ``failures`` times."""
    starts: list[int] = []
    left = [failures]

    def step(state: int) -> None:
        starts.append(state)
        if state == 1 and left[0] > 0:
            left[0] -= 1
            raise ConnectionError("the network is down")

    return starts, step, left


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_one_snapshot_and_transient_failures_never_wedge(store_url: str, kind: str) -> None:
    """One snapshot, ``attempts=6``, the next step failing 4 times: the call still finishes.

    Before, the 3rd failure made the only snapshot "poison" and the call raised
    ``CorruptCheckpointError`` with retries left; every later call failed the same way.
    """
    starts, step, _ = _flaky_steps(4)
    options = {"state": 0, "store": store_url, "key": "w", "retry": RetryPolicy(attempts=6, wait=0)}

    @resumable(**options, poison_after=3)  # type: ignore[arg-type]
    def sync_task(state: int = 0) -> Iterator[int]:
        step(state)  # type: ignore[operator]
        if state == 0:
            yield 1
        step(1)  # type: ignore[operator]
        yield 2

    @resumable(**options, poison_after=3)  # type: ignore[arg-type]
    async def async_task(state: int = 0) -> AsyncIterator[int]:
        step(state)  # type: ignore[operator]
        if state == 0:
            yield 1
        step(1)  # type: ignore[operator]
        yield 2

    result = sync_task() if kind == "sync" else asyncio.run(async_task())
    assert result in (None, 2)
    assert starts[0] == 0
    assert starts.count(1) >= 5  # every failure resumed from the only snapshot


def test_failing_task_raises_its_own_exception_and_later_calls_resume(store_url: str) -> None:
    """Retries exhausted: the task's own exception, never a library error; the next call resumes."""
    down = [True]
    starts: list[int] = []

    @resumable(
        state=0, store=store_url, key="x", poison_after=3, retry=RetryPolicy(attempts=6, wait=0)
    )
    def task(state: int = 0) -> Iterator[int]:
        starts.append(state)
        if state == 0:
            yield 1
        if down[0]:
            raise ConnectionError("the network is down")
        yield 2

    with pytest.raises(ConnectionError):
        task()
    assert starts == [0, 1, 1, 1, 1, 1]
    down[0] = False
    task()  # the fault is gone: the call resumes from snapshot 1 and finishes
    assert starts[-1] == 1


def test_poison_is_off_by_default(store_url: str) -> None:
    """Without ``poison_after``, failures leave no marks: an outage rolls nothing back."""

    @resumable(state=0, store=store_url, key="d", retry=RetryPolicy(attempts=4, wait=0))
    def task(state: int = 0) -> Iterator[int]:
        yield 1
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        task()
    assert not [n for n in store_files(f"{store_url}/d") if ".failed." in n]


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_show_lists_failure_marks_and_clear_marks_removes_them(tmp_path: Path) -> None:
    """``resumable show`` counts the failures per snapshot; ``clear-marks`` forgets them."""
    store = tmp_path / "store"

    @resumable(
        state=0, store=str(store), key="m", poison_after=5, retry=RetryPolicy(attempts=2, wait=0)
    )
    def task(state: int = 0) -> Iterator[int]:
        if state == 0:
            yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        task()
    shown = _cli("show", store, "m", "--json")
    assert shown.returncode == 0, shown.stderr
    (snapshot,) = json.loads(shown.stdout)["snapshots"]
    assert snapshot["failures"] == 1  # the retry failed from snapshot 0
    table = _cli("show", store, "m")
    assert "FAILURES" in table.stdout
    assert "clear-marks" in table.stdout

    cleared = _cli("clear-marks", store, "m")
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared 1 failure mark" in cleared.stdout
    assert not [p for p in (store / "m").iterdir() if ".failed." in p.name]
    (snapshot,) = json.loads(_cli("show", store, "m", "--json").stdout)["snapshots"]
    assert snapshot["failures"] == 0


# -- poison snapshots -----------------------------------------------------------------------------


def test_poison_snapshot_falls_back_to_previous(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot every attempt crashes on is skipped after poison_after tries, with a log."""
    starts: list[int] = []

    @resumable(
        state=0, store=store_url, key="p", poison_after=2, retry=RetryPolicy(attempts=6, wait=0)
    )
    def task(state: int = 0) -> Any:
        starts.append(state)
        if state == 0:
            yield 1
            yield 2  # the poison: restoring it always crashes
            raise RuntimeError("crash after saving")
        if state == 2:
            raise RuntimeError("this state always crashes")
        return state

    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert task() == 1
    assert starts == [0, 2, 2, 1]
    assert any("poison" in r.getMessage() for r in caplog.records)


def test_poison_counting_survives_processes(store_url: str) -> None:
    """Failure records live in the store, so failures in separate calls count too."""
    calls: list[int] = []

    @resumable(state=0, store=store_url, key="q", poison_after=2, on_success="keep")
    def task(state: int = 0) -> Any:
        calls.append(state)
        if state == 0:
            yield 1
            yield 2
        raise RuntimeError("boom")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            task()
    assert calls == [0, 2, 2]
    with pytest.raises(RuntimeError):
        task()
    assert calls[-1] == 1


def test_successful_runs_do_not_count_as_poison(store_url: str) -> None:
    """Restoring the same kept snapshot in successful calls never marks it as poison."""

    @resumable(state=0, store=store_url, key="ok", poison_after=1, on_success="keep")
    def task(state: int = 0) -> Any:
        if state == 0:
            yield 5
        return state

    assert task() == 0
    for _ in range(3):
        assert task() == 5
    assert not [n for n in store_files(f"{store_url}/ok") if ".failed." in n]


def test_poison_fallback_is_protected_too(store_url: str) -> None:
    """Failures from the snapshot used after a poison one count as well.

    When every snapshot failed, the newest is used again; the task's own exception ends it.
    """
    starts: list[int] = []

    @resumable(
        state=0, store=store_url, key="loop", poison_after=2, retry=RetryPolicy(attempts=21, wait=0)
    )
    def task(state: int = 0) -> Any:
        starts.append(state)
        if state == 0:
            yield 1
            yield 2
        raise RuntimeError("always fails")

    with pytest.raises(RuntimeError, match="always fails"):
        task()
    assert starts == [0, 2, 2, 1, 1] + [2] * 16
