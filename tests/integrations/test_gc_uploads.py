"""`resumable gc` aborts multipart uploads that a writer killed mid-upload left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import fsspec
import pytest

from resumable._backend import open_backend

from ..servers import SeaweedS3

pytestmark = pytest.mark.remote  # needs the S3 server

WRITER = textwrap.dedent(
    """
    import os, sys
    from resumable import Checkpoint
    from resumable import Captured

    def chunks():
        for i in range(80):
            yield os.urandom(1 << 20)
            if i == 60:  # past the first (50 MiB) part: the upload has started
                print("uploading", flush=True)
                sys.stdin.readline()  # wait here until killed

    Checkpoint(sys.argv[1]).commit(Captured("bytes", lambda: chunks()))
    """
)


def test_gc_aborts_uploads_of_a_killed_writer(s3_server: SeaweedS3, tmp_path: Path) -> None:
    """A writer SIGKILLed mid-upload leaves an unfinished upload; gc aborts it."""
    store = f"s3://{s3_server.bucket}/gc-{uuid.uuid4().hex}"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), f"{store}/task"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "uploading"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.stdin is not None
    proc.stdin.close()
    fsspec.filesystem("s3").invalidate_cache()
    left = open_backend(store, None).unfinished_uploads()
    assert [u.name.split("/")[0] for u in left] == ["task"]

    young = subprocess.run(
        [sys.executable, "-m", "resumable", "gc", store, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(young.stdout)["removed"] == []  # within the grace period: kept
    done = subprocess.run(
        [sys.executable, "-m", "resumable", "gc", store, "--grace", "0", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    removed = json.loads(done.stdout)["removed"]
    assert [g["reason"] for g in removed] == ["unfinished upload"]
    assert open_backend(store, None).unfinished_uploads() == []
