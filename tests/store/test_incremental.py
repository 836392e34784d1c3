"""Incremental folder snapshots: a save stores what changed, and every snapshot restores exactly.

The slow, obviously correct twin of a folder snapshot by content is the archive
(``Storage(incremental=False)``): both must restore the same tree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import Checkpoint, CorruptCheckpointError, Storage
from resumable._index import Index, Piece
from resumable._pieces import PACK_TARGET
from resumable._tree import BLOCK, RACY_NS, decode, scan
from resumable.testing import store

from ..conftest import IO

INCREMENTAL = Storage(incremental=True, keep=10)


def tree_of(root: Path) -> dict[str, tuple[object, ...]]:
    """What a restore must reproduce of each entry under ``root``."""
    found: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            st_ = path.lstat()
            if stat.S_ISLNK(st_.st_mode):
                found[rel] = ("link", os.readlink(path), st_.st_mtime_ns)
            elif stat.S_ISDIR(st_.st_mode):
                found[rel] = ("dir", st_.st_mtime_ns)
            else:
                mode = stat.S_IMODE(st_.st_mode) | 0o600
                found[rel] = ("file", path.read_bytes(), mode, st_.st_mtime_ns)
    return found


def make_tree(root: Path) -> None:
    """A folder with every kind of entry a snapshot holds."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-folder").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(BLOCK + 12345))
    (root / "sub" / "deeper" / "zeros.bin").write_bytes(bytes(3 * BLOCK))
    (root / "naïve ünïcode.txt").write_text("text " * 1000)
    run = root / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    os.symlink("small.txt", root / "link-to-file")
    os.symlink("sub/deeper", root / "link-to-folder")
    os.utime(root / "small.txt", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))


def saved_and_loaded(cp: Checkpoint, src: Path, io: IO) -> Path:
    """Save ``src``, then load it in a fresh Checkpoint (which knows nothing in memory)."""
    io.save(cp, src)
    with Checkpoint(cp.uri, storage=cp.storage) as fresh:
        out = io.load(fresh)
        assert out is not None
        copy = src.parent / f"restored-{time.monotonic_ns()}"
        shutil.copytree(out, copy, symlinks=True)
    return copy


def test_every_kind_of_entry_round_trips(store_url: str, tmp_path: Path, io: IO) -> None:
    """Files, empty files, folders, links, modes, nanosecond times and sparse files come back."""
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    with Checkpoint(store_url, storage=INCREMENTAL) as cp:
        io.save(cp, src)
        out = io.load(cp)
        assert out is not None
        assert tree_of(out) == tree_of(src)
        assert store(cp).newest_manifest().compression == "pieces"
        zeros = out / "sub" / "deeper" / "zeros.bin"
        assert zeros.stat().st_blocks * 512 < BLOCK  # restored sparse


def test_a_second_save_stores_only_what_changed(store_url: str, tmp_path: Path) -> None:
    """After one file of many changes, the next snapshot adds about that file's bytes."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.bin").write_bytes(os.urandom(200_000))
    with Checkpoint(store_url, storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        first = store(cp).newest_manifest().extra["added"]
        (src / "f7.bin").write_bytes(os.urandom(200_000))
        cp.save_sync(src)
        second = store(cp).newest_manifest().extra["added"]
        assert first >= 20 * 200_000
        assert 200_000 <= second < 2 * 200_000
        out = cp.load_sync()
        assert out is not None
        assert tree_of(out) == tree_of(src)


def test_unchanged_files_are_not_read(tmp_path: Path) -> None:
    """A file whose size, times and inode match the previous snapshot keeps its pieces unread."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(1000))
    (src / "b").write_bytes(os.urandom(1000))
    stored: list[str] = []

    class Sink:
        def add(self, digest: str, size: int, data: bytes, codec: str) -> object:
            stored.append(digest)
            from resumable._index import Piece

            return Piece(digest, size, "0" * 32 + ".pack", 0, len(data), codec)

    base, facts = scan(src, None, Sink())  # type: ignore[arg-type]
    assert facts.files_read == 2
    long_after = Index(base.scanned_ns + RACY_NS * 10, base.pieces, base.nodes)
    (src / "b").write_bytes(os.urandom(1000))
    again, facts = scan(src, long_after, Sink())  # type: ignore[arg-type]
    assert facts.files_read == 1  # only b
    assert len(stored) == 3
    # Modified within the clock's resolution of the previous scan: read again, to be sure.
    racy = Index(max(n.mtime_ns for n in again.nodes) + 1, again.pieces, again.nodes)
    _, facts = scan(src, racy, Sink())  # type: ignore[arg-type]
    assert facts.files_read == 2
    assert facts.new_pieces == 0  # read, but their pieces were known


