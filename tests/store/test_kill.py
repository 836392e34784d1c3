"""SIGKILL at any moment: the next process resumes from the last good snapshot.

One kill mid-task (local disk and S3), then storms: a real child process runs a task that
saves a self-checking state on every ``yield`` and is killed with SIGKILL after a random
delay, again and again (tests/stress/storm.py has the child and the checks;
tests/stress/kill_storm.py runs the same storm with 1,000 kills and more). The pickled states
range from 1 KiB to 8 MiB, bytes and NumPy arrays: after every kill what loads is exactly one
committed state, the newest one the loop knows of.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.stress.storm import MAX_STATE, StormReport, layout_for, run_storm

from ..servers import SeaweedS3

TASK = textwrap.dedent(
    """
    import sys
    from resumable import resumable

    @resumable(state=0, store=sys.argv[1], key="killed-task", on_success="keep")
    def count(n, state=0):
        print(f"start {state}", flush=True)
        for i in range(state, n):
            yield i + 1
            print(f"saved {i + 1}", flush=True)
            if i + 1 >= 5 and sys.argv[2] == "hang":
                sys.stdin.readline()  # wait here until killed
        return n

    print(f"result {count(10)}", flush=True)
    """
)


@pytest.fixture(name="kill_store", params=["local", pytest.param("s3", marks=pytest.mark.remote)])
def _kill_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store both processes reach: a local folder, or a prefix on the test S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    server: SeaweedS3 = request.getfixturevalue("s3_server")  # sets the AWS_* variables
    return f"s3://{server.bucket}/kill-{uuid.uuid4().hex}"


def test_sigkill_then_resume(tmp_path: Path, kill_store: str) -> None:
    """After SIGKILL, a fresh process starts at the last committed snapshot, not at zero."""
    script = tmp_path / "task.py"
    script.write_text(TASK)
    store = kill_store
    proc = subprocess.Popen(
        [sys.executable, str(script), store, "hang"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = 0
    for line in proc.stdout:
        if line.startswith("saved"):
            last = int(line.split()[1])
            if last >= 5:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(
        [sys.executable, str(script), store, "run"], capture_output=True, text=True, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[0] == f"start {last}"
    assert lines[-1] == "result 10"


# -- kill storms ----------------------------------------------------------------------------------


try:
    import numpy
except ImportError:  # the storm's states are bytes only then
    numpy = None  # type: ignore[assignment]


#: Sized for CI: each storm takes 10-20 s on two cores.
KILLS = 40


def assert_storm_clean(report: StormReport) -> None:
    """No torn or backward load, every start from the newest snapshot, progress made."""
    print("\n".join(report.lines()))
    assert report.kills == KILLS
    assert report.torn == 0, "\n".join(report.problems)
    # Lives accumulate: each child resumes where the last snapshot left off.
    assert report.counter >= KILLS // 10
    # The delays reach into the saves themselves, not only into the task's own work.
    assert report.kills - report.phases["no-store-write"] >= 3, report.phases


@pytest.mark.slow
def test_kill_storm_pickled_state(tmp_path: Path) -> None:
    """SIGKILLs at random moments never leave a torn, stale or lost pickled state up to 8 MiB."""
    report = run_storm(tmp_path, kills=KILLS, dir_state=False, seed=20261127)
    assert_storm_clean(report)
    # Every load after a kill was checked whole and the newest by assert_storm_clean; how
    # many of them met a large state depends on where the kills land, so only the saves
    # are required to have reached the large sizes.
    sizes = [size for size, _ in report.loaded]
    assert max(sizes) <= MAX_STATE
    assert report.largest_saved >= 2 << 20  # states of 2-8 MiB were committed
    if numpy is not None:  # states with arrays were committed (counters 1 to the last)
        assert any(layout_for(n, big=True)[1] for n in range(1, report.counter + 1)), report


@pytest.mark.slow
def test_kill_storm_dir_state(tmp_path: Path) -> None:
    """SIGKILLs at random moments never leave a torn, stale or lost Dir-state snapshot."""
    assert_storm_clean(run_storm(tmp_path, kills=KILLS, dir_state=True, seed=1127))


HANG_AFTER_RESTORE = """
import sys
from resumable import Storage, resumable

@resumable(state=0, store=sys.argv[1], key="poisoned", storage=Storage(keep=int(sys.argv[2])),
           on_success="keep")
def count(state=0):
    print(f"started {state}", flush=True)
    if sys.argv[3] == "hang":
        sys.stdin.readline()  # killed here: after the restore, before the next save
    yield state + 1

count()
"""


@pytest.mark.parametrize("keep", [1, 2])
def test_sigkills_poison_a_good_snapshot(tmp_path: Path, keep: int) -> None:
    """Three SIGKILLs between restore and the next save do not make a good snapshot unusable."""
    script = tmp_path / "task.py"
    script.write_text(HANG_AFTER_RESTORE)
    store = str(tmp_path / "store")

    def run(how: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(script), store, str(keep), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = ""
        if how == "hang":
            assert proc.stdout is not None
            first = proc.stdout.readline()  # restored; now waiting, as a preempted task would
            proc.kill()
        out, err = proc.communicate()
        return first + out + err

    assert "started 0" in run("run")  # snapshot 0 holds 1
    assert "started 1" in run("run")  # snapshot 1 holds 2: good, and the newest
    for _ in range(3):  # preempted three times before its next save (e.g. OOM, spot VMs)
        assert "started 2" in run("hang")
    # Counted as failures, these kills made snapshot 1 "poison": with keep=2 the task went
    # back to snapshot 0 (state 1), with keep=1 it refused to start (CorruptCheckpointError).
    assert "started 2" in run("run")
