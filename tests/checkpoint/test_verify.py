"""Verified loads: a bad newest snapshot falls back to the previous valid one.

A corrupt, truncated or missing newest snapshot is skipped with a warning; when none
verifies, a clear CorruptCheckpointError.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from resumable import Checkpoint, CorruptCheckpointError, ResumableError, Storage, testing

from ..conftest import IO, delete_object, read_object, store_files, write_object

NEWEST = "00000000000000000001"


def two_file_snapshots(store_url: str, tmp_path: Path, io: IO) -> Checkpoint:
    """A checkpoint with an older ("old") and a newer ("new") 100 kB file snapshot."""
    cp = Checkpoint(store_url)
    for tag in ("old", "new"):
        src = tmp_path / f"{tag}.bin"
        src.write_bytes(tag.encode() * 40_000)
        io.save(cp, src)
    return cp


def newest_blob(store_url: str) -> str:
    return next(n for n in store_files(store_url) if n.startswith(NEWEST) and n.endswith(".blob"))


def flip_byte(store_url: str) -> None:
    name = newest_blob(store_url)
    data = bytearray(read_object(store_url, name))
    data[len(data) // 2] ^= 0xFF
    write_object(store_url, name, bytes(data))


def truncate(store_url: str) -> None:
    name = newest_blob(store_url)
    write_object(store_url, name, read_object(store_url, name)[:1000])


def extend(store_url: str) -> None:
    name = newest_blob(store_url)
    write_object(store_url, name, read_object(store_url, name) + b"extra")


def drop_payload(store_url: str) -> None:
    delete_object(store_url, newest_blob(store_url))


def empty_payload(store_url: str) -> None:
    write_object(store_url, newest_blob(store_url), b"")


def garbage_manifest(store_url: str) -> None:
    write_object(store_url, f"{NEWEST}.json", b"{not json")


def future_manifest(store_url: str) -> None:
    doc = json.loads(read_object(store_url, f"{NEWEST}.json"))
    doc["format"] = 99
    write_object(store_url, f"{NEWEST}.json", json.dumps(doc).encode())


def foreign_payload(store_url: str) -> None:
    doc = json.loads(read_object(store_url, f"{NEWEST}.json"))
    doc["blob"] = "../../etc/passwd"
    write_object(store_url, f"{NEWEST}.json", json.dumps(doc).encode())


def wrong_digest(store_url: str) -> None:
    doc = json.loads(read_object(store_url, f"{NEWEST}.json"))
    doc["blake3"] = "0" * 64
    write_object(store_url, f"{NEWEST}.json", json.dumps(doc).encode())


CORRUPTIONS: dict[str, Callable[[str], None]] = {
    "flipped byte": flip_byte,
    "truncated": truncate,
    "longer than recorded": extend,
    "missing payload": drop_payload,
    "zero-byte payload": empty_payload,
    "garbage manifest": garbage_manifest,
    "future format": future_manifest,
    "payload elsewhere": foreign_payload,
    "wrong digest": wrong_digest,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_newest_falls_back_with_warning(
    store_url: str,
    tmp_path: Path,
    io: IO,
    caplog: pytest.LogCaptureFixture,
    corrupt: Callable[[str], None],
) -> None:
    """The previous valid snapshot is returned, with a warning naming the skipped one."""
    with two_file_snapshots(store_url, tmp_path, io) as cp:
        corrupt(store_url)
        with caplog.at_level(logging.WARNING, logger="resumable"):
            root = io.load(cp)
        assert (root / "payload").read_bytes() == b"old" * 40_000
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings
        assert "snapshot 1" in warnings[0].getMessage()


def test_corrupt_inline_snapshot_falls_back(store_url: str, io: IO) -> None:
    """A small (inlined) snapshot whose bytes were altered is skipped too."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"old")
        io.save(cp, b"new")
        doc = json.loads(read_object(store_url, f"{NEWEST}.json"))
        doc["inline"] = "bmV3IQ=="  # "new!"
        write_object(store_url, f"{NEWEST}.json", json.dumps(doc).encode())
        assert (io.load(cp) / "payload").read_bytes() == b"old"


def test_corrupt_directory_snapshot_leaves_no_partial_tree(
    store_url: str, io: IO, tmp_path: Path
) -> None:
    """A folder snapshot that fails verification after extraction began is discarded whole."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.txt").write_text("old")
    with Checkpoint(store_url) as cp:
        io.save(cp, src)
        (src / "old.txt").unlink()
        for i in range(5):
            (src / f"new{i}.bin").write_bytes(os.urandom(1 << 20))
        io.save(cp, src)
        flip_byte(store_url)
        root = io.load(cp)
        assert sorted(p.name for p in root.iterdir()) == ["old.txt"]


def test_none_valid_raises_corrupt_checkpoint_error(store_url: str, io: IO) -> None:
    """When every snapshot is bad, load raises a ValueError that says what failed."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"only")
        garbage_manifest_0 = "00000000000000000000.json"
        write_object(store_url, garbage_manifest_0, b"[]")
        with pytest.raises(CorruptCheckpointError, match="snapshot 0: manifest") as exc:
            io.load(cp)
        assert isinstance(exc.value, ValueError)
        assert isinstance(exc.value, ResumableError)
        assert "resumable rm" in str(exc.value)


def test_orphan_payload_without_manifest_is_ignored(store_url: str, io: IO) -> None:
    """A payload whose manifest was never written is not a snapshot."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"committed")
        write_object(store_url, "00000000000000000005.deadbeefdeadbeef.blob", b"torn")
        assert (io.load(cp) / "payload").read_bytes() == b"committed"


def test_load_relists_when_another_writer_pruned_what_it_listed(
    store_url: str, io: IO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load whose listed snapshots were all pruned meanwhile lists again and finds newer ones."""
    with (
        Checkpoint(store_url, storage=Storage(keep=2)) as reader,
        Checkpoint(store_url, storage=Storage(keep=2)) as writer,
    ):
        io.save(writer, b"one")
        io.save(writer, b"two")
        backend = testing.backend(reader)
        stale = backend.entries()
        io.save(writer, b"three")
        io.save(writer, b"four")
        writer.flush_sync()  # retention removed both snapshots the reader listed
        real = backend.entries
        calls: list[int] = []

        def first_stale() -> list:  # type: ignore[type-arg]
            calls.append(1)
            return stale if len(calls) == 1 else real()

        monkeypatch.setattr(backend, "entries", first_stale)
        assert (io.load(reader) / "payload").read_bytes() == b"four"
        assert len(calls) == 2
