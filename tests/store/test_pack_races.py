"""Packs against other writers: no snapshot ever loses a piece to another writer's retention.

Each case is a race a review found: another writer cleared the task and reused its numbers;
a pack condemned long before a snapshot using it was dropped again; a snapshot pruned
between the listing of a retention pass and its read; a frozen capture committed twice, or
to another checkpoint. Threads are ordered with events around the retention pass and the
manifest's create, and the grace period passes on a clock the test moves: no sleeps.
"""

from __future__ import annotations

import os
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import resumable._pieces
from resumable import Checkpoint, ConcurrentWriterError, ConfigurationError, Storage
from resumable._index import Index, Piece
from resumable.testing import store

GRACE = 600.0


class Clock:
    """The monotonic clock of ``_pieces``, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    """Time as the packs see it: it passes only when the test says."""
    fake = Clock()
    with mock.patch.object(
        resumable._pieces, "time", types.SimpleNamespace(monotonic=fake.monotonic)
    ):
        yield fake


def fill(folder: Path, tag: bytes) -> None:
    """Three files of new content (each save of it writes new pieces)."""
    folder.mkdir(exist_ok=True)
    for i in range(3):
        (folder / f"f{i}.bin").write_bytes(os.urandom(30_000) + tag)


def seqs(url: Path) -> list[int]:
    """The snapshots in the store."""
    return sorted(int(p.name[:20]) for p in url.glob("*.json"))


def two_writers(a: Checkpoint, b: Checkpoint, fa: Path, fb: Path) -> None:
    """Snapshots 0 (``a``), 1 (``b``: its pack P) and 2 (``a``), after one conflict.

    From then on both list before each commit, as writers that met do.
    """
    store(a).packs.grace = store(b).packs.grace = GRACE
    a.save_sync(fa)
    b.save_sync(fb)
    fill(fa, b"a1")
    with pytest.raises(ConcurrentWriterError):
        a.save_sync(fa)
    a.save_sync(fa)


def whole(cp: Checkpoint, seq: int) -> bool:
    """Whether every pack snapshot ``seq`` uses is in the store, and it verifies."""
    index = store(cp).read_index(seq)
    assert index is not None
    there = {p.name for p in (Path(cp.uri) / "~pieces").iterdir()}
    store(cp).verify(seq)  # raises when a piece is missing
    return index.packs() <= there


def test_a_writer_that_cleared_and_reused_the_numbers_keeps_its_packs(tmp_path: Path) -> None:
    """Another writer clears the task and saves again: this one's retention reads anew."""
    url = tmp_path / "store"
    fa, fb = tmp_path / "a", tmp_path / "b"
    with (
        mock.patch("resumable._pieces.PACK_GRACE", 0.0),
        Checkpoint(url, storage=Storage(keep=3)) as a,
        Checkpoint(url, storage=Storage(keep=10)) as b,
    ):
        for i in range(4):  # a: 0..3, it knows which packs each uses
            fill(fa, b"a%d" % i)
            a.save_sync(fa)
        a.flush_sync()
        b.clear_sync()  # unsigned: the numbers start at 0 again
        fill(fb, b"b")
        for _ in range(4):  # 0..3 on b's packs
            b.save_sync(fb)
        fill(fb, b"b2")
        b.save_sync(fb)  # 4
        b.flush_sync()
        fill(fa, b"a-new")
        with pytest.raises(ConcurrentWriterError):
            a.save_sync(fa)  # 4 is taken: a lists
        a.save_sync(fa)  # 5: drops 0..2, and collects
        a.flush_sync()
        assert 3 in seqs(url)
        assert whole(b, 3)


def _order(a: Checkpoint, b: Checkpoint) -> Callable[[], None]:
    """Run ``a``'s next retention pass between ``b``'s checks and its commit; the undoing.

    The pass waits until ``b`` is about to create its next manifest, which waits until the
    pass is done.
    """
    checked, done = threading.Event(), threading.Event()
    retention = store(a)._retention
    before, after = retention._before, retention._after

    def waiting(seqs_: list[int]) -> None:
        assert checked.wait(30)
        assert before is not None
        before(seqs_)

    def then(seqs_: list[int]) -> None:
        assert after is not None
        after(seqs_)
        done.set()

    backend = store(b).backend
    create = backend.create_exclusive

    def creating(name: str, data: bytes) -> None:
        if name.endswith(".json") and not checked.is_set():
            checked.set()
            assert done.wait(30)
        create(name, data)

    retention._before, retention._after = waiting, then  # type: ignore[assignment]
    backend.create_exclusive = creating  # type: ignore[method-assign]

    def undo() -> None:
        retention._before, retention._after = before, after
        backend.create_exclusive = create  # type: ignore[method-assign]

    return undo


