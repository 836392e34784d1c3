"""Stop requests: ``request_stop()`` from any thread, and SIGTERM with ``preemptible=True``.

SIGTERM with real processes and real signals: each script runs a ``preemptible=True`` task;
the signal is handed to the previous handler only after the call saved and stopped, and a
request is never swallowed (with no yield or save after it, the process still stops; the
script prints "carried on" if it went on).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import (
    Checkpoint,
    Preempted,
    ctx,
    request_stop,
    resumable,
)
from resumable.testing import read_state

#: How long a test waits for an event before it fails (never reached when all is well).
DEADLINE = 60.0


KINDS = ["sync", "async"]


HEADER = """
import asyncio, os, signal, sys
from resumable import resumable
store = sys.argv[1]
"""


SCRIPTS = {
    # A plain function: the signal arrives while it runs, and it returns normally.
    "function": """
@resumable(state=0, store=store, key="f", preemptible=True)
def task(state=0):
    os.kill(os.getpid(), signal.SIGTERM)
    return "done"
print(task(), flush=True)
""",
    # A generator: the signal arrives after its last yield.
    "generator": """
@resumable(state=0, store=store, key="g", preemptible=True)
def task(state=0):
    yield 1
    print("after the last yield", flush=True)
    sys.stdin.readline()  # the parent sends SIGTERM now, then closes stdin
    return "done"
print(task(), flush=True)
""",
    "coroutine": """
@resumable(state=0, store=store, key="c", preemptible=True)
async def task(state=0):
    os.kill(os.getpid(), signal.SIGTERM)
    return "done"
print(asyncio.run(task()), flush=True)
""",
}


def _run(tmp_path: Path, body: str, *, parent_signals: bool = False) -> tuple[int, str]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(HEADER + body + 'print("carried on", flush=True)\n'))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "store")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    if parent_signals:
        assert proc.stdout.readline().strip() == "after the last yield"
        proc.send_signal(signal.SIGTERM)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.stdout.close()
    return proc.wait(timeout=60), out


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_sigterm_with_no_yield_after_it_still_stops_the_process(tmp_path: Path, kind: str) -> None:
    """The signal is delivered again after the call: the process ends by SIGTERM."""
    code, out = _run(tmp_path, SCRIPTS[kind], parent_signals=kind == "generator")
    assert code == -signal.SIGTERM, out
    assert "carried on" not in out


def test_python_previous_handler_gets_the_signal(tmp_path: Path) -> None:
    """A Python handler installed before the call is called, and nothing else is done."""
    body = """
seen = []
signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
@resumable(state=0, store=store, key="h", preemptible=True)
def task(state=0):
    os.kill(os.getpid(), signal.SIGTERM)
    return "done"
print(task(), seen, flush=True)
"""
    code, out = _run(tmp_path, body)
    assert code == 0
    assert f"done [{int(signal.SIGTERM)}]" in out
    assert "carried on" in out


def test_ignored_sigterm_stays_ignored(tmp_path: Path) -> None:
    """With SIGTERM ignored before the call, the call's result stands and the script goes on."""
    body = """
signal.signal(signal.SIGTERM, signal.SIG_IGN)
@resumable(state=0, store=store, key="i", preemptible=True)
def task(state=0):
    os.kill(os.getpid(), signal.SIGTERM)
    return "done"
print(task(), flush=True)
"""
    code, out = _run(tmp_path, body)
    assert code == 0
    assert "done" in out


SAVE_THEN_EXIT = """
def previous(signum, frame):
    print("previous handler", flush=True)
    os._exit(7)  # like an engine's handler: exits at once, nothing flushed after it
signal.signal(signal.SIGTERM, previous)
@resumable(state=0, store=store, key="x", every=10**9, preemptible=True)
def task(state=0):
    i = state
    while True:
        i += 1
        if i == 1000:
            print("after the last yield", flush=True)  # the parent sends SIGTERM now
            sys.stdin.readline()
        yield i
task()
"""


def test_snapshot_is_saved_before_a_previous_handler_that_exits(tmp_path: Path) -> None:
    """SIGTERM saves the next yield first; only then the previous handler runs (and exits)."""
    code, out = _run(tmp_path, SAVE_THEN_EXIT, parent_signals=True)
    assert code == 7, out
    assert out.strip() == "previous handler"
    assert _saved_state(str(tmp_path / "store"), "x") == 1000  # 0: ran before the save


