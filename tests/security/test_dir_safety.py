"""A ``Dir`` never loses the user's data: overlaps are refused, a failed restore leaves it alone."""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import resumable._restore as restore_module
from resumable import Checkpoint, ConfigurationError, CorruptCheckpointError, Dir, resumable

from ..conftest import read_object, store_files, write_object

# -- overlaps ------------------------------------------------------------------------------


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


# -- a failed restore leaves the folder alone ---------------------------------------------


def _make_only_snapshot_corrupt(store_url: str, folder: Path, key: str, flavour: str) -> None:
    """Commit one folder snapshot of ``folder`` under ``key``, then damage its payload."""
    (folder / "big.bin").write_bytes(os.urandom(200_000))  # not inlined: a payload object
    with Checkpoint(f"{store_url}/{key}") as cp:
        cp.save_sync(folder)
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
