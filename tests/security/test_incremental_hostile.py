"""Hostile stores against folder snapshots by content: forged indexes, replaced or missing pieces.

Each forged snapshot is committed above a good one: a load must refuse it before writing a
byte outside its staging folder, and fall back to the good one.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest

from resumable import Checkpoint, CorruptCheckpointError, Limits, Storage
from resumable._stream import Digest
from resumable.testing import store

INCREMENTAL = Storage(incremental=True, keep=10)


def digest(data: bytes) -> str:
    d = Digest()
    d.update(data)
    return d.hexdigest()


@pytest.fixture(name="good")
def _good(tmp_path: Path) -> tuple[Checkpoint, Path]:
    """A store holding one good folder snapshot, and the folder it holds."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("good")
    cp = Checkpoint(tmp_path / "store", storage=INCREMENTAL)
    cp.save_sync(src)
    return cp, src


def pieces_folder(cp: Checkpoint) -> Path:
    return Path(cp.uri) / "~pieces"


def plant_pack(cp: Checkpoint, data: bytes) -> str:
    """A pack holding ``data``, in the task's pieces folder; its name."""
    name = os.urandom(16).hex() + ".pack"
    (pieces_folder(cp) / name).write_bytes(data)
    return name


def forge(cp: Checkpoint, doc: dict[str, Any], raw_size: int, members: int) -> None:
    """Commit an index document as the newest snapshot, as a writer of the store could."""
    data = json.dumps(doc).encode()
    store(cp).commit(
        "dir",
        [data],
        compression="pieces",
        facts=lambda: {"raw_size": raw_size, "members": members},
    )


def index(nodes: list[list[Any]], packs: list[str], pieces: list[list[Any]]) -> dict[str, Any]:
    return {"version": 1, "scanned_ns": 0, "packs": packs, "pieces": pieces, "nodes": nodes}


def file_node(path: str, size: int, refs: list[int]) -> list[Any]:
    return [path, "f", 0o644, 0, size, None, refs, None]


def loads_the_good_one(cp: Checkpoint, tmp_path: Path) -> None:
    """The load falls back to the good snapshot, and nothing appeared outside the store."""
    before = set(tmp_path.iterdir())
    out = cp.load_sync()
    assert out is not None
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert (out / "a.txt").read_text() == "good"
    assert set(tmp_path.iterdir()) == before


def test_a_piece_replaced_in_its_pack_falls_back(
    good: tuple[Checkpoint, Path], tmp_path: Path
) -> None:
    """Bytes of a pack changed (same length): the piece's digest fails, the load falls back."""
    cp, src = good
    (src / "a.txt").write_text("newer")
    cp.save_sync(src)
    newest = store(cp).newest_manifest().extra["added"]
    assert newest > 0
    for pack in pieces_folder(cp).iterdir():
        data = pack.read_bytes()
        if b"newer" in data:
            pack.write_bytes(data.replace(b"newer", b"NEWER"))
    loads_the_good_one(cp, tmp_path)


def test_a_missing_pack_falls_back(good: tuple[Checkpoint, Path], tmp_path: Path) -> None:
    """A pack the newest snapshot needs is gone: the load falls back to the previous one."""
    cp, src = good
    before = set(pieces_folder(cp).iterdir())
    (src / "a.txt").write_text("newer")
    cp.save_sync(src)
    for pack in set(pieces_folder(cp).iterdir()) - before:
        pack.unlink()
    loads_the_good_one(cp, tmp_path)


@pytest.mark.parametrize(
    ("nodes", "why"),
    [
        ([["../evil", "d", 0o755, 0, 0, None, [], None]], "'..'"),
        ([["/abs", "d", 0o755, 0, 0, None, [], None]], "absolute"),
        ([["l", "l", 0o777, 0, 0, "../../outside", [], None]], "outside"),
        ([["l", "l", 0o777, 0, 0, "/etc", [], None]], "absolute"),
        (
            [
                ["d", "d", 0o755, 0, 0, None, [], None],
                ["l", "l", 0o777, 0, 0, "d", [], None],
                ["l/x", "d", 0o755, 0, 0, None, [], None],
            ],
            "link",
        ),
        (
            [["d", "d", 0o755, 0, 0, None, [], None], ["d", "d", 0o755, 0, 0, None, [], None]],
            "twice",
        ),
        ([["x/y", "d", 0o755, 0, 0, None, [], None]], "before its folder"),
        (
            [["f", "f", 0o644, 0, 0, None, [], None], ["f/y", "d", 0o755, 0, 0, None, [], None]],
            "folder",
        ),
        ([["d", "x", 0o755, 0, 0, None, [], None]], "malformed"),
        ([["d", "d", 0o755, 0, 5, None, [], None]], "malformed"),
        ([["d", "d", 0o70000, 0, 0, None, [], None]], "malformed"),
    ],
)
def test_a_forged_tree_is_refused_before_anything_is_written(
    good: tuple[Checkpoint, Path], tmp_path: Path, nodes: list[list[Any]], why: str
) -> None:
    """Paths leaving the folder, links out or through, duplicates, orphans: refused, fallback."""
    cp, _ = good
    forge(cp, index(nodes, [], []), 0, len(nodes))
    with pytest.raises(CorruptCheckpointError, match=why):
        store(cp).verify(store(cp).newest_seq())
    loads_the_good_one(cp, tmp_path)