def test_a_file_whose_ctime_is_racy_is_read_again_though_its_mtime_is_old(tmp_path: Path) -> None:
    """A file changed (ctime) within the clock's resolution of the previous scan: read again."""
    src = tmp_path / "src"
    src.mkdir()
    f = src / "data.bin"
    f.write_bytes(b"a" * 5000)
    old = f.stat().st_mtime_ns - 10 * RACY_NS
    os.utime(f, ns=(old, old))  # mtime long ago, ctime now
    base, _ = scan(src, None, _KeepingSink())
    ctime = f.stat().st_ctime_ns
    # A scan that began just after that change (on a coarse clock the next change, with its
    # mtime put back, keeps this ctime): nothing but reading tells whether it changed.
    just_after = Index(ctime + 1, base.pieces, base.nodes)
    _, facts = scan(src, just_after, _KeepingSink())
    assert facts.files_read == 1
    long_after = Index(ctime + 10 * RACY_NS, base.pieces, base.nodes)
    _, facts = scan(src, long_after, _KeepingSink())
    assert facts.files_read == 0


def test_a_file_that_changed_is_read_again_even_with_its_old_size_and_time(tmp_path: Path) -> None:
    """Content rewritten with the same size and mtime restored by hand is still saved anew."""
    src = tmp_path / "src"
    src.mkdir()
    f = src / "data.bin"
    f.write_bytes(b"a" * 5000)
    old = f.stat().st_mtime_ns - 10 * RACY_NS
    os.utime(f, ns=(old, old))
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        f.write_bytes(b"b" * 5000)
        os.utime(f, ns=(old, old))  # the ctime still moves: the file is read again
        cp.save_sync(src)
        out = cp.load_sync()
        assert out is not None
        assert (out / "data.bin").read_bytes() == b"b" * 5000


def test_appending_to_a_large_file_stores_the_new_tail(tmp_path: Path) -> None:
    """Fixed blocks: an append stores its last block and the new ones, not the whole file."""
    src = tmp_path / "src"
    src.mkdir()
    log = src / "log.bin"
    log.write_bytes(os.urandom(5 * BLOCK + 100))
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        with log.open("ab") as f:
            f.write(os.urandom(BLOCK))
        cp.save_sync(src)
        added = store(cp).newest_manifest().extra["added"]
        assert added <= 2 * BLOCK + 200
        out = cp.load_sync()
        assert out is not None
        assert (out / "log.bin").read_bytes() == log.read_bytes()


def test_an_archive_snapshot_then_incremental_ones_all_load(tmp_path: Path) -> None:
    """Stores written before incremental snapshots keep loading; a new save builds on nothing."""
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    url = str(tmp_path / "store")
    with Checkpoint(url, storage=Storage(incremental=False)) as cp:
        cp.save_sync(src)
        assert store(cp).newest_manifest().compression == "gzip"
    with Checkpoint(url, storage=INCREMENTAL) as cp:
        out = cp.load_sync()
        assert out is not None
        assert tree_of(out) == tree_of(src)
        (src / "small.txt").write_text("changed")
        cp.save_sync(src)
        out = cp.load_sync()
        assert out is not None
        assert tree_of(out) == tree_of(src)
    with Checkpoint(url, storage=Storage(incremental=False)) as cp:
        out = cp.load_sync()  # reading needs no option: the manifest says what it is
        assert out is not None
        assert tree_of(out) == tree_of(src)


