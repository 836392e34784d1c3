"""Verified loads: a bad newest snapshot falls back to the previous valid one.

Folder snapshots are verified before they become visible, and bounded while they stream. A
signed store refuses a tampered folder snapshot before a single byte is extracted. An
unsigned store cannot trust its manifests against an attacker, but it stops extracting as
soon as an archive exceeds the size and member count its manifest records. Either way the
restored tree replaces the destination only once it has verified; a failed restore leaves the
destination as it was.
"""

from __future__ import annotations

import gzip
import io as stdio
import json
import logging
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resumable import Checkpoint, CorruptCheckpointError, ResumableError, Storage, testing

from ..conftest import IO, delete_object, read_object, set_digest, store_files, write_object

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
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
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


# -- folder snapshots, verified before they become visible ----------------------------------------


SECRET = b"signing secret"


def zeros_bomb(size: int) -> bytes:
    """A small .tar.gz that expands to one file of ``size`` zero bytes."""
    buf = stdio.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bomb")
        info.size = size
        tar.addfile(info, stdio.BytesIO(bytes(size)))
    return gzip.compress(buf.getvalue(), 6)


def folder(tmp_path: Path, files: int = 3, size: int = 40_000) -> Path:
    """A folder of random files, too large to be inlined in the manifest."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in range(files):
        (src / f"f{i}").write_bytes(os.urandom(size))
    return src


def manifest(url: str, seq: int) -> dict[str, Any]:
    return dict(json.loads(read_object(url, f"{seq:020d}.json")))


def blob(url: str, seq: int) -> str:
    return next(n for n in store_files(url) if n.startswith(f"{seq:020d}.") and "blob" in n)


def test_folder_manifest_records_tar_size_and_members(
    store_url: str, io: IO, tmp_path: Path
) -> None:
    """A folder snapshot's manifest records its tar stream's size and member count."""
    with Checkpoint(store_url, storage=Storage(incremental=False, compression="gzip")) as cp:
        io.save(cp, folder(tmp_path, files=3))
    doc = manifest(store_url, 0)
    assert doc["members"] == 3
    assert doc["raw_size"] % 512 == 0
    assert doc["raw_size"] >= 3 * 40_000


def test_signed_store_refuses_a_swapped_payload_before_extracting(
    store_url: str, io: IO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed manifest whose payload was swapped is refused before anything is extracted."""
    import resumable._restore as restore_module

    extracted: list[Path] = []
    real = restore_module.extract_tar

    def spy(chunks: Any, dest: Path, *args: Any) -> None:
        extracted.append(dest)
        real(chunks, dest, *args)

    monkeypatch.setattr(restore_module, "extract_tar", spy)
    with Checkpoint(store_url, storage=Storage(incremental=False, signing_key=SECRET)) as cp:
        io.save(cp, b"previous")
        io.save(cp, folder(tmp_path))
        write_object(store_url, blob(store_url, 1), zeros_bomb(8 << 20))  # no key needed
        root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"previous"
    assert extracted == []


def test_unsigned_archive_longer_than_recorded_is_stopped_mid_stream(
    store_url: str, io: IO, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An archive longer than its manifest records is refused as soon as it exceeds it.

    The attacker rewrites the payload *and* its digest (nothing stops that without a key):
    extraction still stops at the recorded size, long before the 64 MiB file is written.
    """
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        io.save(cp, b"previous")
        io.save(cp, folder(tmp_path))
        bomb = zeros_bomb(64 << 20)
        write_object(store_url, blob(store_url, 1), bomb)
        doc = manifest(store_url, 1)
        set_digest(doc, bomb)
        write_object(store_url, f"{1:020d}.json", json.dumps(doc).encode())
        with caplog.at_level(logging.WARNING, logger="resumable"):
            root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"previous"
    assert "longer than the" in caplog.text


def test_unsigned_archive_with_more_members_than_recorded_is_refused(
    store_url: str, io: IO, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An archive holding more members than its manifest records is refused."""
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        io.save(cp, b"previous")
        io.save(cp, folder(tmp_path, files=3))
        doc = manifest(store_url, 1)
        doc["members"] = 2
        write_object(store_url, f"{1:020d}.json", json.dumps(doc).encode())
        with caplog.at_level(logging.WARNING, logger="resumable"):
            root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"previous"
    assert "more than the 2 members" in caplog.text


def test_failed_restore_leaves_the_destination_as_it_was(store_url: str, tmp_path: Path) -> None:
    """A folder snapshot that fails verification never touches the destination folder."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_bytes(b"untouched")
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        cp.save_sync(folder(tmp_path))
        name = blob(store_url, 0)
        data = bytearray(read_object(store_url, name))
        data[-100] ^= 1  # found only at the very end of the stream
        write_object(store_url, name, bytes(data))
        with pytest.raises(CorruptCheckpointError):
            cp.restore_into(dest)
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]
    assert (dest / "mine.txt").read_bytes() == b"untouched"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".dest.")] == []


def test_successful_restore_replaces_the_destination_whole(store_url: str, tmp_path: Path) -> None:
    """A verified restore replaces what the destination held, and keeps its permissions."""
    src = folder(tmp_path, files=2)
    dest = tmp_path / "dest"
    dest.mkdir(mode=0o750)
    dest.chmod(0o750)
    (dest / "stale.txt").write_bytes(b"old")
    with Checkpoint(store_url) as cp:
        cp.save_sync(src)
        m = cp.restore_into(dest)
    assert m is not None
    assert m.seq == 0
    assert sorted(p.name for p in dest.iterdir()) == ["f0", "f1"]
    assert (dest / "f0").read_bytes() == (src / "f0").read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o750
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".dest.")] == []
