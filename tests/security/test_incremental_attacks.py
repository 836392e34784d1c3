"""Breaking incremental folder snapshots on purpose: hand-edited stores, hostile folders, races.

Each test plays an attacker who can write the store, or a careless user, against one promise:
a forged or damaged snapshot is refused and the load falls back; a folder holding what cannot
be saved is refused without hanging; a folder that changes while it is saved never makes a
snapshot that lies; a restore never reads or writes outside its folder; and a folder by content
restores exactly what its archive twin (``Storage(incremental=False)``) restores.

A test marked ``xfail(strict=True)`` pins a bug that is not fixed yet: its reason names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resumable._archive
import resumable._tree
from resumable import (
    Checkpoint,
    ConcurrentWriterError,
    ConfigurationError,
    CorruptCheckpointError,
    ResumableError,
    Storage,
    UnsafeSymlinkError,
    UnsupportedDataError,
)
from resumable._gc import collect_garbage
from resumable._index import Index, Piece
from resumable._inspect import open_store
from resumable._manifest import PIECES_FORMAT, Manifest, sign
from resumable._names import blob_name, manifest_name
from resumable._stream import Digest
from resumable.testing import store

INCREMENTAL = Storage(incremental=True, keep=10)
ARCHIVE = Storage(incremental=False, keep=10)
#: How long a call that must not block may take before the test calls it hung (never slept).
HUNG_AFTER = 10.0


# -- helpers ----------------------------------------------------------------------------------


def digest(data: bytes) -> str:
    """The piece digest of ``data``."""
    d = Digest()
    d.update(data)
    return d.hexdigest()


def pieces_folder(cp: Checkpoint) -> Path:
    """The task's folder of packs (local stores only)."""
    return Path(cp.uri) / "~pieces"


def pack_files(cp: Checkpoint) -> set[str]:
    """The names of the objects in the task's folder of packs."""
    folder = pieces_folder(cp)
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def manifests(cp: Checkpoint) -> list[str]:
    """The manifests of the task's folder, sorted."""
    return sorted(p.name for p in Path(cp.uri).glob("*.json"))


def forge(cp: Checkpoint, data: bytes, raw_size: int, members: int) -> int:
    """Commit ``data`` as the index of a new newest format 3 snapshot, as a store's writer could.

    The manifest is made by hand (not through a save), so every check a load runs on an index
    is the one refusing it. Returns its number.
    """
    s = store(cp)
    seq = (s.newest_seq() or 0) + 1
    token = secrets.token_hex(8)
    blob = None
    if len(data) > 32 << 10:  # too large to inline: its own object, as a save writes it
        blob = blob_name(seq, token)
        writer = s.backend.writer(blob)
        writer.write(data)
        writer.commit()
    m = Manifest(
        seq=seq,
        kind="dir",
        size=len(data),
        digest=digest(data),
        compression="pieces",
        blob=blob,
        inline=None if blob else data,
        created=time.time(),
        attempt=0,
        writer=token,
        format=PIECES_FORMAT,
    )
    m.extra.update({"raw_size": raw_size, "members": members})
    sign(m, s.signing_key, s.name)
    s.backend.create_exclusive(manifest_name(seq), m.to_json())
    return seq


def doc(nodes: list[list[Any]], packs: list[str], pieces: list[list[Any]]) -> dict[str, Any]:
    """An index document."""
    return {"version": 1, "scanned_ns": 0, "packs": packs, "pieces": pieces, "nodes": nodes}


def forge_doc(cp: Checkpoint, document: dict[str, Any]) -> int:
    """Commit an index document with the sizes and counts it declares (they match)."""
    nodes = document["nodes"]
    size = sum(n[4] for n in nodes if isinstance(n, list) and len(n) > 4 and n[1] == "f")
    return forge(cp, json.dumps(document).encode(), size, len(nodes))


def file_node(path: str, size: int, refs: list[int], mtime_ns: int = 0) -> list[Any]:
    """A file entry of an index document."""
    return [path, "f", 0o644, mtime_ns, size, None, refs, None]


def plant_pack(cp: Checkpoint, data: bytes) -> str:
    """A pack holding ``data`` in the task's pieces folder; its name."""
    name = os.urandom(16).hex() + ".pack"
    pieces_folder(cp).mkdir(exist_ok=True)
    (pieces_folder(cp) / name).write_bytes(data)
    return name


def newest_index(cp: Checkpoint) -> Index:
    """The index of the task's newest snapshot."""
    s = store(cp)
    index = s.read_index(s.newest_seq())
    assert index is not None
    return index


def loads_the_good_one(cp: Checkpoint, tmp_path: Path) -> None:
    """The load falls back to the good snapshot, and nothing appeared outside the store."""
    before = set(tmp_path.iterdir())
    out = cp.load_sync()
    assert out is not None
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert (out / "a.txt").read_text() == "good"
    assert set(tmp_path.iterdir()) == before


def bounded(call: Callable[[], object], unblock: Callable[[], None]) -> tuple[bool, object]:
    """Run ``call`` on a thread: whether it ended within ``HUNG_AFTER``, and what it returned.

    A call still running then is hung: ``unblock`` frees it (the test must not hang too), and
    what it then returned or raised is returned. Waits on an event: nothing sleeps.
    """
    done = threading.Event()
    result: list[object] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed back to the test
            result.append(exc)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    in_time = done.wait(HUNG_AFTER)
    if not in_time:
        unblock()
        thread.join()
    return in_time, result[0]


def open_fifo_for_writing(path: Path) -> Callable[[], None]:
    """What frees a reader blocked opening the FIFO at ``path``: a writer that comes and goes."""

    def unblock() -> None:
        os.close(os.open(path, os.O_WRONLY))

    return unblock


def tree_of(root: Path) -> dict[bytes, tuple[object, ...]]:
    """What a restore must reproduce of each entry under ``root`` (names as bytes)."""
    found: dict[bytes, tuple[object, ...]] = {}
    top = os.fsencode(root)
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, top)
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                found[rel] = ("dir", st_.st_mtime_ns)
            else:
                with open(path, "rb") as f:
                    content = f.read()
                found[rel] = ("file", content, stat.S_IMODE(st_.st_mode) | 0o600, st_.st_mtime_ns)
    return found