def test_a_background_save_holds_the_folder_as_it_was_at_the_capture(tmp_path: Path) -> None:
    """A frozen capture spools the changes now: what the task writes later is not in it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one")
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        (src / "a.txt").write_text("two")
        captured = cp.capture(src, frozen=True)
        expected = tree_of(src)
        (src / "a.txt").write_text("three, written after the capture")
        (src / "later.txt").write_text("also later")
        cp.commit(captured)
        captured.release()
        out = cp.load_sync()
        assert out is not None
        assert tree_of(out) == expected


def test_clear_removes_the_packs_and_the_folder(tmp_path: Path) -> None:
    """A clear deletes the snapshots, then every pack, then the task's empty folder."""
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    url = tmp_path / "store" / "task"
    with Checkpoint(url, storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        assert (url / "~pieces").is_dir()
        cp.clear_sync()
        assert not url.exists()
        cp.save_sync(src)  # and saves start afresh
        out = cp.load_sync()
        assert out is not None
        assert tree_of(out) == tree_of(src)


def test_a_restore_takes_the_pieces_the_folder_already_holds(tmp_path: Path) -> None:
    """Resuming into a folder that holds the files needs no pack: nothing is downloaded."""
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        for pack in (tmp_path / "store" / "~pieces").iterdir():
            pack.unlink()  # had the restore needed one, it would fail
        info = cp.restore_into(src)
        assert info is not None
        (src / "small.txt").write_text("the folder changed since")
        with pytest.raises(CorruptCheckpointError, match="pack"):
            cp.restore_into(src)  # now a piece must come from the store, which lost it
        assert (src / "small.txt").read_text() == "the folder changed since"  # untouched


def test_a_restore_over_a_large_file_it_holds_reads_it_a_piece_at_a_time(tmp_path: Path) -> None:
    """Pieces taken from the folder being replaced are held one at a time, not a file's worth."""
    src = tmp_path / "src"
    src.mkdir()
    weights = os.urandom(24 * BLOCK + 7)
    (src / "weights.bin").write_bytes(weights)
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        for pack in (tmp_path / "store" / "~pieces").iterdir():
            pack.unlink()  # every piece must come from the folder
        tracemalloc.start()
        try:
            assert cp.restore_into(src) is not None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * BLOCK, peak  # a file's worth would be 24 MiB
    assert (src / "weights.bin").read_bytes() == weights


# -- property: random trees, random edits, random piece and pack sizes -------------------

names = st.sampled_from(["a", "b", "c", "d.txt", "e f", "ü"])
contents = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, b: b * n, st.integers(0, 3000), st.binary(min_size=1, max_size=3)),
)
edits = st.lists(
    st.tuples(
        st.sampled_from(["write", "append", "delete", "mkdir", "link", "chmod"]),
        st.lists(names, min_size=1, max_size=3),
        contents,
    ),
    max_size=8,
)


def apply(root: Path, edit: tuple[str, list[str], bytes]) -> None:
    """One random change to the tree (impossible ones are skipped)."""
    kind, parts, data = edit
    path = root.joinpath(*parts)
    parent = path.parent
    if not parent.is_dir() or parent.is_symlink():
        return
    exists = path.is_symlink() or path.exists()
    if kind == "write" and (not exists or path.is_file()) and not path.is_symlink():
        path.write_bytes(data)
    elif kind == "append" and path.is_file() and not path.is_symlink():
        with path.open("ab") as f:
            f.write(data)
    elif kind == "delete" and exists:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    elif kind == "mkdir" and not exists:
        path.mkdir()
    elif kind == "link" and not exists:
        os.symlink(parts[0], path) if len(parts) == 1 else os.symlink("..", path)
    elif kind == "chmod" and path.is_file() and not path.is_symlink():
        path.chmod(0o755 if data[:1] == b"x" else 0o644)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rounds=st.lists(edits, min_size=1, max_size=4),
    block=st.integers(1, 700),
    pack=st.integers(1, 5000),
)
def test_random_trees_and_edits_restore_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    rounds: list[list[tuple[str, list[str], bytes]]],
    block: int,
    pack: int,
) -> None:
    """Every snapshot of a folder edited at random restores exactly, as the archive twin does."""
    base = tmp_path_factory.mktemp("prop")
    src = base / "src"
    src.mkdir()
    with (
        mock.patch("resumable._tree.BLOCK", block),
        mock.patch("resumable._pieces.PACK_TARGET", pack),
        Checkpoint(base / "inc", storage=INCREMENTAL) as inc,
        Checkpoint(base / "tar", storage=Storage(incremental=False)) as tar,
    ):
        for round_ in rounds:
            for edit in round_:
                apply(src, edit)
            expected = tree_of(src)
            inc.save_sync(src)
            tar.save_sync(src)
            with Checkpoint(inc.uri, storage=INCREMENTAL) as fresh:
                out = fresh.load_sync()
                assert out is not None
                assert tree_of(out) == expected
            twin = tar.load_sync()
            assert twin is not None
            assert tree_of(twin) == expected
    assert PACK_TARGET == 16 << 20  # the patch is gone


