"""A ``Dir`` never loses the user's data: overlaps are refused, a failed restore leaves it alone.

A symlinked folder stays a link (restored into its target, staged beside it), and a kill
mid-swap loses nothing. The kill tests run the restore in a real subprocess that SIGKILLs
itself right after one rename of the swap: its ``os.rename`` is wrapped by the child script,
not by a hook in the library.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import resumable._restore as restore_module
from resumable import (
    Checkpoint,
    ConfigurationError,
    CorruptCheckpointError,
    Dir,
    RetryPolicy,
    Storage,
    resumable,
)
from resumable._owner import MARKER

from ..conftest import read_object, store_files, write_object


def _task(folder: Path | str, store: str | None) -> Callable[[], Any]:
    @resumable(state=Dir(folder), store=store, key="overlap")
    def task(state: Path) -> Iterator[None]:
        (state / "f").write_text("x")
        yield

    return task


@pytest.mark.parametrize(
    ("folder", "store", "what"),
    [
        (".", None, "contains the store"),  # the default store ./.resumable
        (".", ".resumable", "contains the store"),
        ("data", "data/.snapshots", "contains the store"),
        ("store/inside", "store", "inside the store"),
        ("same", "same", "contains the store"),
    ],
)
def test_dir_overlapping_the_store_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str, store: str | None, what: str
) -> None:
    """``Dir(".")`` with ``./.resumable`` (and every other overlap) is refused before running."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match=what) as raised:
        _task(folder, store)()
    assert "store=" in str(raised.value)  # says how to fix it
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "f").exists()


def test_dir_that_is_the_root_is_refused() -> None:
    """``Dir("/")`` would be emptied by a restore."""
    with pytest.raises(ConfigurationError, match="root folder"):
        _task("/", "memory://root-dir")()


def test_dir_containing_the_workspaces_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dir that contains the temp folder (where workspaces live) is refused."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(ConfigurationError, match="temp folder"):
        _task(tmp_path, "memory://tmp-dir")()


def test_dir_beside_the_store_is_fine(tmp_path: Path) -> None:
    """A Dir next to the store (neither inside the other) runs."""
    _task(tmp_path / "out", str(tmp_path / "store"))()
    assert (tmp_path / "out" / "f").read_text() == "x"


def _make_only_snapshot_corrupt(store_url: str, folder: Path, key: str, flavour: str) -> None:
    """Commit one folder snapshot of ``folder`` under ``key``, then damage its payload."""
    (folder / "big.bin").write_bytes(os.urandom(200_000))  # not inlined: a payload object
    with Checkpoint(f"{store_url}/{key}", storage=Storage(incremental=False)) as cp:
        cp.save_sync(folder)  # an archive: its one payload object is what gets damaged
    url = f"{store_url}/{key}"
    (blob,) = [n for n in store_files(url) if n.endswith(".blob")]
    data = bytearray(read_object(url, blob))
    data[len(data) // 2] ^= 0xFF
    write_object(url, blob, bytes(data))


def _user_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_corrupt_only_snapshot_leaves_the_folder_untouched(
    store_url: str, tmp_path: Path, kind: str
) -> None:
    """With nothing restorable the call raises, and the user's folder is exactly as it was."""
    folder = tmp_path / "work"
    folder.mkdir()
    _make_only_snapshot_corrupt(store_url, folder, "t", kind)
    (folder / "notes.txt").write_text("precious")
    before = _user_files(folder)

    @resumable(state=Dir(folder), store=store_url, key="t")
    def sync_task(state: Path) -> Iterator[None]:
        yield

    @resumable(state=Dir(folder), store=store_url, key="t")
    async def async_task(state: Path) -> AsyncIterator[None]:
        yield

    def call() -> None:
        if kind == "sync":
            sync_task()
        else:
            asyncio.run(async_task())

    with pytest.raises(CorruptCheckpointError):
        call()
    assert _user_files(folder) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_failing_restore_midway_leaves_the_folder_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore that fails after writing part of the tree (a full disk) changes nothing."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "a.txt").write_text("snapshot")
    store = str(tmp_path / "store")
    with Checkpoint(f"{store}/t") as cp:
        cp.save_sync(folder)
    (folder / "a.txt").write_text("newer, not saved")
    unpack = restore_module.unpack

    def full_disk(*args: Any, **kwargs: Any) -> None:
        unpack(*args, **kwargs)  # the tree is written...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...and then the disk fills

    monkeypatch.setattr(restore_module, "unpack", full_disk)

    @resumable(state=Dir(folder), store=store, key="t")
    def task(state: Path) -> None:
        raise AssertionError("never runs")

    with pytest.raises(OSError, match="No space"):
        task()
    assert (folder / "a.txt").read_text() == "newer, not saved"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "work"]