def restored(cp: Checkpoint) -> dict[bytes, tuple[object, ...]]:
    """The tree a fresh Checkpoint (knowing nothing in memory) loads from ``cp``'s store."""
    with Checkpoint(cp.uri, storage=cp.storage) as fresh:
        out = fresh.load_sync()
        assert out is not None
        return tree_of(out)


@pytest.fixture(name="good")
def _good(tmp_path: Path) -> Iterator[tuple[Checkpoint, Path]]:
    """A store holding one good folder snapshot, and the folder it holds."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("good")
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        yield cp, src


# -- a hand-edited store -----------------------------------------------------------------------


def test_an_index_nested_too_deep_falls_back(good: tuple[Checkpoint, Path], tmp_path: Path) -> None:
    """An index of 100,000 nested lists is malformed (no crash, no recursion): falls back."""
    cp, _ = good
    forge(cp, b"[" * 100_000 + b"]" * 100_000, 0, 0)
    with pytest.raises(CorruptCheckpointError, match="malformed"):
        store(cp).verify(store(cp).newest_seq())
    loads_the_good_one(cp, tmp_path)


def test_an_index_that_is_not_utf8_falls_back(
    good: tuple[Checkpoint, Path], tmp_path: Path
) -> None:
    """An index whose bytes are not UTF-8 is malformed: falls back."""
    cp, _ = good
    forged = json.dumps(doc([["X", "d", 0o755, 0, 0, None, [], None]], [], [])).encode()
    forge(cp, forged.replace(b'"X"', b'"\xff\xfe"'), 0, 1)
    with pytest.raises(CorruptCheckpointError, match="malformed"):
        store(cp).verify(store(cp).newest_seq())
    loads_the_good_one(cp, tmp_path)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        pytest.param(lambda d: d["pieces"][0].__setitem__(0, 10**30), "malformed", id="pack-no"),
        pytest.param(lambda d: d["pieces"][0].__setitem__(1, 10**30), "cut short", id="offset"),
        pytest.param(lambda d: d["pieces"][0].__setitem__(1, 4), "cut short", id="offset-at-end"),
        pytest.param(lambda d: d["pieces"][0].__setitem__(1, 1), "cut short", id="offset-past"),
        pytest.param(lambda d: d["pieces"][0].__setitem__(1, -1), "malformed", id="offset-neg"),
        pytest.param(lambda d: d["pieces"][0].__setitem__(2, 2**80), "malformed", id="stored"),
        pytest.param(lambda d: d["nodes"][0].__setitem__(3, 10**30), "time", id="mtime"),
        pytest.param(lambda d: d["nodes"][0].__setitem__(3, -(10**30)), "time", id="mtime-neg"),
        pytest.param(lambda d: d["nodes"][0].__setitem__(2, 2**64), "malformed", id="mode"),
        pytest.param(lambda d: d["nodes"][0].__setitem__(6, [0, 10**30]), "malformed", id="ref"),
        pytest.param(
            lambda d: d["nodes"][0].__setitem__(7, [2**70, -1, 2]), "malformed", id="stat"
        ),
        pytest.param(lambda d: d.__setitem__("scanned_ns", -1), "malformed", id="scanned"),
        pytest.param(lambda d: d.__setitem__("version", 2), "malformed", id="version"),
        pytest.param(lambda d: d.__setitem__("packs", d["packs"] * 2), "", id="pack-twice"),
    ],
)
def test_absurd_numbers_in_an_index_fall_back(
    good: tuple[Checkpoint, Path],
    tmp_path: Path,
    mutate: Callable[[dict[str, Any]], None],
    why: str,
) -> None:
    """Huge or negative counts, offsets past the pack, absurd times: refused, load falls back."""
    cp, _ = good
    pack = plant_pack(cp, b"abcd")
    document = doc([file_node("f", 4, [0])], [pack], [[0, 0, 4, 4, "raw", digest(b"abcd")]])
    mutate(document)
    forge(cp, json.dumps(document).encode(), 4, 1)
    if why:
        with pytest.raises(CorruptCheckpointError, match=why):
            store(cp).verify(store(cp).newest_seq())
        loads_the_good_one(cp, tmp_path)
    else:  # a pack listed twice is harmless: the snapshot is what it says
        out = cp.load_sync()
        assert out is not None
        assert (out / "f").read_bytes() == b"abcd"


def test_a_piece_said_to_be_in_another_pack_falls_back(
    good: tuple[Checkpoint, Path], tmp_path: Path
) -> None:
    """A real piece whose index names another real pack of the task: its digest fails there."""
    cp, src = good
    first = pack_files(cp)
    (src / "a.txt").write_text("newer, in a pack of its own")
    cp.save_sync(src)
    (other,) = first
    (mine,) = pack_files(cp) - first
    document = json.loads(newest_index(cp).to_json())
    assert document["packs"] == [mine]
    document["packs"] = [other]
    forge_doc(cp, document)
    with pytest.raises(CorruptCheckpointError, match=r"digest|cut short"):
        store(cp).verify(store(cp).newest_seq())
    out = cp.load_sync()
    assert out is not None
    assert (out / "a.txt").read_text() == "newer, in a pack of its own"


def test_a_piece_found_in_another_pack_at_the_place_said_restores(
    good: tuple[Checkpoint, Path],
) -> None:
    """Content addressing: a piece named by another pack that does hold its bytes verifies."""
    cp, _ = good
    pack = plant_pack(cp, b"xxxgood")
    document = doc([file_node("a.txt", 4, [0])], [pack], [[0, 3, 4, 4, "raw", digest(b"good")]])
    forge_doc(cp, document)
    assert store(cp).verify(store(cp).newest_seq()) is not None


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder", "hard-link"])
def test_a_pack_replaced_by_what_is_not_a_file_falls_back_at_once(
    good: tuple[Checkpoint, Path], tmp_path: Path, kind: str
) -> None:
    """A pack made a link (even to its own bytes), a FIFO or a folder: refused, no hang."""
    cp, src = good
    before = pack_files(cp)
    (src / "a.txt").write_text("newer")
    cp.save_sync(src)
    (name,) = pack_files(cp) - before
    pack = pieces_folder(cp) / name
    saved = tmp_path / "elsewhere.pack"
    shutil.copyfile(pack, saved)
    pack.unlink()
    if kind == "symlink":
        os.symlink(saved, pack)
    elif kind == "fifo":
        os.mkfifo(pack)
    elif kind == "folder":
        pack.mkdir()
    else:  # a hard link is a regular file with the same bytes: nothing to refuse
        os.link(saved, pack)
    in_time, result = bounded(cp.load_sync, open_fifo_for_writing(pack))
    assert in_time, "the load hung on the pack"
    assert isinstance(result, Path)
    expected = "newer" if kind == "hard-link" else "good"
    assert (result / "a.txt").read_text() == expected
    assert saved.read_bytes()  # the link's target is left alone


def test_pieces_that_are_a_file_refuse_a_save_and_commit_nothing(tmp_path: Path) -> None:
    """``~pieces`` is a file: the save fails, nothing is committed, the file is left alone."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    url = tmp_path / "store"
    with Checkpoint(url, storage=INCREMENTAL) as cp:
        cp.save_sync(b"first")
        (url / "~pieces").write_bytes(b"not a folder")
        with pytest.raises(ResumableError):  # saying the store is not what it must be
            cp.save_sync(src)
        assert manifests(cp) == ["00000000000000000000.json"]
        assert (url / "~pieces").read_bytes() == b"not a folder"


