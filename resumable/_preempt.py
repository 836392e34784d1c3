"""Stop requests: save at the next yield, flush, then stop with ``Preempted``.

Spot instances, batch schedulers and engines ask a process to stop shortly before they kill
it. Two ways in, one effect:

- :func:`request_stop`, callable from any thread (an engine's shutdown hook, a poller of a
  cloud's metadata endpoint, a signal handler of one's own), asks every call running in this
  process;
- with ``preemptible=True``, a SIGTERM handler that asks its own call (installed only when the
  call runs in the main thread, the only thread Python delivers signals to; elsewhere
  ``preemptible=True`` does nothing and :func:`request_stop` is the way in).

A request only sets flags (nothing else is safe in a signal handler); the task's next yield
is then persisted whatever the throttle, pending background saves are flushed, and the call
raises ``Preempted``, which is never retried in-process: the next process resumes.

The signal is handed on only after that: when the call ends, a Python handler that was
installed before it is called (so an engine's handler that exits at once no longer exits
before the snapshot is saved); with the default handler, a call that did not end with
``Preempted`` (no yield or save came after the signal) delivers the signal again, so the
process stops as it would have without the watch. An ignored SIGTERM stays ignored.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from ._errors import Preempted

__all__ = ["PreemptionWatch", "request_stop"]

log = logging.getLogger("resumable")

#: The stop callbacks of the calls running in this process. Only atomic set operations and
#: a copy touch it, never a lock: a signal handler may read it while its thread holds one.
_RUNNING: set[Callable[[], None]] = set()


def request_stop() -> int:
    """Ask every running ``@resumable`` call in this process to save and stop.

    Safe from any thread, and from a signal handler. Each call asked persists its next
    yield (or ``ctx().save()``) whatever the throttle, flushes its background saves, and
    raises ``Preempted``, which is not retried in-process: running the task again resumes
    from that snapshot. A call that ends before it yields or saves again ends as it would
    have. Calls that start later are not affected.

    Returns:
        How many running calls were asked.

    Example:
        >>> from resumable import request_stop, resumable
        >>> @resumable(state=0, store="memory://doc-request-stop")
        ... def task(state=0):
        ...     asked = request_stop()  # an engine hook or another thread would call it
        ...     yield state + 1         # saved, then Preempted
        >>> request_stop()  # nothing running
        0
        >>> task()
        Traceback (most recent call last):
        ...
        resumable.Preempted: ...

    """
    stops = tuple(_RUNNING)
    for stop in stops:
        stop()
    if stops:
        log.info("stop requested: %d running call(s) will save at their next yield", len(stops))
    return len(stops)


class PreemptionWatch:
    """Makes a call answer stop requests for the duration of a ``with`` block.

    The call is registered for :func:`request_stop`; with ``signals=True`` and in the main
    thread, a SIGTERM handler asks it too. The previous handler is restored on exit, and
    only then handed the signal (see the module's docstring).
    """

    def __init__(self, on_stop: Callable[[], None], *, signals: bool) -> None:
        self._on_stop = on_stop
        self._signals = signals
        self._installed = False
        self._previous: Any = None
        self._received = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received signal %d: saving at the next snapshot, then stopping", signum)
        self._received = True
        self._on_stop()

    def __enter__(self) -> None:
        _RUNNING.add(self._on_stop)
        if self._signals and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _RUNNING.discard(self._on_stop)
        if not self._installed:
            return
        # None: a handler not installed from Python, which cannot be put back; the default.
        previous = signal.SIG_DFL if self._previous is None else self._previous
        signal.signal(signal.SIGTERM, previous)
        if not self._received or previous == signal.SIG_IGN:
            return
        if callable(previous):
            # Saved (or ended) first, handed on now: the handler may exit the process.
            log.info("the call has stopped: handing the signal to the previous handler")
            signal.raise_signal(signal.SIGTERM)
        elif not isinstance(exc, Preempted):
            # The call ended before a yield or save could stop it: the request still stands.
            log.warning("the call ended after a stop request: stopping the process now")
            signal.raise_signal(signal.SIGTERM)
