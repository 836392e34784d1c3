"""A stop request is never swallowed: SIGTERM with no yield or save after it still stops.

Real processes, real signals: each script runs a ``preemptible=True`` task that gets SIGTERM
when no further yield or save comes, then prints "carried on" if the process went on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