def test_pieces_that_are_a_file_make_the_load_fall_back(tmp_path: Path) -> None:
    """``~pieces`` replaced by a file: the snapshots by content are corrupt, an archive loads."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("good")
    url = tmp_path / "store"
    with Checkpoint(url, storage=ARCHIVE) as cp:
        cp.save_sync(src)
    with Checkpoint(url, storage=INCREMENTAL) as cp:
        (src / "a.txt").write_text("newer")
        cp.save_sync(src)
        shutil.rmtree(url / "~pieces")
        (url / "~pieces").write_bytes(b"not a folder")
        out = cp.load_sync()
        assert out is not None
        assert (out / "a.txt").read_text() == "good"


def test_a_clear_deletes_nothing_outside_the_tasks_folder(tmp_path: Path) -> None:
    """``~pieces`` made a link to another folder: a clear must not delete the files there."""
    other = tmp_path / "another-task" / "~pieces"
    other.mkdir(parents=True)
    theirs = other / ("ab" * 16 + ".pack")
    theirs.write_bytes(b"another task's pieces")
    url = tmp_path / "store"
    url.mkdir()
    os.symlink(other, url / "~pieces")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    with Checkpoint(url, storage=INCREMENTAL) as cp:
        with pytest.raises(ConfigurationError, match="symbolic link"):
            cp.save_sync(src)  # the link is refused, not followed
        with pytest.raises(ConfigurationError, match="symbolic link"):
            cp.clear_sync()
    assert theirs.read_bytes() == b"another task's pieces"


def test_a_file_of_thousands_of_empty_pieces_is_refused(
    good: tuple[Checkpoint, Path], tmp_path: Path
) -> None:
    """A file listed as 5,000 zero-size pieces (no writer makes one): refused, fallback."""
    cp, _ = good
    pack = plant_pack(cp, b"")
    document = doc(
        [file_node("a.txt", 0, [0] * 5000), file_node("b", 0, [0] * 3)],
        [pack],
        [[0, 0, 0, 0, "raw", digest(b"")]],
    )
    forge_doc(cp, document)
    loads_the_good_one(cp, tmp_path)


def test_one_piece_used_by_thousands_of_files_restores_exactly(
    good: tuple[Checkpoint, Path],
) -> None:
    """3,000 files of one shared piece (one use each, as a writer dedupes) restore exactly."""
    cp, _ = good
    data = b"shared piece "
    pack = plant_pack(cp, zlib.compress(data, 1)[2:-4])  # a raw deflate stream
    stored = len(zlib.compress(data, 1)[2:-4])
    nodes = [["d", "d", 0o755, 0, 0, None, [], None]]
    nodes += [file_node(f"d/{i:04}", len(data), [0]) for i in range(3000)]
    forge_doc(cp, doc(nodes, [pack], [[0, 0, stored, len(data), "deflate", digest(data)]]))
    out = cp.load_sync()
    assert out is not None
    assert all(p.read_bytes() == data for p in (out / "d").iterdir())
    assert len(list((out / "d").iterdir())) == 3000


def test_a_tiny_piece_used_a_million_times_is_refused_before_writing(
    good: tuple[Checkpoint, Path], tmp_path: Path
) -> None:
    """One 13-byte piece 100,000 times in a file: more uses than any writer makes, refused."""
    cp, _ = good
    data = b"shared piece "
    pack = plant_pack(cp, data)
    uses = 100_000
    node = file_node("a.txt", uses * len(data), [0] * uses)
    forge_doc(cp, doc([node], [pack], [[0, 0, len(data), len(data), "raw", digest(data)]]))
    loads_the_good_one(cp, tmp_path)


@pytest.mark.parametrize(
    "paths",
    [
        pytest.param(["a", "a/"], id="trailing-slash"),
        pytest.param(["a", "./a"], id="dot"),
        pytest.param(["d", "d//x", "d/x"], id="double-slash"),
        pytest.param(["d", "d/x", "d/./x"], id="dot-inside"),
        pytest.param(["d", "d/../d"], id="dotdot-back"),
    ],
)
def test_paths_that_name_one_entry_twice_are_refused(
    good: tuple[Checkpoint, Path], tmp_path: Path, paths: list[str]
) -> None:
    """Overlapping spellings of one path (``a`` and ``a/``, ``d//x``): refused, falls back."""
    cp, _ = good
    nodes = [[p, "d", 0o755, 0, 0, None, [], None] for p in paths]
    forge_doc(cp, doc(nodes, [], []))
    with pytest.raises(CorruptCheckpointError):
        store(cp).verify(store(cp).newest_seq())
    loads_the_good_one(cp, tmp_path)


def test_a_save_after_a_load_that_fell_back_is_whole(tmp_path: Path) -> None:
    """A pack of the newest snapshot lost: the save after the fallback load restores whole."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"first step")
    url = tmp_path / "store"
    with Checkpoint(url, storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        before = pack_files(cp)
        (src / "b").write_bytes(os.urandom(1000))  # the second step's output
        cp.save_sync(src)
        for name in pack_files(cp) - before:
            (url / "~pieces" / name).unlink()  # bit rot, a hand clean-up, a bad copy...
    with Checkpoint(url, storage=INCREMENTAL) as cp:  # a new process resumes
        out = cp.load_sync()
        assert out is not None
        assert sorted(p.name for p in out.iterdir()) == ["a"]  # fell back
        cp.save_sync(src)  # the second step done again, with the same output
        assert store(cp).verify(store(cp).newest_seq()) is not None


def test_a_signed_store_never_builds_on_an_unsigned_index(tmp_path: Path) -> None:
    """A forged unsigned index above the signed ones: the next save neither fails nor uses it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("good")
    url = tmp_path / "store"
    signed = Storage(incremental=True, signing_key=b"k" * 32, keep=10)
    with Checkpoint(url, storage=signed) as cp:
        cp.save_sync(src)
    with Checkpoint(url, storage=INCREMENTAL) as forger:
        pack = plant_pack(forger, b"evil")
        forged = doc([file_node("a.txt", 4, [0])], [pack], [[0, 0, 4, 4, "raw", digest(b"good")]])
        forge_doc(forger, forged)  # claims the piece of "good" lives in its pack
    with Checkpoint(url, storage=signed) as cp:  # a new process: it asks for the newest
        (src / "b.txt").write_text("more")
        cp.save_sync(src)
        assert pack not in newest_index(cp).packs()
        assert restored(cp) == tree_of(src)


def test_a_folder_save_after_bytes_outlived_its_base_stores_afresh(tmp_path: Path) -> None:
    """Folder, then bytes until the folder's packs are collected, then the folder: it saves."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1000))
    with (
        mock.patch("resumable._pieces.PACK_GRACE", 0.0),  # as if ten minutes passed
        Checkpoint(tmp_path / "store", storage=Storage(incremental=True, keep=1)) as cp,
    ):
        cp.save_sync(src)
        for step in range(2):  # the folder's snapshot is dropped, then its packs deleted
            cp.save_sync(b"step %d" % step)
            cp.flush_sync()
        assert not pack_files(cp)
        cp.save_sync(src)
        assert restored(cp) == tree_of(src)


def test_a_save_outliving_gcs_grace_never_commits_a_snapshot_without_its_packs(
    tmp_path: Path,
) -> None:
    """``resumable gc`` runs two hours into a long save: the save fails or its snapshot loads."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):  # more than the blocks hashed ahead: packs are written by "victim"
        (src / f"f{i:02}.bin").write_bytes(os.urandom(1_500_000))
    (src / "victim").write_bytes(b"the last file")
    url = tmp_path / "store" / "task"

    def gc_two_hours_later(path: Path) -> None:
        assert pack_files(cp)  # the save's first packs are written
        report = collect_garbage(
            open_store(str(url.parent)), grace=3600.0, now=time.time() + 7200, dry_run=False
        )
        assert report.removed

    with (
        mock.patch("resumable._pieces.PACK_TARGET", 1 << 20),
        mock.patch.object(resumable._tree, "walk", walk_then(gc_two_hours_later)),
        Checkpoint(url, storage=INCREMENTAL) as cp,
        contextlib.suppress(ResumableError),  # giving up would be right too
    ):
        cp.save_sync(src)
    if manifests(cp):
        assert restored(cp) == tree_of(src)


# -- what a saved folder may hold -------------------------------------------------------------


@pytest.mark.parametrize("storage", [INCREMENTAL, ARCHIVE], ids=["incremental", "archive"])
def test_names_with_backslashes_round_trip_as_names(tmp_path: Path, storage: Storage) -> None:
    """A backslash is part of a name: the file and the link come back as they were."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "run\\log.txt").write_text("hello")
    (src / "a\\b").symlink_to("run\\log.txt")
    with Checkpoint(tmp_path / "store", storage=storage) as cp:
        cp.save_sync(src)
        assert restored(cp) == tree_of(src)
        assert sorted(restored(cp)) == [b"a\\b", b"run\\log.txt"]


@pytest.mark.parametrize(
    "nodes",
    [
        [["n" * 256, "d", 0o755, 0, 0, None, [], None]],
        [["x" * 200 + "/" + "y" * 256, "d", 0o755, 0, 0, None, [], None]],
        [["/".join(["d" * 200] * (i + 1)), "d", 0o755, 0, 0, None, [], None] for i in range(21)],
        [["link", "l", 0o777, 0, 0, "t" * 4096, [], None]],
    ],
    ids=["long-name", "long-name-below", "path-over-4095-bytes", "long-link-target"],
)
def test_names_no_filesystem_holds_make_a_snapshot_corrupt(
    tmp_path: Path, nodes: list[list[Any]]
) -> None:
    """Names, paths or link targets longer than a filesystem holds: refused, the last good loads."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("good")
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        forge_doc(cp, doc(nodes, [], []))
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        out = cp.load_sync()  # the forged one is skipped, not a storage error
        assert out is not None
        assert sorted(p.name for p in out.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("storage", [INCREMENTAL, ARCHIVE], ids=["incremental", "archive"])
def test_links_inside_the_folder_round_trip(tmp_path: Path, storage: Storage) -> None:
    """Links to a file, to a folder, to the root and dangling ones inside come back as links."""
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "file.txt").write_text("target")
    os.symlink("file.txt", src / "to-file")
    os.symlink("sub/deeper", src / "to-folder")
    os.symlink("..", src / "sub" / "to-root")
    os.symlink("not-there", src / "dangling")
    os.symlink("sub/../file.txt", src / "through-dotdot")
    with Checkpoint(tmp_path / "store", storage=storage) as cp:
        cp.save_sync(src)
        got = restored(cp)
    assert got[b"to-file"] == ("link", b"file.txt")
    assert got[b"to-folder"] == ("link", b"sub/deeper")
    assert got[b"sub/to-root"] == ("link", b"..")
    assert got[b"dangling"] == ("link", b"not-there")
    assert got[b"through-dotdot"] == ("link", b"file.txt")  # normalised, same file


@pytest.mark.parametrize(
    "target",
    ["/etc/passwd", "../outside.txt", "sub/../../outside.txt", "/nonexistent/dangling", "..", "/"],
)
@pytest.mark.parametrize("storage", [INCREMENTAL, ARCHIVE], ids=["incremental", "archive"])
def test_a_link_out_of_the_folder_is_refused(tmp_path: Path, target: str, storage: Storage) -> None:
    """A link leaving the folder (existing or dangling): refused, nothing committed."""
    (tmp_path / "outside.txt").write_text("outside")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    os.symlink(target, src / "escape")
    with Checkpoint(tmp_path / "store", storage=storage) as cp:
        cp.save_sync(b"before")
        with pytest.raises(UnsafeSymlinkError, match="outside"):
            cp.save_sync(src)
        assert manifests(cp) == ["00000000000000000000.json"]
        assert not pack_files(cp)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_fifo_or_socket_in_the_folder_is_refused_without_hanging(
    tmp_path: Path, kind: str
) -> None:
    """A FIFO (no writer) or a socket in the folder: refused at once, nothing committed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    special = src / "special"
    server = None
    if kind == "fifo":
        os.mkfifo(special)
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(special))
    try:
        with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
            in_time, result = bounded(
                lambda: cp.save_sync(src),
                open_fifo_for_writing(special) if kind == "fifo" else lambda: None,
            )
            assert in_time, "the save hung"
            assert isinstance(result, UnsupportedDataError)
            assert "special" in str(result)
            assert manifests(cp) == []
            assert not pack_files(cp)
    finally:
        if server is not None:
            server.close()


def test_a_refused_save_leaves_no_pack_behind(tmp_path: Path) -> None:
    """A FIFO found after megabytes of new files: the refused save deletes the packs it wrote."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}.bin").write_bytes(os.urandom(1_500_000))
    os.mkfifo(src / "zz-pipe")  # walked last
    with (
        mock.patch("resumable._pieces.PACK_TARGET", 1 << 20),
        Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp,
    ):
        with pytest.raises(UnsupportedDataError):
            cp.save_sync(src)
        assert manifests(cp) == []
        assert not pack_files(cp)