def _saved_state(store: str, key: str) -> int:
    """The state a new call of the task ``key`` would resume from (0 when none was saved)."""

    @resumable(state=0, store=store, key=key, on_success="keep")
    def peek(state: int = 0) -> int:
        return state

    return peek()


def _run_kind(kind: str, make: Callable[[], Any]) -> Any:
    """Call a sync task, or run an async one to completion."""
    if kind == "sync":
        return make()
    return asyncio.run(make())


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a new thread and return its result (or raise its exception)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(DEADLINE)
    assert outcome, "the thread did not finish in time"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


@pytest.mark.parametrize("kind", KINDS)
def test_preemptible_on_a_worker_thread_runs(tmp_path: Path, kind: str) -> None:
    """preemptible=True off the main thread runs the task and leaves SIGTERM's handler alone."""
    store = str(tmp_path / "store")
    before = signal.getsignal(signal.SIGTERM)

    @resumable(state=0, store=store, key="s", preemptible=True)
    def task(state: int = 0) -> Generator[int, None, int]:
        yield state + 1
        assert signal.getsignal(signal.SIGTERM) is before
        return state + 1

    @resumable(state=0, store=store, key="a", preemptible=True)
    async def atask(state: int = 0) -> AsyncIterator[int]:
        yield state + 1
        assert signal.getsignal(signal.SIGTERM) is before

    assert _in_thread(lambda: _run_kind(kind, task if kind == "sync" else atask)) == 1
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("kind", KINDS)
def test_request_stop_from_another_thread_saves_the_next_yield(tmp_path: Path, kind: str) -> None:
    """request_stop() makes a running task persist its next yield, flush, and raise Preempted."""
    store = str(tmp_path / "store")
    reached, asked = threading.Event(), threading.Event()
    counts: list[int] = []

    def wait_here(i: int) -> None:
        if i == 5:
            reached.set()
            assert asked.wait(DEADLINE)

    @resumable(state=0, store=store, key="k", every=10**9)
    def task(state: int = 0) -> Iterator[int]:
        i = state
        while True:
            i += 1
            wait_here(i)
            yield i

    @resumable(state=0, store=store, key="k", every=10**9)
    async def atask(state: int = 0) -> AsyncIterator[int]:
        i = state
        while True:
            i += 1
            wait_here(i)
            yield i

    def stopper() -> None:
        assert reached.wait(DEADLINE)
        counts.append(request_stop())
        asked.set()

    thread = threading.Thread(target=stopper)
    thread.start()
    with pytest.raises(Preempted):
        _run_kind(kind, task if kind == "sync" else atask)
    thread.join(DEADLINE)
    assert counts == [1]
    assert request_stop() == 0  # the call ended: nothing is running any more
    assert _saved_state(store, "k") == 5


# -- SIGTERM and ctx().preempted ------------------------------------------------------------------


PREEMPTIBLE = textwrap.dedent(
    """
    import sys
    from resumable import Preempted, RetryPolicy, resumable

    @resumable(state=0, store=sys.argv[1], key="spot", every=10**9, preemptible=True,
               retry=RetryPolicy(attempts=4, wait=0), on_success="keep")
    def work(state=0):
        print(f"start {state}", flush=True)
        i = state
        while True:
            i += 1
            yield i
            if i == state + 1000:
                print("running", flush=True)
            if i >= state + 10**7:
                return i

    try:
        work()
    except Preempted as exc:
        print("preempted", flush=True)
        sys.exit(3)
    """
)


def test_sigterm_saves_then_raises_preempted(tmp_path: Path) -> None:
    """On SIGTERM the next yield is saved despite the throttle, and Preempted is not retried."""
    script = tmp_path / "spot.py"
    script.write_text(PREEMPTIBLE)
    store = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, str(script), store], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start 0"
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait() == 3
    assert rest.strip() == "preempted"  # no "start" again: not retried in-process
    with Checkpoint(f"{store}/spot") as cp:
        cp.load_sync()
        saved = read_state(cp.path / "payload")
    assert saved > 1000


def test_ctx_preempted_flag_for_plain_functions(store_url: str) -> None:
    """A task without yields can see ctx().preempted (and the previous handler is called)."""
    seen: list[int] = []

    @resumable(state=0, store=store_url, preemptible=True)
    def task(state: int = 0) -> bool:
        before = ctx().preempted
        os.kill(os.getpid(), signal.SIGTERM)
        return before is False and ctx().preempted is True

    # A Python handler, so the signal is not delivered again to the default one (which
    # would end this process: see test_sigterm_with_no_yield_after_it_still_stops_the_process).
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        assert task() is True
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]
