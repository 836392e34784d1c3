"""Turning yields into snapshots: throttling, capture, and at most one background save in flight.

The decision (is this yield due?) and the capture (pickle the state, or pack the folder) run
on the task's thread at the moment of the yield, so later mutation cannot leak into a
snapshot. Writing the captured snapshot runs inline, on a worker thread for async tasks, or on
the background worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ._background import Background, Job
from ._checkpoint import Checkpoint, Source
from ._codec import dumps_state
from ._errors import ConfigurationError, Preempted
from ._store import Kind
from ._stream import Spool, discard

__all__ = ["MISSING", "Persister"]

#: A snapshot serialized at the yield: its kind and its bytes.
Captured = tuple[Kind, Source]

log = logging.getLogger("resumable")

MISSING: Any = object()


class Persister:
    """Decides which yields become snapshots, captures them, and writes them."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        folder: Path | None,
        every: int,
        every_seconds: float | None,
        background: bool,
    ) -> None:
        self._cp = checkpoint
        self._folder = folder
        self._every = every
        self._seconds = every_seconds
        self._count = 0
        self._last = time.monotonic()
        self._bg = Background(checkpoint.uri) if background else None
        #: The newest yielded value not persisted yet (MISSING when none).
        self.pending: Any = MISSING
        self.attempt = 0
        #: Set (from a signal handler) when the process was asked to stop.
        self.preempted = False

    def begin(self, attempt: int) -> None:
        """Start an attempt: the throttle starts over, and nothing of a failed one is pending."""
        self.attempt = attempt
        self._count = 0
        self._last = time.monotonic()
        self.pending = MISSING

    def preempt(self) -> None:
        """Ask for a snapshot at the next yield and a stop after it (signal-handler safe)."""
        # Only plain attribute stores: the hot path then needs no extra check.
        self._every = 1
        self._seconds = None
        self.preempted = True

    def _stop_if_preempted(self) -> None:
        if self.preempted:
            self.flush_sync()
            raise Preempted(
                f"{self._cp.uri}: the process was asked to stop (SIGTERM); the last snapshot is "
                "saved, and running the task again resumes from it"
            )

    # -- the hot path: one call per yield ------------------------------------------------

    def _due(self, value: Any) -> bool:
        self._count += 1
        if self._count < self._every or (
            self._seconds is not None and time.monotonic() - self._last < self._seconds
        ):
            self.pending = value
            return False
        self._count = 0
        self._last = time.monotonic()
        self.pending = MISSING
        return True

    def offer_sync(self, value: Any) -> None:
        """A yielded value: persist it if it is due."""
        if self._due(value):
            self._run_sync(self._capture(value))
            self._stop_if_preempted()

    async def offer(self, value: Any) -> None:
        """Async twin of :meth:`offer_sync`."""
        if self._due(value):
            await self._run(await self._acapture(value))
            if self.preempted:
                await self.flush()
                self._stop_if_preempted()

    # -- explicit saves -------------------------------------------------------------------

    def _check_forced(self, state: Any) -> None:
        if self._folder is None and state is MISSING:
            raise ConfigurationError("ctx().save() needs the state to save as its argument")
        if self._folder is not None and state is not MISSING:
            raise ConfigurationError(
                "in a Dir task ctx().save() takes no argument: it saves the folder"
            )
        self._count = 0
        self.pending = MISSING

    def force_sync(self, state: Any = MISSING) -> None:
        """Persist now, whatever the throttle."""
        self._check_forced(state)
        self._run_sync(self._capture(state))
        self._stop_if_preempted()

    async def force(self, state: Any = MISSING) -> None:
        """Async twin of :meth:`force_sync`."""
        self._check_forced(state)
        await self._run(await self._acapture(state))
        if self.preempted:
            await self.flush()
            self._stop_if_preempted()

    def finish_sync(self) -> None:
        """Persist the newest yield the throttle held back, then flush."""
        if self.pending is not MISSING:
            value, self.pending = self.pending, MISSING
            self._run_sync(self._capture(value))
        self.flush_sync()

    async def finish(self) -> None:
        """Async twin of :meth:`finish_sync`."""
        if self.pending is not MISSING:
            value, self.pending = self.pending, MISSING
            await self._run(await self._acapture(value))
        await self.flush()

    # -- capture and write ----------------------------------------------------------------

    def _capture(self, value: Any) -> Captured:
        """Serialize the snapshot now, on the task's thread."""
        if self._folder is None:
            data = dumps_state(value)
            return "state", lambda: (data,)
        kind, source = self._cp._encode(self._folder)
        if self._bg is not None:
            return kind, Spool(source())  # the folder may change as soon as the task resumes
        return kind, source

    async def _acapture(self, value: Any) -> Captured:
        if self._folder is None:
            return self._capture(value)  # pickling must happen now, on the task's thread
        return await asyncio.to_thread(self._capture, value)

    def _job(self, captured: Captured) -> Job:
        cp, attempt = self._cp, self.attempt
        kind, source = captured

        def job() -> None:
            try:
                seq = cp._commit(kind, source, attempt).seq
            finally:
                discard(source)
            log.debug("%s: committed snapshot %d", cp.uri, seq)

        return job

    def _run_sync(self, captured: Captured) -> None:
        if self._bg is not None:
            self._bg.submit(self._job(captured), lambda: discard(captured[1]))
        else:
            self._job(captured)()

    async def _run(self, captured: Captured) -> None:
        if self._bg is not None:
            self._bg.submit(self._job(captured), lambda: discard(captured[1]))
        else:
            await asyncio.to_thread(self._job(captured))

    def flush_sync(self) -> None:
        """Wait for background saves; raise a failure they met."""
        if self._bg is not None:
            self._bg.flush()

    async def flush(self) -> None:
        """Async twin of :meth:`flush_sync`."""
        if self._bg is not None:
            await asyncio.to_thread(self._bg.flush)

    def close(self) -> None:
        """Stop the background worker (after a flush)."""
        if self._bg is not None:
            self._bg.close()
