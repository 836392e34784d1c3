"""What the log says about attempts and resumes, and what reaches stderr by default.

Attempts are counted from 1 in every line, as tenacity counts (``ctx().attempt_number``
counts from 0, as in flyte); a resume names its snapshot's number (for tools) and when and by
which attempt it was saved (for people). Without any logging configuration, warnings reach
stderr through logging's last-resort handler -- a failed attempt, a call resuming from what
an earlier call left unfinished -- and INFO lines do not.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Generator
from pathlib import Path

import pytest

from resumable import RetryPolicy, ctx, resumable

#: How a resume line says when its snapshot was saved: local time with its UTC offset.
SAVED_AT = r"the state saved at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d"


@pytest.fixture(name="caplog_info")
def _caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture the library's records from INFO up."""
    caplog.set_level(logging.INFO, logger="resumable")
    return caplog


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The library's records so far, as (level, message)."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "resumable"]


def test_a_retry_counts_attempts_from_one(tmp: Path, caplog_info: pytest.LogCaptureFixture) -> None:
    """The failed try is attempt 1 and the retry that resumes from its snapshot attempt 2."""
    seen: list[int] = []

    @resumable(
        state=0, store=str(tmp / "store"), key="flaky", retry=RetryPolicy(attempts=2, wait=0)
    )
    def count(n: int, state: int = 0) -> Generator[int, None, int]:
        seen.append(ctx().attempt_number())
        for i in range(state, n):
            yield i + 1
            if i + 1 == 2 and ctx().attempt_number() == 0:
                raise ConnectionError("lost the connection")
        return n

    assert count(3) == 3
    assert seen == [0, 1]  # ctx() counts from 0; the log from 1
    (fail_level, failed), (resume_level, resumed) = records(caplog_info)
    assert fail_level == logging.WARNING
    assert failed.startswith("flaky: attempt 1 failed (ConnectionError: lost the connection)")
    assert resume_level == logging.INFO
    assert re.fullmatch(
        rf"flaky: attempt 2 resumes from snapshot 1 of \S+: {SAVED_AT} by attempt 1", resumed
    ), resumed


def test_a_retry_without_a_snapshot_starts_from_the_initial_state(
    tmp: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    """A retry with nothing saved says its number (2) and that it starts from the initial state."""

    @resumable(
        state=0, store=str(tmp / "store"), key="early", retry=RetryPolicy(attempts=2, wait=0)
    )
    def count(n: int, state: int = 0) -> Generator[int, None, int]:
        if ctx().attempt_number() == 0:
            raise ConnectionError("lost the connection")
        yield from range(state, n)
        return n

    assert count(2) == 2
    messages = [message for _, message in records(caplog_info)]
    assert messages[0].startswith("early: attempt 1 failed")
    assert messages[1] == "early: attempt 2 starts from the initial state"


def test_a_call_resuming_what_an_earlier_call_left_warns(
    tmp: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    """A call's first attempt resuming an unfinished call's snapshot is a WARNING saying so."""
    fail = [True]

    @resumable(state=0, store=str(tmp / "store"), key="left", retry=RetryPolicy(attempts=1))
    def count(n: int, state: int = 0) -> Generator[int, None, int]:
        for i in range(state, n):
            yield i + 1
            if fail[0]:
                raise ConnectionError("lost the connection")
        return n

    with pytest.raises(ConnectionError):
        count(3)
    assert records(caplog_info) == []  # one try, no retry: the exception says it all
    fail[0] = False
    assert count(3) == 3
    [(level, message)] = records(caplog_info)
    assert level == logging.WARNING
    assert re.fullmatch(
        rf"left: attempt 1 resumes from snapshot 0 of \S+: {SAVED_AT} by attempt 1 of an "
        r"earlier call, which did not finish",
        message,
    ), message


def test_resuming_a_kept_final_snapshot_is_info(
    tmp: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    """With on_success="keep" the next call resumes from the final snapshot: INFO, no alarm."""

    @resumable(state=0, store=str(tmp / "store"), key="kept", on_success="keep")
    def count(n: int, state: int = 0) -> Generator[int, None, int]:
        for i in range(state, n):
            yield i + 1
        return n

    assert count(2) == 2
    assert count(2) == 2
    [(level, message)] = records(caplog_info)
    assert level == logging.INFO
    assert re.fullmatch(
        rf"kept: attempt 1 resumes from snapshot 1 of \S+: {SAVED_AT} by attempt 1 of an "
        r"earlier call",
        message,
    ), message


# -- the default output, in real processes that configure no logging ------------------------

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from resumable import RetryPolicy, ctx, resumable

    store, mode = sys.argv[1], sys.argv[2]

    @resumable(state=0, store=store, key="job", retry=RetryPolicy(attempts=2, wait=0))
    def count(n, state=0):
        for i in range(state, n):
            yield i + 1
            if i + 1 == 2 and mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if i + 1 == 2 and mode == "retry" and ctx().attempt_number() == 0:
                raise ConnectionError("lost the connection")
        return n

    print(count(3))
    """
)


def run(script: Path, store: Path, mode: str) -> subprocess.CompletedProcess[str]:
    """Run the script in a fresh interpreter with ``mode``; its output, whatever its status."""
    return subprocess.run(
        [sys.executable, str(script), str(store), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def test_a_resume_after_sigkill_reaches_stderr_unconfigured(tmp: Path) -> None:
    """A process resuming what a SIGKILLed one left prints one line to stderr, with no setup."""
    script, store = tmp / "job.py", tmp / "store"
    script.write_text(SCRIPT)
    killed = run(script, store, "kill")
    assert killed.returncode == -signal.SIGKILL
    assert killed.stderr == ""  # nothing went wrong yet, as far as the library knows
    resumed = run(script, store, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "3\n"
    assert re.fullmatch(
        rf"job: attempt 1 resumes from snapshot 1 of \S+: {SAVED_AT} by attempt 1 of an "
        r"earlier call, which did not finish\n",
        resumed.stderr,
    ), resumed.stderr


def test_a_retry_prints_its_warning_but_not_the_info_resume(tmp: Path) -> None:
    """Unconfigured, a failed attempt's warning reaches stderr; the INFO resume line does not."""
    script, store = tmp / "job.py", tmp / "store"
    script.write_text(SCRIPT)
    done = run(script, store, "retry")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3\n"
    [line] = done.stderr.splitlines()
    assert line.startswith("job: attempt 1 failed (ConnectionError: lost the connection)")