def test_counts_the_manifest_does_not_record_are_refused(
    good: tuple[Checkpoint, Path], tmp_path: Path
) -> None:
    """An index with more entries or bytes than its manifest records is refused."""
    cp, _ = good
    nodes = [["d", "d", 0o755, 0, 0, None, [], None]]
    forge(cp, index(nodes, [], []), 0, 0)
    loads_the_good_one(cp, tmp_path)


def test_more_entries_than_the_limits_is_refused_before_writing(tmp_path: Path) -> None:
    """Limits bound a folder by content as they bound an archive: checked before any write."""
    url = tmp_path / "store"
    storage = Storage(incremental=True, limits=Limits(max_entries=3))
    with Checkpoint(url, storage=storage) as cp:
        nodes = [[f"d{i}", "d", 0o755, 0, 0, None, [], None] for i in range(5)]
        forge(cp, index(nodes, [], []), 0, 5)
        with pytest.raises(CorruptCheckpointError, match="max_entries"):
            cp.load_sync()


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda p: p.__setitem__(0, "../../other-task/x.pack"), id="pack-outside"),
        pytest.param(lambda p: p.__setitem__(3, 3 << 30), id="three-gib-piece"),
        pytest.param(lambda p: p.__setitem__(4, "zstd"), id="unknown-codec"),
        pytest.param(lambda p: p.__setitem__(5, "0" * 63), id="short-digest"),
    ],
)
def test_absurd_pieces_are_refused(
    good: tuple[Checkpoint, Path], tmp_path: Path, mutate: Any
) -> None:
    """Pack names out of the folder, huge pieces, unknown codecs, bad digests: malformed."""
    cp, _ = good
    data = b"forged"
    pack = plant_pack(cp, data)
    piece: list[Any] = [0, 0, len(data), len(data), "raw", digest(data)]
    packs = [pack]
    mutate(piece)
    if isinstance(piece[0], str):
        packs, piece[0] = [piece[0]], 0
    forge(cp, index([file_node("f", len(data), [0])], packs, [piece]), len(data), 1)
    loads_the_good_one(cp, tmp_path)


def test_a_deflate_bomb_is_stopped_at_the_piece_size(
    good: tuple[Checkpoint, Path], tmp_path: Path
) -> None:
    """A piece that inflates beyond its recorded size is refused without inflating it all."""
    cp, _ = good
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(bytes(50 << 20)) + bomb.flush()
    pack = plant_pack(cp, data)
    piece = [0, 0, len(data), 10, "deflate", digest(bytes(10))]
    forge(cp, index([file_node("f", 10, [0])], [pack], [piece]), 10, 1)
    loads_the_good_one(cp, tmp_path)


def test_overlapping_pieces_are_refused(good: tuple[Checkpoint, Path], tmp_path: Path) -> None:
    """Two pieces claiming the same bytes of a pack: refused (a writer never makes them)."""
    cp, _ = good
    data = b"abcdef"
    pack = plant_pack(cp, data)
    pieces = [[0, 0, 6, 6, "raw", digest(data)], [0, 2, 4, 4, "raw", digest(b"cdef")]]
    nodes = [file_node("f", 6, [0]), file_node("g", 4, [1])]
    forge(cp, index(nodes, [pack], pieces), 10, 2)
    loads_the_good_one(cp, tmp_path)


def test_another_tasks_index_finds_none_of_its_pieces(tmp_path: Path) -> None:
    """An index copied from another task names packs this task does not hold: refused."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_text("other task")
    other = Checkpoint(tmp_path / "store" / "other", storage=INCREMENTAL)
    other.save_sync(src)
    (src / "secret.txt").write_text("good")
    mine = Checkpoint(tmp_path / "store" / "mine", storage=INCREMENTAL)
    (src / "secret.txt").unlink()
    (src / "a.txt").write_text("good")
    mine.save_sync(src)
    manifest = Path(other.uri) / "00000000000000000000.json"
    (Path(mine.uri) / "00000000000000000001.json").write_bytes(
        manifest.read_bytes().replace(b'"seq": 0', b'"seq": 1')
    )
    loads_the_good_one(mine, tmp_path)


def test_signed_folder_snapshots_load_and_refuse_forgeries(tmp_path: Path) -> None:
    """Signed: an incremental snapshot loads; an unsigned forged index above it is refused."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("good")
    storage = Storage(incremental=True, signing_key=b"k" * 32)
    with Checkpoint(tmp_path / "store", storage=storage) as cp:
        cp.save_sync(src)
        (src / "a.txt").write_text("better")
        cp.save_sync(src)  # builds on the signed one
        assert store(cp).newest_manifest().extra["added"] > 0
        unsigned = Checkpoint(tmp_path / "store", storage=Storage(incremental=True))
        nodes = [["evil", "d", 0o755, 0, 0, None, [], None]]
        forge(unsigned, index(nodes, [], []), 0, 1)
        out = cp.load_sync()
        assert out is not None
        assert (out / "a.txt").read_text() == "better"
        assert not (out / "evil").exists()