def test_a_pack_condemned_long_ago_gets_a_new_grace_when_dropped_again(
    tmp_path: Path, clock: Clock
) -> None:
    """A pack condemned while a snapshot unknown here used it is not deleted under a save."""
    url = tmp_path / "store"
    fa, fb = tmp_path / "a", tmp_path / "b"
    fill(fa, b"a0")
    fill(fb, b"b")
    with (
        Checkpoint(url, storage=Storage(keep=2)) as a,
        Checkpoint(url, storage=Storage(keep=10)) as b,
    ):
        two_writers(a, b, fa, fb)  # 0 (a), 1 (b: pack P), 2 (a)
        b.save_sync(fb)  # 3: reuses P; a never reads it
        fill(fa, b"a2")
        a.save_sync(fa)  # 4: drops 1 and 2; P freed as far as a knows
        a.flush_sync()
        clock.now += 10 * GRACE  # long ago
        _order(a, b)
        fill(fa, b"a3")
        a.save_sync(fa)  # 5: its retention drops 3 while b's save on 3 is about to commit
        b.save_sync(fb)  # 6: built on 3, reuses P
        a.flush_sync()
        b.flush_sync()
        assert whole(b, 6)


def test_a_snapshot_pruned_between_the_listing_and_its_read_proves_nothing(
    tmp_path: Path, clock: Clock
) -> None:
    """A retention pass whose listed snapshot is gone when read deletes no pack."""
    url = tmp_path / "store"
    fa, fb = tmp_path / "a", tmp_path / "b"
    fill(fa, b"a0")
    fill(fb, b"b")
    with (
        Checkpoint(url, storage=Storage(keep=2)) as a,
        Checkpoint(url, storage=Storage(keep=10)) as b,
        Checkpoint(url, storage=Storage(keep=2)) as c,
    ):
        two_writers(a, b, fa, fb)  # 0 (a), 1 (b: pack P), 2 (a)
        a.flush_sync()
        b.flush_sync()
        undo = _order(a, b)
        fill(fa, b"a2")
        a.save_sync(fa)  # 3: drops 0 and 1 while b's save on 1 is about to commit
        b.save_sync(fb)  # 4 = X, built on 1, reuses P
        a.flush_sync()
        b.flush_sync()
        undo()
        clock.now += 10 * GRACE
        packs = store(a).packs
        read: Callable[[int], Any] = packs._read_packs
        interfered = threading.Event()

        def read_packs(seq: int) -> Any:
            if seq == 4 and not interfered.is_set():  # listed; now b and c move on
                interfered.set()
                for marker in (url / "~pieces").glob("*.condemned"):
                    marker.unlink()  # as if a wrote none (a release before markers): b reuses P
                b.save_sync(fb)  # 6 = Y, built on X, reuses P
                b.flush_sync()
                c.save_sync(b"bytes")  # 7: c keeps two, pruning X
                c.flush_sync()
            return read(seq)

        packs._read_packs = read_packs  # type: ignore[method-assign]
        fill(fa, b"a3")
        a.save_sync(fa)  # 5: its pass lists [4, 5], reads 4 once 4 is gone
        a.flush_sync()
        assert interfered.is_set()
        assert whole(b, 6)


def test_a_save_reusing_a_pack_another_writer_condemned_gives_up_and_the_next_stores_anew(
    tmp_path: Path, clock: Clock
) -> None:
    """Another writer's marker on a reused pack: the save gives up, the next one builds on none."""
    url = tmp_path / "store"
    fa, fb = tmp_path / "a", tmp_path / "b"
    fill(fa, b"a0")
    fill(fb, b"b")
    with (
        Checkpoint(url, storage=Storage(keep=2)) as a,
        Checkpoint(url, storage=Storage(keep=10)) as b,
    ):
        two_writers(a, b, fa, fb)  # 0 (a), 1 (b: pack P), 2 (a)
        first = store(b).read_index(1)
        assert first is not None
        doomed = first.packs()
        a.flush_sync()
        b.flush_sync()
        undo = _order(a, b)
        fill(fa, b"a2")
        a.save_sync(fa)  # 3: its pass proves P unused (drops 0 and 1), marks it
        b.save_sync(fb)  # 4 = X: its checks passed before the mark; it reuses P
        a.flush_sync()
        b.flush_sync()
        undo()
        marked = {
            m.name.split(".pack.")[0] + ".pack" for m in (url / "~pieces").glob("*.condemned")
        }
        assert doomed <= marked
        clock.now += GRACE / 2
        with pytest.raises(ConcurrentWriterError, match="next one stores every piece"):
            b.save_sync(fb)  # S, built on X (there) and P (marked): given up
        b.save_sync(fb)  # built on nothing: its pieces stored anew
        index = store(b).read_index(seqs(url)[-1])
        assert index is not None
        assert not doomed & index.packs()
        clock.now += 2 * GRACE
        fill(fa, b"a3")
        a.save_sync(fa)  # its pass: X still uses P, which stays, its marker gone
        a.flush_sync()
        used: set[str] = set()
        for seq in seqs(url):
            if (index := store(a).read_index(seq)) is not None:
                assert whole(a, seq)
                used |= index.packs()
        marked = {
            m.name.split(".pack.")[0] + ".pack" for m in (url / "~pieces").glob("*.condemned")
        }
        assert not marked & used  # a marker only beside a pack that no snapshot uses


