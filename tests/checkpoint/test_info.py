"""``info`` and ``exists`` of a location, and the warning about objects that are not snapshots.

Each case runs through the sync methods and their async twins, on every store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import fsspec
import pytest

from resumable import (
    Checkpoint,
    CheckpointInfo,
    Storage,
)

from ..conftest import IO, store_files, write_object


def info_of(cp: Checkpoint, io: IO) -> CheckpointInfo | None:
    """The checkpoint's info, through ``info_sync()`` or ``await info()``."""
    return cp.info_sync() if io.mode == "sync" else asyncio.run(cp.info())


def exists_of(cp: Checkpoint, io: IO) -> bool:
    """Whether a snapshot exists, through ``exists_sync()`` or ``await exists()``."""
    return cp.exists_sync() if io.mode == "sync" else asyncio.run(cp.exists())


def test_info_of_an_empty_location_is_none(store_url: str, io: IO) -> None:
    """Nothing saved: info is None and exists is False."""
    with Checkpoint(store_url) as cp:
        assert info_of(cp, io) is None
        assert exists_of(cp, io) is False


def test_info_reports_the_newest_snapshot(store_url: str, io: IO, tmp_path: Path) -> None:
    """Info gives the newest snapshot's number, kind, size, time, attempt and signing."""
    before = time.time()
    with Checkpoint(store_url) as cp:
        io.save(cp, b"first")
        io.save(cp, b"second!")
        got = info_of(cp, io)
        assert got is not None
        assert (got.seq, got.kind, got.size, got.attempt, got.signed) == (1, "bytes", 7, 0, False)
        assert before - 5 <= got.created <= time.time() + 5
        assert exists_of(cp, io) is True
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "a.txt").write_text("a")
        io.save(cp, folder)
        assert (got := info_of(cp, io)) is not None
        assert (got.seq, got.kind) == (2, "dir")


def test_info_does_not_restore_the_payload(store_url: str, io: IO) -> None:
    """Info reads the manifest only: a missing payload is found by a load, not by info."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"x" * 200_000)  # large enough to be stored beside its manifest
        blob = next(name for name in store_files(store_url) if name.endswith(".blob"))
        write_object(store_url, blob, b"truncated")
        got = info_of(cp, io)
        assert got is not None
        assert got.size == 200_000
        assert not any(cp.path.iterdir())  # nothing was restored


def test_info_skips_an_unreadable_newest_manifest(store_url: str, io: IO) -> None:
    """A newest manifest that cannot be parsed is skipped for the one before it."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"one")
        io.save(cp, b"two")
        newest = [name for name in store_files(store_url) if name.endswith(".json")][-1]
        write_object(store_url, newest, b"{not json")
        got = info_of(cp, io)
        assert got is not None
        assert got.seq == 0


def test_info_after_clear_is_none_and_signed_is_reported(store_url: str, io: IO) -> None:
    """A cleared checkpoint has no snapshot, also when signed; a signed one says so."""
    with Checkpoint(store_url, storage=Storage(signing_key=b"k" * 32)) as cp:
        io.save(cp, b"signed")
        got = info_of(cp, io)
        assert got is not None
        assert got.signed
        cp.clear_sync()
        assert info_of(cp, io) is None
        assert exists_of(cp, io) is False


def test_info_sees_background_saves(store_url: str, io: IO) -> None:
    """A background save made before info is counted."""
    with Checkpoint(store_url) as cp:
        cp.save_background_sync(b"later")
        assert exists_of(cp, io) is True


def put(url: str, name: str, data: bytes = b"w") -> None:
    """Write an object under a store URL, making its folder first."""
    fs, path = fsspec.url_to_fs(url)
    fs.makedirs(path.rstrip("/"), exist_ok=True)
    write_object(url, name, data)


def foreign_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages of the warnings about locations holding no snapshot."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "but no snapshot" in r.getMessage()
    ]


def test_load_warns_once_about_objects_that_are_not_snapshots(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint another tool wrote loads as None, with one warning that names what is there."""
    for i in range(7):
        put(store_url, f"model-{i}.pt")
    caplog.set_level(logging.WARNING, logger="resumable")
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
        assert io.load(cp) is None
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
    [message] = foreign_warnings(caplog)
    assert store_url in message
    assert "model-0.pt, model-1.pt" in message
    assert "and 2 more" in message


def test_load_warns_about_a_store_root(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """Pointed at a store whose tasks are sub-folders, a load says so."""
    with Checkpoint(f"{store_url}/task-a") as cp:
        io.save(cp, b"x")
    caplog.set_level(logging.WARNING, logger="resumable")
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
    [message] = foreign_warnings(caplog)
    assert "task-a/" in message


def test_no_warning_for_an_empty_or_own_location(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing there, a cleared checkpoint, or a killed first save's leftovers: no warning."""
    caplog.set_level(logging.WARNING, logger="resumable")
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
        io.save(cp, b"x")
        cp.clear_sync()
        assert io.load(cp) is None
    put(f"{store_url}/other", "00000000000000000000.1f0c9a7e3b2d4c5a.blob")
    with Checkpoint(f"{store_url}/other") as cp:
        assert io.load(cp) is None
    assert foreign_warnings(caplog) == []
