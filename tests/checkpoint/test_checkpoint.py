"""Checkpoint round trips, workspace rules and errors, on every store and through both twins."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import blake3
import pytest
import tenacity

from resumable import (
    Captured,
    Checkpoint,
    ConfigurationError,
    ResumableError,
    RetryPolicy,
    SourceNotFoundError,
    Storage,
    UnsafeSymlinkError,
    UnsupportedDataError,
)

from ..conftest import IO, read_object, store_files


def make_tree(root: Path) -> Path:
    """A small folder with nested files, an empty file, an empty folder and an inner link."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "empty.bin").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (root / "sub" / "deeper" / "c.txt").write_text("gamma" * 1000)
    (root / "link").symlink_to("sub/b.bin")
    return root


def tree_of(root: Path) -> dict[str, bytes | str | None]:
    """Every entry under ``root``: file bytes, link targets, or None for folders."""
    out: dict[str, bytes | str | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "->" + os.readlink(p)
        elif p.is_dir():
            out[rel] = None
        else:
            out[rel] = p.read_bytes()
    return out


def test_nothing_saved_loads_none(store_url: str, io: IO) -> None:
    """A checkpoint where nothing was saved loads as None."""
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None


def test_bytes_round_trip(store_url: str, io: IO) -> None:
    """Saved bytes come back as <root>/payload, and load returns the root folder."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"hello")
        root = io.load(cp)
        assert root == cp.path
        assert root.is_dir()
        assert (root / "payload").read_bytes() == b"hello"


def test_empty_bytes_is_a_snapshot(store_url: str, io: IO) -> None:
    """b"" is a snapshot, distinct from nothing saved."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"")
        root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b""


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 64 * 1024 + 1, 3 * 2**20 + 7])
def test_file_round_trip(store_url: str, io: IO, tmp_path: Path, size: int) -> None:
    """A file of any size (inline or not) comes back byte for byte as <root>/payload."""
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(size))
    with Checkpoint(store_url) as cp:
        io.save(cp, str(src))  # a str is a path, not data
        root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_directory_round_trip(store_url: str, io: IO, tmp_path: Path, compression: str) -> None:
    """A folder is extracted at the root: files, empty files and folders, inner links."""
    src = make_tree(tmp_path / "src")
    with Checkpoint(store_url, storage=Storage(compression=compression)) as cp:  # type: ignore[arg-type]
        io.save(cp, src)
        root = io.load(cp)
        assert root is not None
        assert tree_of(root) == tree_of(src)


def test_newest_snapshot_wins_without_stale_cache(store_url: str, io: IO) -> None:
    """A later load after more saves returns the newer state."""
    with Checkpoint(store_url) as cp:
        for i in range(4):
            io.save(cp, f"v{i}".encode())
            root = io.load(cp)
            assert (root / "payload").read_bytes() == f"v{i}".encode()


def test_second_checkpoint_reads_what_the_first_wrote(store_url: str, io: IO) -> None:
    """Another Checkpoint object on the same URL sees the committed snapshot."""
    with Checkpoint(store_url) as writer, Checkpoint(store_url) as reader:
        io.save(writer, b"shared")
        assert (io.load(reader) / "payload").read_bytes() == b"shared"


def test_workspace_holds_exactly_the_snapshot(store_url: str, io: IO, tmp_path: Path) -> None:
    """Loading after a folder snapshot leaves no file of the earlier load behind."""
    src = make_tree(tmp_path / "src")
    with Checkpoint(store_url) as cp:
        io.save(cp, src)
        io.load(cp)
        (cp.path / "stray.txt").write_text("left by the user")
        io.save(cp, b"bytes now")
        root = io.load(cp)
        assert sorted(p.name for p in root.iterdir()) == ["payload"]


