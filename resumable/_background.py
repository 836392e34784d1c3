"""At most one save in flight: a newer job replaces a waiting one, failures are kept.

Used by ``Checkpoint.save_background`` (and through it by ``@resumable(background=True)``).
Jobs are captured snapshots (already serialized), so replacing a waiting one loses nothing
that a newer snapshot does not supersede. A failure is kept and raised in the caller's thread
at the next submit or flush: never silent. The worker runs on an IO thread of ``_threads``
while there is work, and hands it back when idle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import _forks
from ._errors import ResumableError, StorageError
from ._threads import run_on_io

__all__ = ["Background", "Job"]

log = logging.getLogger("resumable")

Job = Callable[[], None]


class Background:
    """One saver at a time; a newer job replaces a waiting one; failures are kept for the task.

    Example:
        >>> done = []
        >>> bg = Background("doc")
        >>> bg.submit(lambda: done.append(1))
        >>> bg.flush()
        >>> done
        [1]

    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._waiting: Job | None = None
        self._discard: Job | None = None
        self._running = False  # a worker is draining the queue
        self._busy = False  # a job is executing
        self._error: BaseException | None = None
        self._closed = False
        _forks.track(self)

    def _after_fork(self) -> None:
        """In a child forked mid-save the worker does not exist: the parent saves its jobs."""
        self._cond = threading.Condition()  # the parent's lock may have been held
        # The child's copy of the waiting job is dropped, and what it captured with it. Its
        # discard is not called here: it may wait for a lock (the buffer pool's) that a
        # thread of the parent held at the fork, and a fork must never hang.
        self._waiting = self._discard = None
        self._running = self._busy = False

    def submit(self, job: Job, discard: Job | None = None) -> None:
        """Queue ``job``; it replaces a job still waiting, whose ``discard`` is then called.

        Raises a failure an earlier job met.
        """
        with self._cond:
            try:
                self._check_open()
                self._raise_error()
            except BaseException:
                if discard is not None:
                    discard()  # the job will never run: free what it captured
                raise
            replaced = self._discard if self._waiting is not None else None
            if self._waiting is not None:
                log.debug("%s: a newer snapshot replaces one still waiting to be saved", self._name)
            self._waiting, self._discard = job, discard
            start = not self._running
            self._running = True
        if start:
            run_on_io(self._drain)
        if replaced is not None:
            replaced()

    def _drain(self) -> None:
        while True:
            with self._cond:
                if self._waiting is None:
                    self._running = False
                    self._cond.notify_all()
                    return
                job, self._waiting, self._discard = self._waiting, None, None
                self._busy = True
            try:
                job()
            except BaseException as exc:
                log.exception("%s: background save failed", self._name)
                with self._cond:
                    self._error = self._error or exc
            finally:
                del job  # the job holds its Checkpoint: let it be collected while we wait
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise ResumableError(
                f"background saves of {self._name} are closed: use a new Checkpoint"
            )

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
        """Refuse new jobs; a job already queued still runs (flush first to wait for it)."""
        with self._cond:
            self._closed = True
