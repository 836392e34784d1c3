"""Turning yields into snapshots: throttling, capture, and at most one background save in flight.

The decision (is this yield due?) and the capture (pickle the state, or pack the folder) run
on the task's thread at the moment of the yield, so later mutation cannot leak into a
snapshot. Writing the captured snapshot runs inline, on a worker thread for async tasks, or on
the background worker.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ._checkpoint import Checkpoint
from ._codec import dumps_state
from ._errors import ConfigurationError, ResumableError, StorageError
from ._stream import CHUNK_SIZE

__all__ = ["MISSING", "Persister"]

log = logging.getLogger("resumable")

MISSING: Any = object()
#: How long interpreter exit waits for a background save before giving up (and saying so).
EXIT_TIMEOUT = 120.0

Job = Callable[[], None]


def _read_spool(spool: BinaryIO) -> Iterator[bytes]:
    with spool:
        spool.seek(0)
        while chunk := spool.read(CHUNK_SIZE):
            yield chunk


class _Background:
    """One worker thread; a newer job replaces a waiting one; failures are kept for the task."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._waiting: Job | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        _LIVE.add(self)

    def submit(self, job: Job) -> None:
        with self._cond:
            self._raise_error()
            if self._waiting is not None:
                log.debug("%s: a newer snapshot replaces one still waiting to be saved", self._name)
            self._waiting = job
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"resumable-save:{self._name}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting is not None or self._closed)
                if self._waiting is None:
                    return
                job, self._waiting = self._waiting, None
                self._busy = True
            try:
                job()
            except BaseException as exc:
                log.exception("%s: background save failed", self._name)
                with self._cond:
                    self._error = self._error or exc
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _raise_error(self) -> None:
        exc, self._error = self._error, None
        if exc is None:
            return
        if isinstance(exc, ResumableError):
            raise exc
        raise StorageError(f"a background save of {self._name} failed: {exc!r}") from exc

    def flush(self, timeout: float | None = None) -> None:
        """Wait until nothing is waiting or in flight; raise a failure the worker met."""
        with self._cond:
            idle = self._cond.wait_for(lambda: self._waiting is None and not self._busy, timeout)
            if not idle:
                raise StorageError(
                    f"a background save of {self._name} did not finish within {timeout:.0f} s"
                )
            self._raise_error()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        _LIVE.discard(self)


_LIVE: weakref.WeakSet[_Background] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for worker in list(_LIVE):
        try:
            worker.flush(EXIT_TIMEOUT)
        except BaseException:
            log.exception("at exit, a background save was lost")


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
        self._bg = _Background(checkpoint.uri) if background else None
        #: The newest yielded value not persisted yet (MISSING when none).
        self.pending: Any = MISSING
        self.attempt = 0

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

    async def offer(self, value: Any) -> None:
        """Async twin of :meth:`offer_sync`."""
        if self._due(value):
            await self._run(await self._acapture(value))

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

    async def force(self, state: Any = MISSING) -> None:
        """Async twin of :meth:`force_sync`."""
        self._check_forced(state)
        await self._run(await self._acapture(state))

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

    def _capture(self, value: Any) -> Job:
        cp, attempt = self._cp, self.attempt
        if self._folder is None:
            data = dumps_state(value)
            return lambda: self._committed(cp._commit("state", (data,), attempt).seq)
        kind, chunks = cp._encode(self._folder)
        if self._bg is not None:
            # The folder may change as soon as the task resumes: pack it now, upload later.
            spool: BinaryIO = tempfile.TemporaryFile(dir=cp.path)  # noqa: SIM115 - job closes it
            for chunk in chunks:
                spool.write(chunk)
            chunks = _read_spool(spool)
        return lambda: self._committed(cp._commit(kind, chunks, attempt).seq)

    async def _acapture(self, value: Any) -> Job:
        if self._folder is None:
            return self._capture(value)  # pickling must happen now, on the task's thread
        return await asyncio.to_thread(self._capture, value)

    def _committed(self, seq: int) -> None:
        log.debug("%s: committed snapshot %d", self._cp.uri, seq)

    def _run_sync(self, job: Job) -> None:
        if self._bg is not None:
            self._bg.submit(job)
        else:
            job()

    async def _run(self, job: Job) -> None:
        if self._bg is not None:
            self._bg.submit(job)
        else:
            await asyncio.to_thread(job)

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