def walk_then(action: Callable[[Path], None]) -> Callable[[Path], Iterator[Any]]:
    """The archive's walk, changing the entry ``victim`` just after it was looked at.

    The race of a task writing its folder while it is saved, made to happen every time: the
    scan has the entry's ``lstat`` and is about to read it.
    """
    walk = resumable._tree.walk

    def changed(root: Path) -> Iterator[Any]:
        for path, rel, st_ in walk(root):
            if rel == "victim":
                action(path)
            yield path, rel, st_

    return changed


def test_a_file_that_grows_while_saved_is_saved_at_its_size_when_seen(tmp_path: Path) -> None:
    """A file appended to once listed: the snapshot holds the bytes it had then, whole."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim").write_bytes(b"0123456789")

    def grow(path: Path) -> None:
        with path.open("ab") as f:
            f.write(b"written later")

    with (
        mock.patch.object(resumable._tree, "walk", walk_then(grow)),
        Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp,
    ):
        cp.save_sync(src)
    assert restored(cp)[b"victim"][1] == b"0123456789"
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:  # not fooled next time
        cp.save_sync(src)
        assert restored(cp)[b"victim"][1] == b"0123456789written later"


def test_a_file_that_shrinks_while_saved_refuses_the_save(tmp_path: Path) -> None:
    """A file truncated once listed: a clear error, and nothing committed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim").write_bytes(b"0123456789")
    with (
        mock.patch.object(resumable._tree, "walk", walk_then(lambda p: os.truncate(p, 2))),
        Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp,
    ):
        with pytest.raises(ResumableError, match=r"victim.*shrank"):
            cp.save_sync(src)
        assert manifests(cp) == []


