"""Clean-up deletes only what this library provably made, and only once its maker is gone.

Workspaces are made only when needed. A folder counts as made by the library when it holds a
regular owner marker file (``_owner.MARKER``); it is deleted only when that owner ran on this
machine (host, boot and PID namespace) and its process is gone. Names alone prove nothing:
user folders that look like workspaces stay. Workspaces and stagings of killed processes go
at the next start, at the next restore beside them, and with ``resumable gc``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import Checkpoint, RetryPolicy, resumable
from resumable._owner import MARKER, Owner, machine, me, read_marker, start_time
from resumable._workspace import remove_abandoned

LOOKALIKES = ["resumable-2024-06-01", "resumable-4000000-7-backup"]


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "results.csv").write_text("precious")
    return path


def _marked(path: Path, who: Owner) -> Path:
    """A folder named and marked as if ``who`` had made it."""
    path.mkdir(parents=True)
    (path / "data.bin").write_bytes(b"x" * 100)
    marker = {"machine": who.machine, "pid": who.pid, "start": who.start}
    (path / MARKER).write_text(json.dumps(marker))
    return path


def _dead_pid() -> int:
    """The pid of a process that has exited (not reused this soon)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


@pytest.fixture(name="live")
def _live() -> Iterator[subprocess.Popen[str]]:
    """A live process (it waits on its stdin until the test ends)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


def _gc(store: Path, tmp: Path, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "resumable", "gc", str(store), "--json", *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _snapshot_store(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    store = tmp_path / "store"
    with Checkpoint(store) as cp:
        cp.save_sync(src)
    return store


def test_user_folders_named_like_workspaces_survive_restore_load_and_gc(
    tmp: Path, tmp_path: Path
) -> None:
    """``runs/resumable-2024-06-01`` and the like survive a Dir restore, a first load and gc."""
    runs = tmp_path / "runs"
    users = [_user_folder(runs / name) for name in LOOKALIKES]
    users.append(_user_folder(tmp / "resumable-2024-06-02"))
    users.append(_user_folder(tmp / "resumable-4000000-7-backup"))
    users.append(_user_folder(runs / f".out.resumable-{_dead_pid()}-1-abcd1234.old"))
    store = _snapshot_store(tmp_path)
    with Checkpoint(store) as cp:
        assert cp.restore_into(runs / "out") is not None  # a restore beside them
        assert cp.load_sync() is not None  # this process's first workspace in tmp
    doc = _gc(store, tmp)
    assert doc["workspaces"] == []
    for folder in users:
        assert (folder / "results.csv").read_text() == "precious", folder


def test_forged_marker_of_a_live_process_is_kept_until_it_is_gone(
    tmp: Path, tmp_path: Path, live: subprocess.Popen[str]
) -> None:
    """A marker naming a live process keeps its folder; once that process is gone, gc removes it."""
    who = Owner(machine(), live.pid, start_time(live.pid))
    folder = _marked(tmp / f"resumable-{who.machine}-{who.pid}-{who.start}-abc", who)
    store = _snapshot_store(tmp_path)
    assert _gc(store, tmp)["workspaces"] == []
    assert folder.exists()
    assert live.stdin is not None
    live.stdin.close()
    live.wait(timeout=60)
    assert _gc(store, tmp)["workspaces"] == [str(folder)]
    assert not folder.exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_marker_that_is_not_a_regular_file_proves_nothing(
    tmp: Path, tmp_path: Path, kind: str
) -> None:
    """A marker that is a link, a FIFO or a folder: the folder is kept, and gc does not hang."""
    dead = Owner(machine(), _dead_pid(), 1)
    elsewhere = _marked(tmp_path / "elsewhere", dead)  # a valid marker, but outside
    folder = tmp / f"resumable-{dead.machine}-{dead.pid}-1-xyz"
    folder.mkdir()
    if kind == "symlink":
        (folder / MARKER).symlink_to(elsewhere / MARKER)
    elif kind == "fifo":
        os.mkfifo(folder / MARKER)
    else:
        (folder / MARKER).mkdir()
    store = _snapshot_store(tmp_path)
    assert _gc(store, tmp)["workspaces"] == []
    with Checkpoint(store) as cp:
        assert cp.load_sync() is not None
    assert folder.exists()


def test_owner_on_another_machine_is_never_judged_gone(tmp: Path, tmp_path: Path) -> None:
    """A folder marked by another host, boot or container stays, even if its pid is free here."""
    other = Owner("0123456789ab" if machine() != "0123456789ab" else "ba9876543210", 4_000_000, 7)
    folder = _marked(tmp / f"resumable-{other.machine}-4000000-7-xyz", other)
    store = _snapshot_store(tmp_path)
    doc = _gc(store, tmp)
    assert doc["workspaces"] == []
    assert doc["workspaces_kept"] == [str(folder)]  # listed, never deleted
    with Checkpoint(store) as cp:
        assert cp.load_sync() is not None
    assert folder.exists()


def test_staging_of_a_live_restore_in_another_container_survives(tmp_path: Path) -> None:
    """A restore beside a folder keeps the staging of a restore another PID namespace runs."""
    store = _snapshot_store(tmp_path)
    parent = tmp_path / "work"
    other = Owner("0123456789ab" if machine() != "0123456789ab" else "ba9876543210", 1, 7)
    theirs = _marked(parent / f".data.resumable-{other.machine}-1-7-live", other)
    with Checkpoint(store) as cp:
        assert cp.restore_into(parent / "data") is not None
    assert (theirs / "data.bin").exists()


def test_marked_leftovers_of_dead_processes_go(tmp: Path, tmp_path: Path) -> None:
    """A marked workspace or staging of a dead process of this machine is removed."""
    dead = Owner(machine(), _dead_pid(), 1)
    workspace = _marked(tmp / f"resumable-{dead.machine}-{dead.pid}-1-abc", dead)
    parent = tmp_path / "work"
    staging = _marked(parent / f".data.resumable-{dead.machine}-{dead.pid}-1-abc", dead)
    store = _snapshot_store(tmp_path)
    with Checkpoint(store) as cp:
        assert cp.restore_into(parent / "data") is not None
        assert not staging.exists()
        assert cp.load_sync() is not None
        assert not workspace.exists()


# -- workspaces of killed processes ---------------------------------------------------------------


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
