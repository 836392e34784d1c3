"""Workspaces are made only when needed, and those of killed processes are cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from resumable import Checkpoint, RetryPolicy, resumable
from resumable._owner import MARKER, machine, me, read_marker
from resumable._workspace import remove_abandoned


def test_saving_and_pickled_state_make_no_workspace(tmp: Path, tmp_path: Path) -> None:
    """A Checkpoint makes its workspace on its first load; saves and @resumable state none."""
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(b"x")
        assert list(tmp.iterdir()) == []

        @resumable(
            state=0, store=str(tmp_path / "store"), key="t", retry=RetryPolicy(attempts=2, wait=0)
        )
        def task(state: int = 0) -> int:
            return state

        assert task() == 0
        assert list(tmp.iterdir()) == []
        root = cp.load_sync()
        assert root is not None
        assert root.parent.parent == tmp
        assert read_marker(root.parent) == me()
    assert list(tmp.iterdir()) == []


KILLED = """
import os, signal, sys
from resumable import Checkpoint
cp = Checkpoint(sys.argv[1])
cp.save_sync(b"state")
print(cp.load_sync(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_workspace(tmp_path: Path) -> Path:
    """The workspace (its marked folder) a SIGKILLed process left behind."""
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = Path(proc.stdout.strip()).parent
    assert read_marker(left) is not None
    return left


def test_next_start_removes_workspaces_of_killed_processes(tmp: Path, tmp_path: Path) -> None:
    """The first workspace a process makes removes those whose owner process is gone."""
    left = _killed_workspace(tmp_path)
    with Checkpoint(tmp_path / "store") as cp:
        mine = cp.load_sync()
        assert mine is not None
        assert not left.exists()
        assert mine.exists()
        assert remove_abandoned(str(tmp)) == []  # a live owner's workspace is kept
        assert mine.exists()


def test_gc_removes_workspaces_of_killed_processes(tmp: Path, tmp_path: Path) -> None:
    """``resumable gc`` removes them too (``--dry-run`` only lists them)."""
    left = _killed_workspace(tmp_path)

    def gc(*extra: str) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, "-m", "resumable", "gc", str(tmp_path / "store"), "--json", *extra],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "TMPDIR": str(tmp)},
        )
        assert proc.returncode == 0, proc.stderr
        doc: dict[str, object] = json.loads(proc.stdout)
        return doc

    assert gc("--dry-run")["workspaces"] == [str(left)]
    assert left.exists()
    assert gc()["workspaces"] == [str(left)]
    assert not left.exists()


def test_restore_beside_a_folder_removes_stagings_of_killed_processes(tmp_path: Path) -> None:
    """A restore's marked staging folders left by a dead process go; a live one's stay."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)  # exited: its pid names no running process (or a later one)
    parent = tmp_path / "work"
    parent.mkdir()
    left = [
        parent / f".data.resumable-{machine()}-{dead}-1-abcd1234",
        parent / f".data.resumable-{machine()}-{dead}-1-efgh5678",
    ]
    live = parent / f".data.resumable-{machine()}-{os.getpid()}-0-live0000"
    for path, pid in [(left[0], dead), (left[1], dead), (live, os.getpid())]:
        path.mkdir()
        (path / "new").mkdir()
        (path / "new" / "big.bin").write_bytes(b"x" * 1000)
        marker = {"machine": machine(), "pid": pid, "start": 1 if pid == dead else me().start}
        (path / MARKER).write_text(json.dumps(marker))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(src)
        assert cp.restore_into(parent / "data") is not None
    assert (parent / "data" / "a.txt").read_text() == "a"
    assert sorted(p.name for p in parent.iterdir()) == [live.name, "data"]