def open_files() -> int:
    """How many files this process has open."""
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
@pytest.mark.parametrize("tail", [0, 5], ids=["whole-blocks", "with-a-tail"])
@pytest.mark.parametrize("left", [0, 17, -1], ids=["emptied", "one-block-left", "one-byte-short"])
def test_a_large_file_that_shrinks_while_workers_read_it_fails_the_save_and_closes_every_file(
    tmp_path: Path, tail: int, left: int
) -> None:
    """Blocks read on workers find the file shrunk: the save fails, every file is closed."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):  # read before the victim: their blocks are still being read
        (src / f"a{i}.bin").write_bytes(os.urandom(10 * 16))
    size = 12 * 16 + tail
    (src / "victim").write_bytes(os.urandom(size))
    before = open_files()
    with (
        mock.patch("resumable._tree.BLOCK", 16),
        mock.patch("resumable._tree._SPAN", 2),
        mock.patch("resumable._tree._AHEAD", 3),
        mock.patch.object(
            resumable._tree, "walk", walk_then(lambda p: os.truncate(p, left % size))
        ),
        Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp,
    ):
        with pytest.raises(ResumableError, match=r"victim.*shrank"):
            cp.save_sync(src)
        assert manifests(cp) == []
    assert open_files() == before


class _FullDisk:
    """A sink whose pack writes fail after ``ok`` pieces, as on a full disk."""

    def __init__(self, ok: int) -> None:
        self.ok = ok

    def add(self, digest: str, size: int, data: bytes, codec: str) -> Any:
        if self.ok <= 0:
            raise OSError(28, "No space left on device")
        self.ok -= 1
        return Piece(digest, size, "0" * 32 + ".pack", 0, len(data), codec)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40 * 16 + 15), min_size=1, max_size=6),
    ok=st.integers(0, 30),
    span=st.integers(1, 4),
    ahead=st.integers(0, 4),
)
def test_a_scan_that_fails_anywhere_leaves_no_file_open(
    sizes: list[int], ok: int, span: int, ahead: int
) -> None:
    """Pack writes failing after any number of pieces: the scan fails, with every file closed."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for i, size in enumerate(sizes):
            (root / f"f{i}").write_bytes(os.urandom(size))
        before = open_files()
        with (
            mock.patch("resumable._tree.BLOCK", 16),
            mock.patch("resumable._tree._SPAN", span),
            mock.patch("resumable._tree._AHEAD", ahead),
        ):
            failed = None
            try:
                resumable._tree.scan(root, None, _FullDisk(ok))
            except OSError as exc:
                failed = exc.errno
        assert failed in (None, 28)
        assert open_files() == before


