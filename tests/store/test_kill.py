"""A real process killed with SIGKILL mid-task: the next process resumes from its last snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

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
