"""Turning yields into snapshots: throttling, capture, and writing (inline or in the background).

The decision (is this yield due?) runs on the task's thread at the moment of the yield, and so
does the capture for a background save (the state pickled, its arrays and tensors copied), so
later mutation cannot leak into a snapshot. Everything after that is one blocking *step*
(pack the folder, or pickle the state straight into the payload while the task waits at its
yield; write; maybe stop for preemption), written once: the sync methods run it in place,
their async twins on an IO thread. Background saves go through the checkpoint's own
background worker (``Checkpoint.commit_in_background``). With ``rng``, the global random
generators' states are captured at the yield and stored beside the state.

A background capture is a copy of the state (its buffers) or of the folder, held until it is
written or replaced. A due yield that comes while this persister's previous capture is still
held waits for it to go before it copies again: at most one extra copy exists at a time, and
it is the one being written. Without the wait, a yield during a slow write made a second copy
(waiting) and the next one a third, before it replaced the second.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._checkpoint import Captured, Checkpoint
from ._errors import ConfigurationError, Preempted
from ._rng import capture_rng
from ._statecodec import BufferPool, capture_state, write_state
from ._stream import Chunk, discard
from ._threads import run_async

__all__ = ["MISSING", "Persister"]

log = logging.getLogger("resumable")

MISSING: Any = object()

#: The blocking part of persisting one snapshot, or None when there is nothing to do.
Step = Callable[[], None] | None


class _Held:
    """A background capture's source that says when it is released: written, replaced or dropped.

    Example:
        >>> held = _Held(lambda: [b"chunk"])
        >>> held(), held.released.is_set()
        ([b'chunk'], False)
        >>> held.close()
        >>> held.released.is_set()
        True

    """

    def __init__(self, source: Callable[[], Iterable[Chunk] | Any]) -> None:
        self._source = source
        self.released = threading.Event()
        self.pid = os.getpid()

    def __call__(self) -> Iterable[Chunk] | Any:
        return self._source()

    def close(self) -> None:
        try:
            discard(self._source)
        finally:
            self.released.set()


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
        rng: bool = False,
    ) -> None:
        self._cp = checkpoint
        self._folder = folder
        self._every = every
        self._seconds = every_seconds
        self._background = background
        self._rng = rng
        #: The buffers of written background captures, which the next capture reuses.
        self._pool = BufferPool()
        #: The generators' states at the yield of ``pending`` (with ``rng``).
        self._pending_extras: dict[str, Any] | None = None
        self._count = 0
        self._last = time.monotonic()
        #: The newest yielded value not persisted yet (MISSING when none).
        self.pending: Any = MISSING
        self.attempt = 0
        #: Set (from a signal handler or another thread) when the process was asked to stop.
        self.preempted = False
        #: The newest background capture, until it is written or replaced.
        self._held: _Held | None = None

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

    # -- at most one background copy ----------------------------------------------------

    def _previous(self) -> threading.Event | None:
        """The release of the previous background capture, if the next one must wait for it."""
        held = self._held
        if not self._background or held is None or held.released.is_set():
            return None
        if held.pid != os.getpid():
            return None  # a forked child: the parent's worker writes (or drops) it, not ours
        return held.released

    def _make_room_sync(self) -> None:
        """Wait until the previous background capture is written or replaced."""
        released = self._previous()
        if released is not None:
            self._say_wait()
            released.wait()

    async def _make_room(self) -> None:
        """Async twin of :meth:`_make_room_sync`: the wait runs off the event loop."""
        released = self._previous()
        if released is not None:
            self._say_wait()
            await run_async(released.wait)

    def _say_wait(self) -> None:
        log.debug(
            "%s: a yield waits for the previous background save to be written before it "
            "copies the state again (at most one copy is held)",
            self._cp.uri,
        )

    def _hold(self, captured: Captured) -> Captured:
        """``captured``, its release now watched (see :meth:`_make_room_sync`)."""
        held = _Held(captured.source)
        self._held = held
        return Captured(captured.kind, held, captured.facts)

    # -- the core: decide and capture now, return the blocking rest -----------------------

    def _due(self, value: Any) -> bool:
        self._count += 1
        if self._count < self._every or (
            self._seconds is not None and time.monotonic() - self._last < self._seconds
        ):
            self.pending = value
            if self._rng:
                self._pending_extras = self._extras()
            return False
        self._count = 0
        self._last = time.monotonic()
        self.pending = MISSING
        return True

    def _extras(self) -> dict[str, Any] | None:
        """What is stored beside the state: the random generators' states, with ``rng``."""
        return {"rng": capture_rng()} if self._rng else None

    def _capture(self, value: Any, extras: dict[str, Any] | None) -> Captured:
        """A state snapshot of ``value``, with ``extras`` beside it.

        In the background, pickled now, buffers (arrays, tensors) copied, so that the task
        may mutate ``value`` at once. Inline, pickled and written in one stream when the step
        runs, buffers uncopied: the task is paused at its yield until the step returns.
        """
        if self._background:
            self._make_room_sync()  # the async twins waited already, off the event loop
            return self._hold(
                Captured("state", capture_state(value, extras=extras, pool=self._pool))
            )

        def produce(write: Callable[[Any], None]) -> None:
            write_state(value, write, extras=extras)

        return Captured("state", lambda: produce)

    def _step(
        self,
        value: Any,
        *,
        stop_if_preempted: bool = True,
        extras: dict[str, Any] | None = MISSING,
    ) -> Callable[[], None]:
        """Capture ``value`` now; the returned step writes it (and stops when preempted)."""
        if self._folder is None:
            pickled = self._capture(value, self._extras() if extras is MISSING else extras)
        folder, cp, attempt, background = self._folder, self._cp, self.attempt, self._background

        def step() -> None:
            # A folder is packed here: the task is paused until the step returns.
            if folder is None:
                captured = pickled
            elif background:
                self._make_room_sync()
                captured = self._hold(cp.capture(folder, frozen=True))
            else:
                captured = cp.capture(folder)
            if background:
                cp.commit_in_background(captured, attempt=attempt)
            else:
                seq = cp.commit(captured, attempt=attempt).seq
                log.debug("%s: committed snapshot %d", cp.uri, seq)
            if stop_if_preempted and self.preempted:
                self._stop()

        return step

    def _stop(self) -> None:
        self._cp.flush_sync()
        raise Preempted(
            f"{self._cp.uri}: the process was asked to stop; the last snapshot is saved, and "
            "running the task again resumes from it"
        )

    def _offer_step(self, value: Any) -> Step:
        return self._step(value) if self._due(value) else None

    def _force_step(self, state: Any) -> Callable[[], None]:
        if self._folder is None and state is MISSING:
            raise ConfigurationError("ctx().save() needs the state to save as its argument")
        if self._folder is not None and state is not MISSING:
            raise ConfigurationError(
                "in a Dir task ctx().save() takes no argument: it saves the folder"
            )
        self._count = 0
        self.pending = MISSING
        return self._step(state)

    def _finish_step(self) -> Callable[[], None]:
        step: Step = None
        if self.pending is not MISSING:
            value, self.pending = self.pending, MISSING
            step = self._step(value, stop_if_preempted=False, extras=self._pending_extras)
        flush = self._cp.flush_sync

        def finish() -> None:
            if step is not None:
                step()
            flush()

        return finish

    # -- thin twins ---------------------------------------------------------------------

    def offer_sync(self, value: Any) -> None:
        """A yielded value: persist it if it is due (the hot path: one call per yield)."""
        step = self._offer_step(value)
        if step is not None:
            step()

    async def offer(self, value: Any) -> None:
        """Async twin of :meth:`offer_sync`."""
        if not self._due(value):
            return
        await self._make_room()
        await run_async(self._step(value))

    def force_sync(self, state: Any = MISSING) -> None:
        """Persist now, whatever the throttle."""
        self._force_step(state)()

    async def force(self, state: Any = MISSING) -> None:
        """Async twin of :meth:`force_sync`."""
        await self._make_room()
        await run_async(self._force_step(state))

    def finish_sync(self) -> None:
        """Persist the newest yield the throttle held back, then flush."""
        self._finish_step()()

    async def finish(self) -> None:
        """Async twin of :meth:`finish_sync`."""
        await self._make_room()
        await run_async(self._finish_step())

    def flush_sync(self) -> None:
        """Wait for background saves; raise a failure they met."""
        self._cp.flush_sync()

    async def flush(self) -> None:
        """Async twin of :meth:`flush_sync`."""
        await run_async(self._cp.flush_sync)