def test_a_file_replaced_by_a_link_out_while_saved_is_never_followed(tmp_path: Path) -> None:
    """A file swapped for a link to a secret once listed: its bytes never reach the store."""
    (tmp_path / "secret").write_bytes(b"SECRET BYTES")
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim").write_bytes(b"0123456789")

    def to_link(path: Path) -> None:
        path.unlink()
        os.symlink(tmp_path / "secret", path)

    with (
        mock.patch.object(resumable._tree, "walk", walk_then(to_link)),
        Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp,
        pytest.raises(UnsafeSymlinkError),  # the retried save saw the link
    ):
        cp.save_sync(src)
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert b"SECRET" not in path.read_bytes()


@pytest.mark.parametrize("storage", [INCREMENTAL, ARCHIVE], ids=["incremental", "archive"])
def test_a_folder_replaced_by_a_link_out_while_saved_is_never_followed(
    tmp_path: Path, storage: Storage
) -> None:
    """A folder swapped for a link to a secret folder once listed: no secret reaches the store."""
    secret = os.urandom(4000)  # random: stored as it is, found as it is
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_bytes(secret)
    src = tmp_path / "src"
    (src / "victim").mkdir(parents=True)
    (src / "victim" / "key").write_bytes(b"harmless")

    def to_link(path: Path) -> None:
        path.rename(tmp_path / "moved-away")
        os.symlink(tmp_path / "secrets", path)

    changed = walk_then(to_link)  # the archive's walk is the scan's
    with (
        mock.patch.object(resumable._tree, "walk", changed),
        mock.patch.object(resumable._archive, "walk", changed),
        Checkpoint(tmp_path / "store", storage=storage) as cp,
        contextlib.suppress(ResumableError),  # refusing the save is right too
    ):
        cp.save_sync(src)
    assert (tmp_path / "moved-away" / "key").read_bytes() == b"harmless"  # the swap happened
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert secret[:64] not in path.read_bytes()
    if manifests(cp):
        with Checkpoint(cp.uri, storage=storage) as fresh:
            out = fresh.load_sync()
            assert out is not None
            assert not (out / "victim" / "key").exists() or (
                (out / "victim" / "key").read_bytes() != secret
            )


def test_a_file_replaced_by_a_fifo_while_saved_does_not_hang(tmp_path: Path) -> None:
    """A file swapped for a FIFO once listed: the save fails or retries, it never blocks."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim").write_bytes(b"0123456789")

    def to_fifo(path: Path) -> None:
        path.unlink()
        os.mkfifo(path)

    with (
        mock.patch.object(resumable._tree, "walk", walk_then(to_fifo)),
        Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp,
    ):
        in_time, _ = bounded(lambda: cp.save_sync(src), open_fifo_for_writing(src / "victim"))
    assert in_time, "the save hung on the FIFO"


def test_a_file_replaced_by_a_folder_while_saved_names_it(tmp_path: Path) -> None:
    """A file swapped for a folder once listed: the error says which entry changed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim").write_bytes(b"0123456789")

    def to_folder(path: Path) -> None:
        path.unlink()
        path.mkdir()

    with (
        mock.patch.object(resumable._tree, "walk", walk_then(to_folder)),
        Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp,
    ):
        with pytest.raises(ResumableError) as caught:
            cp.save_sync(src)
        assert manifests(cp) == []
    assert "victim" in str(caught.value)


def test_hard_links_are_stored_once_and_restored_as_files(tmp_path: Path) -> None:
    """Two names of one file: both come back with its bytes; its content is stored once."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(300_000)
    (src / "a.bin").write_bytes(data)
    os.link(src / "a.bin", src / "b.bin")
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        assert store(cp).newest_manifest().extra["added"] < 2 * len(data)
        got = restored(cp)
    assert got[b"a.bin"][1] == got[b"b.bin"][1] == data


def test_sparse_empty_and_long_named_files_round_trip(tmp_path: Path) -> None:
    """A 40 MiB sparse file, empty files and folders, 255-byte names: exact, and cheap."""
    src = tmp_path / "src"
    src.mkdir()
    with (src / "sparse.bin").open("wb") as f:
        f.write(b"head")
        f.seek(40 << 20)
        f.write(b"tail")
    (src / "empty").write_bytes(b"")
    (src / "empty-folder").mkdir()
    (src / ("n" * 255)).write_text("longest ascii name")
    (src / ("é" * 127)).write_text("longest two-byte name")
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        assert store(cp).newest_manifest().extra["added"] < 1 << 20
        assert restored(cp) == tree_of(src)
        out = cp.load_sync()
        assert out is not None
        assert (out / "sparse.bin").stat().st_blocks * 512 < 1 << 20  # holes stay holes


@pytest.mark.parametrize("storage", [INCREMENTAL, ARCHIVE], ids=["incremental", "archive"])
def test_names_that_are_not_utf8_round_trip(tmp_path: Path, storage: Storage) -> None:
    """File and folder names of bytes that are not UTF-8 come back byte for byte."""
    src = tmp_path / "src"
    src.mkdir()
    raw = os.fsencode(src)
    os.mkdir(raw + b"/folder-\xff")
    with open(raw + b"/folder-\xff/file-\xfe\xfd.bin", "wb") as f:
        f.write(b"latin-1 name")
    os.symlink(b"folder-\xff/file-\xfe\xfd.bin", raw + b"/link-\xc3")
    with Checkpoint(tmp_path / "store", storage=storage) as cp:
        cp.save_sync(src)
        assert restored(cp) == tree_of(src)


_AS_NOBODY = textwrap.dedent(
    """
    import os, pickle, shutil, sys, tempfile
    from pathlib import Path
    from resumable import Checkpoint, Storage

    def save(work, src, storage):
        try:
            with Checkpoint(work / "store", storage=storage) as cp:
                cp.save_sync(src)
            return None
        except Exception as exc:
            return (type(exc).__name__, str(exc), isinstance(exc, PermissionError))

    storage = Storage(incremental=sys.argv[1] == "incremental")
    work = Path(tempfile.mkdtemp())  # under the system's temp folder: anyone may enter it
    try:
        work.chmod(0o777)
        src = work / "src"
        src.mkdir(mode=0o755)
        (src / "readable.txt").write_text("fine")
        (src / "readable.txt").chmod(0o644)
        with Checkpoint(work / "warm-up", storage=storage) as cp:  # imports what saves need
            cp.save_sync(src)
            cp.load_sync()
        (src / "unreadable.txt").write_text("not for you")
        (src / "unreadable.txt").chmod(0o000)
        if os.geteuid() != 0:
            found = save(work, src, storage)
        else:  # root reads anything: a child that is nobody saves
            reader, writer = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.setgid(65534)
                os.setuid(65534)
                os.write(writer, pickle.dumps(save(work, src, storage)))
                os._exit(0)
            os.close(writer)
            with os.fdopen(reader, "rb") as answer:
                found = pickle.loads(answer.read())
            os.waitpid(pid, 0)
        sys.stdout.buffer.write(pickle.dumps(found))
    finally:
        shutil.rmtree(work)
    """
)


@pytest.mark.parametrize("storage", ["incremental", "archive"])
def test_a_file_the_process_cannot_read_is_named(storage: str) -> None:
    """An unreadable file in the folder: a PermissionError naming it, not the store."""
    done = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, storage], capture_output=True, timeout=120, check=True
    )
    found = pickle.loads(done.stdout)
    assert found is not None, "the save read a file it may not read"
    name, message, is_permission = found
    assert "unreadable.txt" in message, message
    assert is_permission
    assert "StorageError" not in name


# -- saves from threads, forks and twin Checkpoints ---------------------------------------------


def test_saves_from_worker_threads_all_restore(tmp_path: Path) -> None:
    """Four threads saving their own folders through one Checkpoint: each snapshot is whole."""
    folders = []
    for t in range(4):
        src = tmp_path / f"src{t}"
        src.mkdir()
        for i in range(5):
            (src / f"f{i}.bin").write_bytes(os.urandom(20_000))
        folders.append(src)
    errors: list[BaseException] = []
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:

        def save(src: Path) -> None:
            try:
                for _ in range(3):
                    cp.save_sync(src)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=save, args=(src,)) for src in folders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        cp.flush_sync()
        s = store(cp)
        expected = [tree_of(src) for src in folders]
        for name in manifests(cp):
            assert s.verify(int(name[:20])) is not None
        assert restored(cp) in expected


def test_two_checkpoints_of_one_task_in_one_process_lose_nothing(tmp_path: Path) -> None:
    """Two Checkpoints saving one task in turn (keep=1, no grace): every snapshot restores."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(5000))
    url = tmp_path / "store"
    storage = Storage(incremental=True, keep=1)
    with (
        mock.patch("resumable._pieces.PACK_GRACE", 0.0),  # unused packs go at once
        Checkpoint(url, storage=storage) as a,
        Checkpoint(url, storage=storage) as b,
    ):
        for step in range(10):
            (src / f"f{step % 4}").write_bytes(os.urandom(5000))
            cp = (a, b)[step % 2]
            try:
                cp.save_sync(src)
            except ConcurrentWriterError:  # the other one took the number: it lists, tries again
                cp.save_sync(src)
        a.flush_sync()
        b.flush_sync()
        for name in manifests(a):
            assert store(a).verify(int(name[:20])) is not None
        assert restored(a) == tree_of(src)