def test_manifest_records_size_and_digest(store_url: str, io: IO, tmp_path: Path) -> None:
    """The manifest is JSON (format 2) with the payload's byte size and hex blake3."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(200_000))
    with Checkpoint(store_url) as cp:
        io.save(cp, src)
    names = store_files(store_url)
    manifest_name = next(n for n in names if n.endswith(".json"))
    doc = json.loads(read_object(store_url, manifest_name))
    blob = read_object(store_url, doc["blob"])
    assert doc["size"] == len(blob) == 200_000
    assert doc["blake3"] == blake3.blake3(blob).hexdigest()
    assert "sha256" not in doc
    assert doc["kind"] == "file"
    assert doc["format"] == 2


def test_small_payload_is_inlined_in_the_manifest(store_url: str, io: IO) -> None:
    """A small snapshot is one object: its manifest."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"x" * 100)
    assert store_files(store_url) == ["00000000000000000000.json"]


def test_directory_blob_is_a_valid_tar_gz(store_url: str, io: IO, tmp_path: Path) -> None:
    """A gzip folder snapshot is a .tar.gz that standard tools read."""
    src = make_tree(tmp_path / "src")
    (src / "big.bin").write_bytes(os.urandom(300_000) + b"\0" * 300_000)
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        io.save(cp, src)
    blob_name = next(n for n in store_files(store_url) if n.endswith(".blob"))
    out = tmp_path / "blob.tar.gz"
    out.write_bytes(read_object(store_url, blob_name))
    with tarfile.open(out, "r:gz") as tar:
        names = set(tar.getnames())
    assert {"a.txt", "sub/b.bin", "big.bin", "link", "empty-dir"} <= names