def test_saved_and_loaded_helper_copies(tmp_path: Path, io: IO) -> None:
    """A fresh Checkpoint loads what another one saved (no knowledge kept in memory)."""
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        copy = saved_and_loaded(cp, src, io)
    assert tree_of(copy) == tree_of(src)


@contextlib.contextmanager
def short_reads(cap: int | None) -> Iterator[None]:
    """Make ``os.pread`` and ``os.preadv`` return at most ``cap`` bytes a call (None: as is)."""
    if cap is None:
        yield
        return
    pread, preadv = os.pread, os.preadv

    def short_pread(fd: int, n: int, at: int) -> bytes:
        return pread(fd, min(n, cap), at)

    def short_preadv(fd: int, buffers: list[memoryview], at: int) -> int:
        return preadv(fd, [buffers[0][:cap]], at)

    with mock.patch("os.pread", short_pread), mock.patch("os.preadv", short_preadv):
        yield


class _KeepingSink:
    """A sink that keeps each piece's bytes as it was handed them (no copy)."""

    def __init__(self) -> None:
        self.kept: dict[str, tuple[Piece, object]] = {}

    def add(self, digest: str, size: int, data: bytes, codec: str) -> Piece:
        piece = Piece(digest, size, "0" * 32 + ".pack", 0, len(data), codec)
        self.kept[digest] = (piece, data)
        return piece


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 2500), min_size=1, max_size=5),
    grow=st.lists(st.integers(0, 900), min_size=5, max_size=5),
    block=st.integers(1, 400),
    batch=st.integers(1, 1500),
    ahead=st.integers(0, 3),
    span=st.integers(1, 5),
    cap=st.none() | st.integers(1, 40),
)
def test_pieces_are_the_blocks_read_whatever_the_buffers_batches_and_read_ahead(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    grow: list[int],
    block: int,
    batch: int,
    ahead: int,
    span: int,
    cap: int | None,
) -> None:
    """A scan's pieces are each file's blocks, kept whole while read buffers are reused.

    With ``cap``, every read returns at most that many bytes (short reads, as a network
    filesystem gives): the blocks must come out the same.
    """
    root = tmp_path_factory.mktemp("blocks")
    files = {f"f{i}.bin": os.urandom(n) for i, n in enumerate(sizes)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    with (
        mock.patch("resumable._tree.BLOCK", block),
        mock.patch("resumable._tree._BATCH_BYTES", batch),
        mock.patch("resumable._tree._AHEAD", ahead),
        mock.patch("resumable._tree._SPAN", span),
        short_reads(cap),
    ):
        sink = _KeepingSink()
        base, _ = scan(root, None, sink)
        first = dict(files)
        for (name, data), extra in zip(list(files.items()), grow, strict=False):
            if extra:  # appended to: read again, its old blocks known, the tail new
                files[name] = data + os.urandom(extra)
                with (root / name).open("ab") as f:
                    f.write(files[name][len(data) :])
        index, _ = scan(root, base, sink)
    for scanned, content in ((base, first), (index, files)):
        assert sorted(n.path for n in scanned.nodes) == sorted(content)
        for node in scanned.nodes:
            data = content[node.path]
            pieces = [scanned.pieces[i] for i in node.pieces]
            expected = [data[i : i + block] for i in range(0, len(data), block)]
            assert [p.digest for p in pieces] == [blake3(b).hexdigest() for b in expected]
            for p in pieces:  # every piece as stored, still whole once the scans are done
                kept, stored = sink.kept[p.digest]
                assert blake3(decode(kept, bytes(stored))).hexdigest() == p.digest