_FORKED = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from resumable import Checkpoint, ConcurrentWriterError, Storage
    src, url = Path(sys.argv[1]), sys.argv[2]
    cp = Checkpoint(url, storage=Storage(incremental=True, keep=10))
    (src / "a.bin").write_bytes(os.urandom(50_000))
    cp.save_sync(src)
    pid = os.fork()
    if pid == 0:
        (src / "child.bin").write_bytes(os.urandom(50_000))
        cp.save_sync(src)  # builds on the parent's snapshot
        print("child saved", flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    (src / "parent.bin").write_bytes(os.urandom(50_000))
    try:
        cp.save_sync(src)
    except ConcurrentWriterError:  # the child took the number
        cp.save_sync(src)
    cp.close()
    print("parent saved", flush=True)
    """
)


def test_a_save_in_a_forked_child_and_then_in_the_parent_both_restore(tmp_path: Path) -> None:
    """Fork after a save; the child saves, then the parent: every snapshot is whole."""
    src = tmp_path / "src"
    src.mkdir()
    url = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-c", _FORKED, str(src), str(url)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split("\n")[:2] == ["child saved", "parent saved"]
    with Checkpoint(url, storage=INCREMENTAL) as cp:
        assert manifests(cp) == [f"{seq:020}.json" for seq in range(3)]
        for seq in range(3):
            assert store(cp).verify(seq) is not None
        assert restored(cp) == tree_of(src)


# -- restoring into a folder that holds something ------------------------------------------------


@pytest.fixture(name="saved")
def _saved(tmp_path: Path) -> Iterator[tuple[Checkpoint, dict[bytes, tuple[object, ...]]]]:
    """A store whose snapshot holds ``sub/a.txt`` and ``b.txt``, and that tree."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("alpha")
    (src / "b.txt").write_text("bravo")
    with Checkpoint(tmp_path / "store", storage=INCREMENTAL) as cp:
        cp.save_sync(src)
        yield cp, tree_of(src)


def test_restore_over_a_file_where_the_snapshot_has_a_folder(
    saved: tuple[Checkpoint, dict[bytes, tuple[object, ...]]], tmp_path: Path
) -> None:
    """The folder holds a file named like a snapshot's folder: the tree is restored exactly."""
    cp, expected = saved
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").write_text("a file where a folder was")
    assert cp.restore_into(dest) is not None
    assert tree_of(dest) == expected


def test_restore_over_a_link_where_the_snapshot_has_a_file(
    saved: tuple[Checkpoint, dict[bytes, tuple[object, ...]]], tmp_path: Path
) -> None:
    """A link (to matching bytes inside) where a file was: a real file comes back."""
    cp, expected = saved
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "same.txt").write_text("bravo")
    os.symlink("same.txt", dest / "b.txt")
    (dest / "sub" / "a.txt").write_text("alpha")
    assert cp.restore_into(dest) is not None
    assert not (dest / "b.txt").is_symlink()
    assert tree_of(dest) == expected


