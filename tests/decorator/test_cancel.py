"""Cancelling an async task never leaves its save running behind it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from resumable import Captured, Checkpoint, CheckpointInfo, ctx, resumable

DEADLINE = 30.0


class _HeldCommits:
    """Makes ``Checkpoint.commit`` wait for a go-ahead, and records when commits finish."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        commit = Checkpoint.commit

        def held(cp: Checkpoint, captured: Captured, *, attempt: int = 0) -> CheckpointInfo:
            self.started.set()
            assert self.release.wait(DEADLINE)
            try:
                return commit(cp, captured, attempt=attempt)
            finally:
                self.finished.set()

        monkeypatch.setattr(Checkpoint, "commit", held)


async def _cancel_during_save(task: asyncio.Task[Any], held: _HeldCommits) -> bool:
    """Cancel ``task`` while its save is held; whether the save had finished when it ended."""
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, held.started.wait, DEADLINE)
    finished_when_done: list[bool] = []
    task.add_done_callback(lambda _: finished_when_done.append(held.finished.is_set()))
    task.cancel()
    # Before the fix the cancellation returned at once, the save still running behind it.
    await asyncio.wait({task}, timeout=0.5)
    held.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    return finished_when_done[0]


@pytest.mark.parametrize("how", ["yield", "ctx-save"])
def test_cancelled_save_completes_before_the_cancellation_returns(
    store_url: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A save in flight when its task is cancelled commits before the cancellation returns.

    Calling the task again right after resumes from it (no ConcurrentWriterError).
    """
    starts: list[int] = []

    @resumable(state=0, store=store_url, key="c")
    async def job(state: int = 0) -> AsyncIterator[int]:
        starts.append(state)
        if state == 0:
            if how == "yield":
                yield 1
            else:
                await ctx().save(1)
            await asyncio.Event().wait()  # never reached before the fix's cancel
        yield 2

    async def main() -> None:
        held = _HeldCommits(monkeypatch)
        finished = await _cancel_during_save(asyncio.create_task(job()), held)  # type: ignore[arg-type]
        assert finished, "the cancellation returned while the save was still running"
        assert await job() == 2  # the cancelled save is committed: the call resumes from it

    asyncio.run(main())
    assert starts == [0, 1]


def test_cancelled_checkpoint_save_completes_first(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``await cp.save()`` cancelled mid-commit: the commit ends before the cancel returns."""

    async def main() -> None:
        held = _HeldCommits(monkeypatch)
        with Checkpoint(store_url) as cp:
            finished = await _cancel_during_save(asyncio.create_task(cp.save(b"one")), held)
            assert finished
            await cp.save(b"two")  # the next save never meets the cancelled one
            root = await cp.load()
            assert root is not None
            assert (root / "payload").read_bytes() == b"two"

    asyncio.run(main())
