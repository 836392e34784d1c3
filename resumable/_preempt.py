"""Opt-in SIGTERM handling: save at the next yield, then stop with ``Preempted``.

Spot instances and batch schedulers send SIGTERM shortly before they kill a process. The
handler only sets a flag (nothing else is safe in a signal handler); the task's next yield
is then persisted whatever the throttle, pending background saves are flushed, and the call
raises ``Preempted``, which is never retried in-process: the next process resumes.

A stop request is never swallowed: when the call ends without a ``Preempted`` (no yield or
save came after the signal), the signal is delivered again once the previous handler is back,
so the process stops as it would have without the watch.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from ._errors import ConfigurationError, Preempted

__all__ = ["PreemptionWatch"]

log = logging.getLogger("resumable")


class PreemptionWatch:
    """Installs a SIGTERM handler for the duration of a ``with`` block (main thread only).

    The previous handler is restored afterwards, and a Python-level previous handler is
    also called (chained) when the signal arrives. A signal that did not end the block with
    ``Preempted`` is raised again on exit for the default handler (which ends the process).
    """

    def __init__(self, on_signal: Callable[[], None]) -> None:
        self._on_signal = on_signal
        self._previous: Any = None
        self._received = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received signal %d: saving at the next snapshot, then stopping", signum)
        self._received = True
        self._on_signal()
        if callable(self._previous):
            self._previous(signum, frame)

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError(
                "preemptible=True needs the main thread: Python delivers signals only there. "
                "Run the task in the main thread, or drop preemptible=True."
            )
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        signal.signal(signal.SIGTERM, self._previous)
        if not self._received or isinstance(exc, Preempted):
            return
        # The call ended before a yield or save could stop it: the request still stands. A
        # Python handler was already called when the signal came; an ignored one stays so.
        if self._previous in (signal.SIG_DFL, None):
            log.warning("the call ended after a stop request: stopping the process now")
            signal.raise_signal(signal.SIGTERM)