def test_successful_restore_replaces_the_folder(tmp_path: Path) -> None:
    """A verified restore makes the folder identical to the snapshot."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "a.txt").write_text("snapshot")
    store = str(tmp_path / "store")
    with Checkpoint(f"{store}/t") as cp:
        cp.save_sync(folder)
    (folder / "stray.txt").write_text("not in the snapshot")
    seen: list[list[str]] = []

    @resumable(state=Dir(folder), store=store, key="t")
    def task(state: Path) -> None:
        seen.append(sorted(p.name for p in state.iterdir()))

    task()
    assert seen == [["a.txt"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "work"]


# -- a folder that is a symbolic link, and a swap killed halfway ----------------------------------


def _hidden(folder: Path) -> list[str]:
    """Names in ``folder`` that a restore's staging would leave (hidden ones)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_symlinked_dir_is_restored_into_its_target(tmp_path: Path) -> None:
    """A Dir that is a symbolic link stays a link; a retry restores into the folder it names."""
    real = tmp_path / "other-disk" / "outputs"
    real.mkdir(parents=True)
    (real / "old.txt").write_text("before the call")
    link = tmp_path / "work" / "outputs"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    seen: list[list[str]] = []

    @resumable(
        state=Dir(link),
        store=str(tmp_path / "store"),
        key="t",
        retry=RetryPolicy(attempts=2, wait=0),
    )
    def task(state: Path) -> Iterator[None]:
        seen.append(sorted(p.name for p in state.iterdir()))
        (state / f"attempt-{len(seen)}.txt").write_text("work")
        yield
        if len(seen) == 1:
            (state / "unsaved.txt").write_text("after the snapshot")
            raise RuntimeError("crash: the retry restores the snapshot")

    task()
    assert seen == [["old.txt"], ["attempt-1.txt", "old.txt"]]
    assert link.is_symlink()
    assert Path(os.readlink(link)) == real
    assert sorted(p.name for p in real.iterdir()) == ["attempt-1.txt", "attempt-2.txt", "old.txt"]
    assert _hidden(link.parent) == []
    assert _hidden(real.parent) == []