@pytest.mark.parametrize("how", ["link-to-file", "link-to-folder"])
def test_restore_never_takes_bytes_from_outside_the_folder(
    saved: tuple[Checkpoint, dict[bytes, tuple[object, ...]]], tmp_path: Path, how: str
) -> None:
    """A link out whose target holds the snapshot's bytes: never used, never written to."""
    cp, expected = saved
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("alpha")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "b.txt").write_text("bravo")
    if how == "link-to-file":
        (dest / "sub").mkdir()
        os.symlink(outside / "a.txt", dest / "sub" / "a.txt")
    else:
        os.symlink(outside, dest / "sub")
    kept = pieces_folder(cp).rename(tmp_path / "kept-pieces")
    with pytest.raises(CorruptCheckpointError, match="pack"):
        cp.restore_into(dest)  # sub/a.txt must come from the store, which lost it
    assert (outside / "a.txt").read_text() == "alpha"
    kept.rename(pieces_folder(cp))
    assert cp.restore_into(dest) is not None
    assert tree_of(dest) == expected
    assert sorted(p.name for p in outside.iterdir()) == ["a.txt"]
    assert (outside / "a.txt").read_text() == "alpha"


def test_restore_never_opens_what_a_link_out_leads_to(
    saved: tuple[Checkpoint, dict[bytes, tuple[object, ...]]], tmp_path: Path
) -> None:
    """A folder link out of the folder leads to a FIFO named like a file: it is never opened."""
    cp, expected = saved
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "a.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "sub")
    in_time, result = bounded(
        lambda: cp.restore_into(dest), open_fifo_for_writing(outside / "a.txt")
    )
    assert in_time, "the restore opened a FIFO outside the folder"
    assert not isinstance(result, BaseException)
    assert tree_of(dest) == expected


def test_restore_never_writes_through_a_hard_link_to_outside(
    saved: tuple[Checkpoint, dict[bytes, tuple[object, ...]]], tmp_path: Path
) -> None:
    """A hard link in the folder to a file outside: a new file is made, the link never written."""
    cp, expected = saved
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's, other bytes")
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    os.link(outside, dest / "b.txt")
    os.link(outside, dest / "sub" / "a.txt")
    assert cp.restore_into(dest) is not None
    assert tree_of(dest) == expected
    assert outside.read_text() == "someone else's, other bytes"
    assert outside.stat().st_nlink == 1


@pytest.mark.parametrize("storage", [INCREMENTAL, ARCHIVE], ids=["incremental", "archive"])
@pytest.mark.parametrize("where", ["the-store", "its-parent"])
def test_restore_into_the_stores_own_folder_is_refused(
    tmp_path: Path, storage: Storage, where: str
) -> None:
    """Restoring into the store's folder, or one holding it: refused, the store left whole."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one")
    work = tmp_path / "work"
    url = work / "store"
    with Checkpoint(url, storage=storage) as cp:
        cp.save_sync(src)
        (src / "a.txt").write_text("two")
        cp.save_sync(src)
        before = sorted(p.name for p in url.rglob("*"))
        with pytest.raises(ResumableError):
            cp.restore_into(url if where == "the-store" else work)
        assert sorted(p.name for p in url.rglob("*")) == before


def test_restore_over_a_fifo_where_the_snapshot_has_a_file_does_not_hang(
    saved: tuple[Checkpoint, dict[bytes, tuple[object, ...]]], tmp_path: Path
) -> None:
    """A FIFO the task left where the snapshot has a file: replaced, without blocking on it."""
    cp, expected = saved
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    os.mkfifo(dest / "sub" / "a.txt")
    in_time, _ = bounded(
        lambda: cp.restore_into(dest), open_fifo_for_writing(dest / "sub" / "a.txt")
    )
    assert in_time, "the restore hung on a FIFO in the folder"
    assert tree_of(dest) == expected


# -- differential: a folder by content restores what its archive restores ----------------------

_NAMES = st.sampled_from(["a", "b", "é", "x y", "\udcff", "\udcfe.bin"])  # lone bytes not UTF-8
_CONTENT = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n, b: b * n, st.integers(0, 5000), st.binary(min_size=1, max_size=2)),
)
_ENTRY = st.tuples(
    st.sampled_from(["file", "folder", "link", "hardlink", "sparse", "empty"]),
    st.lists(_NAMES, min_size=1, max_size=3),
    _CONTENT,
    st.sampled_from(["a", "./a", "b/", "../a", "b//a", "."]),
)


def build(root: Path, entries: list[tuple[str, list[str], bytes, str]]) -> None:
    """A tree from random entries (impossible ones are skipped)."""
    files: list[Path] = []
    for kind, parts, data, target in entries:
        path = root.joinpath(*parts)
        if not path.parent.is_dir() or path.parent.is_symlink() or os.path.lexists(path):
            continue
        if kind == "file":
            path.write_bytes(data)
            files.append(path)
        elif kind == "folder":
            path.mkdir()
        elif kind == "link" and (len(parts) > 1 or not target.startswith("..")):
            os.symlink(target, path)
        elif kind == "hardlink" and files:
            os.link(files[0], path)
        elif kind == "sparse":
            with path.open("wb") as f:
                f.write(data[:10])
                f.seek(300 + len(data))
                f.write(data[10:])
        elif kind == "empty":
            path.write_bytes(b"")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.lists(_ENTRY, max_size=12), block=st.integers(1, 400))
def test_a_folder_by_content_restores_what_its_archive_restores(
    tmp_path_factory: pytest.TempPathFactory,
    entries: list[tuple[str, list[str], bytes, str]],
    block: int,
) -> None:
    """Random trees (odd names, links, hard links, holes): both kinds restore the same tree."""
    work = tmp_path_factory.mktemp("diff")
    src = work / "src"
    src.mkdir()
    build(src, entries)
    with (
        mock.patch("resumable._tree.BLOCK", block),
        Checkpoint(work / "inc", storage=INCREMENTAL) as inc,
        Checkpoint(work / "tar", storage=ARCHIVE) as tar,
    ):
        inc.save_sync(src)
        tar.save_sync(src)
        refusals: list[str] = []
        for cp in (tar, inc):
            try:
                restored(cp)
            except CorruptCheckpointError as exc:  # links through links the guard refuses
                refusals.append(str(exc).split(": ", 2)[-1])
        if refusals:  # then both refuse the same member, for the same reason
            assert len(refusals) == 2
            assert refusals[0] == refusals[1]
            return
        by_archive = restored(tar)
        by_content = restored(inc)
    assert by_content == by_archive
    source = tree_of(src)
    assert by_content.keys() == source.keys()
    assert all(by_content[k] == v for k, v in source.items() if v[0] != "link")