def test_compressible_folder_shrinks(store_url: str, io: IO, tmp_path: Path) -> None:
    """Compressible data is deflated; incompressible data is stored, not inflated."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "zeros").write_bytes(b"\0" * 4_000_000)
    (src / "noise").write_bytes(os.urandom(2_000_000))
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        io.save(cp, src)
    doc = json.loads(read_object(store_url, "00000000000000000000.json"))
    assert 2_000_000 < doc["size"] < 2_200_000


def test_close_removes_workspace(store_url: str, io: IO) -> None:
    """close() removes the workspace; a closed checkpoint refuses to load."""
    cp = Checkpoint(store_url)
    io.save(cp, b"x")
    io.load(cp)
    cp.close()
    assert not cp.path.exists()
    with pytest.raises(ResumableError, match="closed"):
        io.load(cp)


def test_with_block_removes_workspace(store_url: str) -> None:
    """Leaving a with block removes the workspace."""
    with Checkpoint(store_url) as cp:
        path = cp.path
        assert path.is_dir()
    assert not path.exists()


def test_garbage_collection_removes_workspace(store_url: str) -> None:
    """A Checkpoint that is garbage collected takes its workspace with it."""
    cp = Checkpoint(store_url)
    path = cp.path
    del cp
    gc.collect()
    assert not path.exists()


def test_unsupported_type_is_a_type_error(store_url: str, io: IO) -> None:
    """Saving something that is neither bytes nor a path is a TypeError that says what to do."""
    with Checkpoint(store_url) as cp, pytest.raises(TypeError, match="bytes, or the path") as exc:
        io.save(cp, 42)
    assert isinstance(exc.value, UnsupportedDataError)
    assert isinstance(exc.value, ResumableError)


def test_missing_path_is_a_file_not_found_error(store_url: str, io: IO, tmp_path: Path) -> None:
    """Saving a path that does not exist is a FileNotFoundError naming the path."""
    missing = tmp_path / "nope"
    with Checkpoint(store_url) as cp, pytest.raises(FileNotFoundError, match="nope") as exc:
        io.save(cp, missing)
    assert isinstance(exc.value, SourceNotFoundError)


def test_symlink_out_of_folder_refused_at_save(store_url: str, io: IO, tmp_path: Path) -> None:
    """A folder with a link pointing outside it is refused, naming the link."""
    src = make_tree(tmp_path / "src")
    (tmp_path / "secret").write_text("outside")
    (src / "sub" / "escape").symlink_to("../../secret")
    with Checkpoint(store_url) as cp:
        with pytest.raises(UnsafeSymlinkError, match="escape"):
            io.save(cp, src)
        assert io.load(cp) is None  # nothing was committed


def test_absolute_symlink_out_of_folder_refused(store_url: str, io: IO, tmp_path: Path) -> None:
    """An absolute link to outside the folder is refused at save time too."""
    src = make_tree(tmp_path / "src")
    (src / "abs").symlink_to("/etc/hostname")
    with Checkpoint(store_url) as cp, pytest.raises(UnsafeSymlinkError, match="abs"):
        io.save(cp, src)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep": 0}, "keep"),
        ({"keep": "2"}, "keep"),
        ({"compression": "zstd"}, "compression"),
        ({"retry": 3}, "retry"),
        ({"limits": {}}, "limits"),
        ({"signing_key": ""}, "signing_key"),
        ({"retry": RetryPolicy(retry_on=tenacity.retry_if_exception_type())}, "strategy"),
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, object], match: str) -> None:
    """Bad storage options raise a ValueError that names the option."""
    with pytest.raises(ConfigurationError, match=match):
        Storage(**kwargs)  # type: ignore[arg-type]


def test_storage_other_than_a_storage_is_refused() -> None:
    """Checkpoint(storage=...) takes a Storage."""
    with pytest.raises(ConfigurationError, match="storage must be a Storage"):
        Checkpoint("memory://x", storage={"keep": 2})  # type: ignore[arg-type]


def test_flat_storage_options_are_deprecated_but_still_work() -> None:
    """Checkpoint(uri, keep=3) still works for one release, with a warning saying what to write."""
    with pytest.warns(DeprecationWarning, match=r"storage=Storage\(keep=\.\.\.\)"):
        cp = Checkpoint("memory://deprecated-keep", keep=3)
    with cp:
        assert cp.storage == Storage(keep=3)
    with pytest.raises(ConfigurationError, match="not beside it"):
        Checkpoint("memory://x", storage=Storage(), keep=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'kep'"):
        Checkpoint("memory://x", kep=3)


def test_clear_and_save_background_have_sync_and_async_twins(store_url: str) -> None:
    """Clear / clear_sync and save_background / save_background_sync do the same thing."""

    async def both(cp: Checkpoint) -> None:
        await cp.save_background(b"async")
        await cp.flush()
        assert (await cp.info()) is not None
        await cp.clear()
        assert not await cp.exists()

    with Checkpoint(store_url) as cp:
        cp.save_background_sync(b"sync")
        cp.flush_sync()
        assert cp.exists_sync()
        cp.clear_sync()
        assert not cp.exists_sync()
        asyncio.run(both(cp))


def test_unknown_protocol_is_a_configuration_error() -> None:
    """A URL whose protocol fsspec does not know is a clear error."""
    with pytest.raises(ConfigurationError, match="nosuchproto"):
        Checkpoint("nosuchproto://bucket/key")


def test_repr_names_the_uri(store_url: str) -> None:
    """repr() shows the URI."""
    with Checkpoint(store_url) as cp:
        assert store_url in repr(cp)


# -- async saves ----------------------------------------------------------------------------------


def test_async_save_copies_a_large_buffer_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``await cp.save(bytearray)`` copies the buffer on an IO thread, and before it returns."""
    loop_thread: list[threading.Thread] = []
    capture_threads: list[threading.Thread] = []
    capture = Checkpoint.capture

    def spy(self: Checkpoint, data: Any, *, frozen: bool = False) -> Captured:
        capture_threads.append(threading.current_thread())
        return capture(self, data, frozen=frozen)

    monkeypatch.setattr(Checkpoint, "capture", spy)
    buffer = bytearray(b"x" * (8 << 20))

    async def main() -> None:
        loop_thread.append(threading.current_thread())
        with Checkpoint(tmp_path) as cp:
            await cp.save(buffer)
            buffer[:4] = b"gone"  # the caller reuses its buffer once save returned
            root = await cp.load()
            assert root is not None
            assert (root / "payload").read_bytes()[:4] == b"xxxx"

    asyncio.run(main())
    assert capture_threads
    assert loop_thread[0] not in capture_threads