def test_markers_come_and_go_with_the_grace_of_their_packs(tmp_path: Path, clock: Clock) -> None:
    """One writer: a dropped pack gets a marker, and both go once the grace has passed."""
    src = tmp_path / "src"
    pieces = tmp_path / "store" / "~pieces"
    with Checkpoint(tmp_path / "store", storage=Storage(keep=1)) as cp:
        store(cp).packs.grace = GRACE
        fill(src, b"0")
        cp.save_sync(src)
        fill(src, b"1")
        cp.save_sync(src)  # drops 0: its pack marked
        cp.flush_sync()
        first = {p.name for p in pieces.glob("*.pack")}
        assert len(list(pieces.glob("*.condemned"))) == 1
        clock.now += 2 * GRACE
        fill(src, b"2")
        cp.save_sync(src)  # drops 1 (marked now); 0's pack and marker deleted
        cp.flush_sync()
        names = {p.name for p in pieces.iterdir()}
        assert len([n for n in names if n.endswith(".condemned")]) == 1
        assert all(n.split(".pack.")[0] + ".pack" in names for n in names if ".pack." in n)
        assert len(first - names) == 1
        cp.clear_sync()
        assert not pieces.exists() or not list(pieces.iterdir())


@pytest.mark.parametrize("again", ["another checkpoint", "the same, after a conflict"])
def test_a_frozen_capture_committed_again_never_takes_the_packs_of_its_snapshot(
    tmp_path: Path, again: str
) -> None:
    """A capture committed twice is refused, and its first snapshot keeps its packs."""
    src = tmp_path / "src"
    fill(src, b"x")
    url = tmp_path / "store"
    with Checkpoint(url) as a, Checkpoint(tmp_path / "other") as other, Checkpoint(url) as b:
        captured = a.capture(src, frozen=True)
        first = a.commit(captured)
        if again == "another checkpoint":
            with pytest.raises(ConfigurationError, match="captured for another store"):
                other.commit(captured)
            assert not (tmp_path / "other" / "~pieces").exists()
        else:
            b.save_sync(b"another writer takes the next number")
            with pytest.raises(ConfigurationError, match="committed already"):
                a.commit(captured)
        captured.release()
        assert whole(a, first.seq)
        assert seqs(url) == ([first.seq] if again == "another checkpoint" else [0, 1])


class _Listing:
    """A store's snapshots as a retention pass sees them, each read taking ``slow`` seconds."""

    def __init__(self, clock: Clock, slow: float) -> None:
        self.clock, self.slow = clock, slow
        self.packs: dict[int, frozenset[str]] = {}

    def manifests(self) -> list[int]:
        return sorted(self.packs)

    def read_packs(self, seq: int) -> frozenset[str]:
        self.clock.now += self.slow
        return self.packs[seq]


@pytest.mark.parametrize("slow", [0.0, 5.0])
def test_a_pack_is_due_only_if_its_grace_passed_before_the_pass_began_to_list(
    tmp_path: Path, clock: Clock, slow: float
) -> None:
    """A pass that began listing before a pack's grace ended keeps it, however long it reads."""
    (tmp_path / "p.pack").write_bytes(b"pack")
    listing = _Listing(clock, slow)
    listing.packs = {1: frozenset({"p.pack"}), 2: frozenset()}
    backend = store(Checkpoint(tmp_path)).backend
    packs = resumable._pieces.Packs(backend, listing.read_packs)
    packs.grace = GRACE
    packs.used(1, Index(0, [Piece("0" * 64, 4, "p.pack", 0, 4, "raw")], []))
    packs.dropping([1])
    packs.dropped([1])
    del listing.packs[1]
    assert packs.collect(listing.manifests) == []  # proven unused: its grace starts
    started = clock.now
    clock.now = started + GRACE - 1.0  # the next pass begins a second before it ends
    listing.slow = 2.0  # and reads past it
    packs.used(2, Index(0, [Piece("1" * 64, 4, "q.pack", 0, 4, "raw")], []))
    packs.dropped([2])  # a new candidate: the pass lists, and reads
    del listing.packs[2]
    listing.packs[3] = frozenset()
    assert packs.collect(listing.manifests) == []
    assert (tmp_path / "p.pack").exists()
    clock.now = started + GRACE + 1.0
    assert packs.collect(listing.manifests) == ["p.pack"]  # q.pack's grace has just begun
    assert not (tmp_path / "p.pack").exists()