def test_checkpoint_restore_into_a_link_keeps_the_link(tmp_path: Path) -> None:
    """``Checkpoint.restore_into`` of a link replaces the target's content, never the link."""
    real = tmp_path / "real"
    restore_through_link(tmp_path, real, tmp_path / "link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "src", "store"]


def restore_through_link(tmp_path: Path, real: Path, link: Path) -> None:
    """Save a one-file folder, restore it into ``link`` -> ``real`` (which held a stale file)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("snapshot")
    real.mkdir()
    (real / "stale.txt").write_text("stale")
    link.symlink_to(real)
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(src)
        assert cp.restore_into(link) is not None
    assert link.is_symlink()
    assert sorted(p.name for p in real.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("what", ["dangling", "file"])
def test_dir_link_to_nothing_or_a_file_is_refused_at_call_start(tmp_path: Path, what: str) -> None:
    """A Dir that is a dangling link or a link to a file: a ConfigurationError before running."""
    link = tmp_path / "outputs"
    if what == "file":
        (tmp_path / "file.txt").write_text("not a folder")
        link.symlink_to(tmp_path / "file.txt")
    else:
        link.symlink_to(tmp_path / "missing")
    ran = []

    @resumable(
        state=Dir(link),
        store=str(tmp_path / "store"),
        key="t",
        retry=RetryPolicy(attempts=3, wait=0),
    )
    def task(state: Path) -> None:
        ran.append(state)

    with pytest.raises(ConfigurationError, match="symbolic link") as raised:
        task()
    assert isinstance(raised.value, ValueError)
    assert ran == []
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == sorted(
        ["outputs", *(["file.txt"] if what == "file" else [])]
    )


def test_dir_link_into_the_store_is_refused(tmp_path: Path) -> None:
    """The overlap check follows a Dir's link: a link into the store is refused."""
    store = tmp_path / "store"
    (store / "inside").mkdir(parents=True)
    link = tmp_path / "outputs"
    link.symlink_to(store / "inside")

    @resumable(state=Dir(link), store=str(store), key="t")
    def task(state: Path) -> None:
        raise AssertionError("never runs")

    with pytest.raises(ConfigurationError, match="inside the store"):
        task()


KILLED_SWAP = """
import os, signal, sys
from pathlib import Path
from resumable import Checkpoint

store, folder, moment = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
rename = os.rename

def rename_then_die(src, dst, *args, **kwargs):
    rename(src, dst, *args, **kwargs)
    # "first": the user's folder was just moved aside; "second": the new tree just took its place
    if (moment == "first" and Path(src) == folder) or (moment == "second" and Path(dst) == folder):
        os.kill(os.getpid(), signal.SIGKILL)

os.rename = rename_then_die
Checkpoint(store).restore_into(folder)
sys.exit(3)  # the restore must have renamed the folder: never reached
"""


def _restore_killed(tmp_path: Path, store: Path, folder: Path, moment: str) -> None:
    """Run a restore into ``folder`` in a child that SIGKILLs itself at ``moment``."""
    script = tmp_path / "killed_swap.py"
    script.write_text(textwrap.dedent(KILLED_SWAP))
    done = subprocess.run(
        [sys.executable, str(script), str(store), str(folder), moment],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def _folder_with_work(tmp_path: Path) -> tuple[Path, Path]:
    """A store holding one snapshot of ``work`` (snap.txt); work/user-work.txt came after it."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "snap.txt").write_text("in the snapshot")
    (folder / "big.bin").write_bytes(os.urandom(200_000))  # a payload object of its own
    store = tmp_path / "store"
    with Checkpoint(store, storage=Storage(incremental=False)) as cp:
        cp.save_sync(folder)  # an archive: one payload object to damage
    (folder / "user-work.txt").write_text("written after the snapshot")
    return folder, store


def _corrupt_only_payload(store: Path) -> None:
    (blob,) = store.glob("*.blob")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_kill_after_the_first_rename_then_a_failed_restore_keeps_the_folder(
    tmp_path: Path,
) -> None:
    """A restore killed with the folder moved aside, then a restore that fails: nothing is lost."""
    folder, store = _folder_with_work(tmp_path)
    _restore_killed(tmp_path, store, folder, "first")
    assert not folder.exists()  # the kill came between the renames
    _corrupt_only_payload(store)
    with (
        Checkpoint(store, storage=Storage(incremental=False)) as cp,
        pytest.raises(CorruptCheckpointError),
    ):
        cp.restore_into(folder)
    assert (folder / "user-work.txt").read_text() == "written after the snapshot"
    assert (folder / "snap.txt").read_text() == "in the snapshot"
    assert not (folder / MARKER).exists()


def test_kill_after_the_first_rename_then_a_restore_completes_it(tmp_path: Path) -> None:
    """After a kill with the folder moved aside, the next restore succeeds and leaves no staging."""
    folder, store = _folder_with_work(tmp_path)
    _restore_killed(tmp_path, store, folder, "first")
    with Checkpoint(store) as cp:
        assert cp.restore_into(folder) is not None
    assert sorted(p.name for p in folder.iterdir()) == ["big.bin", "snap.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed_swap.py", "store", "work"]


def test_kill_after_the_second_rename_leaves_the_restored_folder(tmp_path: Path) -> None:
    """A kill once the new tree is in place: the folder is the snapshot; the next restore tidies."""
    folder, store = _folder_with_work(tmp_path)
    _restore_killed(tmp_path, store, folder, "second")
    assert sorted(p.name for p in folder.iterdir()) == ["big.bin", "snap.txt"]
    _corrupt_only_payload(store)
    with (
        Checkpoint(store, storage=Storage(incremental=False)) as cp,
        pytest.raises(CorruptCheckpointError),
    ):
        cp.restore_into(folder)  # fails: the staging of the killed restore is not touched
    assert sorted(p.name for p in folder.iterdir()) == ["big.bin", "snap.txt"]
    (folder / "snap.txt").write_text("a newer snapshot")
    with Checkpoint(store, storage=Storage(incremental=False)) as cp:
        cp.save_sync(folder)
        assert cp.restore_into(folder) is not None
    assert (folder / "snap.txt").read_text() == "a newer snapshot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed_swap.py", "store", "work"]


def test_symlinked_dir_on_another_filesystem_is_restored_there(tmp_path: Path) -> None:
    """A link to a folder on another filesystem: the restore stages there, the link stays."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    real = Path(tempfile.mkdtemp(dir=shm)) / "outputs"
    try:
        restore_through_link(tmp_path, real, tmp_path / "outputs")
        assert sorted(p.name for p in real.parent.iterdir()) == ["outputs"]
    finally:
        shutil.rmtree(real.parent)
