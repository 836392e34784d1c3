"""Tasks for the engine tests (tests/integrations/test_engines.py), importable by engine workers.

Workers import this module by name (``tests.engine_tasks``), so the decorated tasks here are
pickled by reference, as a user's own module of tasks would be. The store is not fixed here:
it comes from ``RESUMABLE_STORE`` in the worker's environment, the recipe of
docs/howto-distributed.md.

A task reports to the test in two ways:

- a side file of executed steps (one line per step, appended before the step's ``yield``),
  which survives the SIGKILL of the worker and tells how many steps ran twice;
- progress events sent over a TCP connection to a listener in the test process
  (``Listener``), so the test waits on events, not on sleeps: ``start <state> <pid>`` when an
  attempt begins, ``saved <n>`` after the ``yield`` of step ``n``, ``done``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from collections.abc import Generator

from resumable import resumable

#: Snapshot every N-th yield: a kill may repeat up to this many steps.
EVERY = 3

#: Set by ``timed_count`` when it is entered, to time the first resumed yield.
_CALL_STARTED: list[float] = []


def send(address: str, line: str) -> None:
    """Send one progress line to the test's listener at ``host:port``."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(line.encode() + b"\n")


@resumable(state=0, every=EVERY)
def count(
    n: int, side: str, notify: str, hang_at: int, state: int = 0
) -> Generator[int, None, int]:
    """Count to ``n``; a call that starts from zero blocks after step ``hang_at`` until killed.

    The result is the sum of the steps 1..n, so a repeated or a lost step shows in it too.
    """
    send(notify, f"start {state} {os.getpid()}")
    total = state * (state + 1) // 2
    for i in range(state, n):
        step = i + 1
        with open(side, "a") as steps:
            steps.write(f"{step}\n")
        total += step
        yield step
        send(notify, f"saved {step}")
        if _CALL_STARTED:
            send(notify, f"first-yield {time.monotonic() - _CALL_STARTED.pop():.3f}")
        if state == 0 and step == hang_at:
            threading.Event().wait(timeout=300)  # killed here; never woken otherwise
            raise RuntimeError("the test did not kill this worker")
    send(notify, "done")
    return total


@resumable(state=0, every=1000, preemptible=True)
def steady(n: int, side: str, notify: str, state: int = 0) -> Generator[int, None, int]:
    """Count to ``n``, slowly in a call from zero; snapshots only when asked to stop.

    ``every=1000`` holds back every yield but the one after a stop request (``request_stop()``,
    or SIGTERM in the main thread with ``preemptible=True``): a rerun starts exactly there.
    """
    send(notify, f"start {state} {os.getpid()}")
    total = state * (state + 1) // 2
    for i in range(state, n):
        step = i + 1
        with open(side, "a") as steps:
            steps.write(f"{step}\n")
        total += step
        yield step
        if state == 0:
            send(notify, f"step {step}")
            time.sleep(0.02)  # the work of a step (not a wait for anything): a slow first run
    send(notify, "done")
    return total


def timed_count(n: int, side: str, notify: str, hang_at: int) -> int:
    """Call ``count`` and report the seconds from this call to its first yield."""
    _CALL_STARTED.append(time.monotonic())
    return count(n, side, notify, hang_at)


class Listener:
    """Progress lines from tasks in any process of this machine, queued as they arrive."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = "{}:{}".format(*self._server.getsockname())
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="engine-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # the server socket closed: done
            while True:
                conn, _ = self._server.accept()
                with conn, conn.makefile("r") as lines:
                    for line in lines:
                        self.lines.put((time.monotonic(), line.strip()))

    def wait_for(self, prefix: str, timeout: float = 120) -> tuple[float, list[str]]:
        """When the first line starting with ``prefix`` arrived, and its words."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                at, line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise TimeoutError(f"no {prefix!r} line within {timeout} s") from None
            if line.startswith(prefix):
                return at, line.split()

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._server.close()
        self._thread.join(timeout=10)


def executed_steps(side: str) -> list[int]:
    """The steps the task executed, in order, from its side file."""
    with open(side) as steps:
        return [int(line) for line in steps if line.strip()]
