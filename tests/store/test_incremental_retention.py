"""Retention of folder snapshots by content: unused packs go, packs a snapshot needs never do.

Packs are deleted only once retention dropped every snapshot that used them, a grace period
passed, and a fresh listing shows no snapshot using them (see ``_pieces.Packs``). Tests set
the grace period to 0 through the store, where they want deletions now.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resumable import Checkpoint, ConcurrentWriterError, Storage
from resumable.testing import store


def packs(url: Path) -> set[str]:
    folder = url / "~pieces"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def rewrite(src: Path, files: int = 8, size: int = 50_000) -> None:
    """Give every file new content."""
    for i in range(files):
        (src / f"f{i}.bin").write_bytes(os.urandom(size))


def all_verify(cp: Checkpoint) -> list[int]:
    """Every listed snapshot loads exactly as a load would (raises if one does not)."""
    cp.flush_sync()  # else retention behind the last save may delete what was listed
    s = store(cp)
    seqs = sorted(int(p.name[:20]) for p in Path(cp.uri).glob("*.json"))
    for seq in seqs:
        assert s.verify(seq) is not None
    return seqs


@pytest.fixture(name="src")
def _src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    rewrite(folder)
    return folder


def test_packs_no_kept_snapshot_uses_are_deleted(tmp_path: Path, src: Path) -> None:
    """keep=1: once a snapshot is dropped and the grace passed, its own packs are deleted."""
    url = tmp_path / "store"
    with Checkpoint(url, storage=Storage(incremental=True, keep=1)) as cp:
        store(cp).packs.grace = 0.0
        cp.save_sync(src)
        first = packs(url)
        rewrite(src)
        cp.save_sync(src)
        cp.flush_sync()
        assert first.isdisjoint(packs(url))
        assert packs(url)
        all_verify(cp)


def test_packs_wait_for_their_grace_period(tmp_path: Path, src: Path) -> None:
    """With the default grace, a dropped snapshot's packs stay (condemned) for now."""
    url = tmp_path / "store"
    with Checkpoint(url, storage=Storage(incremental=True, keep=1)) as cp:
        cp.save_sync(src)
        first = packs(url)
        rewrite(src)
        cp.save_sync(src)
        cp.flush_sync()
        assert first <= packs(url)
        assert store(cp).packs.pending() == len(first)


def test_packs_a_kept_snapshot_uses_are_never_deleted(tmp_path: Path, src: Path) -> None:
    """A pack the newest snapshot reuses outlives the snapshot that wrote it."""
    url = tmp_path / "store"
    with Checkpoint(url, storage=Storage(incremental=True, keep=1)) as cp:
        store(cp).packs.grace = 0.0
        for step in range(5):
            (src / "f0.bin").write_bytes(os.urandom(1000) + bytes([step]))
            cp.save_sync(src)
        cp.flush_sync()
        assert len(list(url.glob("*.json"))) == 1
        all_verify(cp)
        # The first pack holds the files that never changed; later packs the changed one.
        assert len(packs(url)) == 2


def test_a_new_process_collects_the_packs_of_snapshots_it_did_not_write(
    tmp_path: Path, src: Path
) -> None:
    """Retention reads the index of a snapshot it drops but did not write, to free its packs."""
    url = tmp_path / "store"
    with Checkpoint(url, storage=Storage(incremental=True, keep=1)) as cp:
        cp.save_sync(src)
    old = packs(url)
    with Checkpoint(url, storage=Storage(incremental=True, keep=1)) as cp:
        store(cp).packs.grace = 0.0
        rewrite(src)
        cp.save_sync(src)
        cp.flush_sync()
        assert old.isdisjoint(packs(url))
        all_verify(cp)


def test_retention_racing_a_writer_that_reuses_pieces_loses_none(tmp_path: Path, src: Path) -> None:
    """A second writer commits a snapshot reusing packs the first one's retention condemns."""
    url = tmp_path / "store"
    first = Checkpoint(url, storage=Storage(incremental=True, keep=2))
    # The second writer keeps everything: only the first one's retention deletes here.
    second = Checkpoint(url, storage=Storage(incremental=True, keep=10))
    store(first).packs.grace = 0.0
    first.save_sync(src)  # snapshot 0: every pack
    (src / "extra.bin").write_bytes(b"second writer's own")
    captured = second.capture(src, frozen=True)  # reuses snapshot 0's packs
    rewrite(src)
    first.save_sync(src)  # snapshot 1: new packs
    second.commit(captured)  # snapshot 2, built on 0, which is still there
    captured.release()
    rewrite(src)
    with pytest.raises(ConcurrentWriterError):
        first.save_sync(src)  # its number was taken by the second writer
    first.save_sync(src)  # snapshot 3: drops 0 and 1; 0's packs are condemned...
    first.flush_sync()
    # ... but a fresh listing showed snapshot 2 using them: not one was deleted.
    assert all_verify(first) == [2, 3]
    first.close()
    second.close()


def test_a_writer_whose_base_was_deleted_gives_up(tmp_path: Path, src: Path) -> None:
    """Its base gone (another writer dropped it), a save that reuses it commits nothing."""
    url = tmp_path / "store"
    storage = Storage(incremental=True, keep=1)
    with Checkpoint(url, storage=storage) as first, Checkpoint(url, storage=storage) as second:
        store(first).packs.grace = 0.0
        first.save_sync(src)
        captured = second.capture(src, frozen=True)
        for _ in range(2):
            rewrite(src)
            first.save_sync(src)
        first.flush_sync()
        with pytest.raises(ConcurrentWriterError, match="reuses"):
            second.commit(captured)
        captured.release()
        all_verify(second)
        second.save_sync(src)  # the next save stores everything it needs
        all_verify(second)
        out = second.load_sync()
        assert out is not None
        assert (out / "f0.bin").read_bytes() == (src / "f0.bin").read_bytes()


_STORM = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from resumable import Checkpoint, Storage
    from resumable.testing import store
    src, url = Path(sys.argv[1]), sys.argv[2]
    cp = Checkpoint(url, storage=Storage(incremental=True, keep=1))
    store(cp).packs.grace = 0.0
    step = 0
    while True:
        step += 1
        for i in range(step % 3 + 1):
            (src / f"f{(step + i) % 8}.bin").write_bytes(os.urandom(40_000 + step))
        cp.save_sync(src)
        print("saved", step, flush=True)
    """
)


@pytest.mark.slow
def test_kills_during_incremental_saves_and_retention_leave_every_snapshot_whole(
    tmp_path: Path, src: Path
) -> None:
    """SIGKILL at random points of saves and pack collection: every snapshot left verifies."""
    url = tmp_path / "store"
    for round_ in range(12):
        child = subprocess.Popen(
            [sys.executable, "-c", _STORM, str(src), str(url)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(round_ % 4 + 1):  # let it save a few times: kills land anywhere
            assert child.stdout.readline().startswith("saved")
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with Checkpoint(url, storage=Storage(incremental=True, keep=1)) as cp:
            assert all_verify(cp)
            assert cp.load_sync() is not None


def test_a_long_running_task_remembers_a_bounded_number_of_drops(tmp_path: Path) -> None:
    """Millions of saves must not grow what retention remembers: the newest drops only."""
    from resumable import _pieces

    with Checkpoint(tmp_path / "store", storage=Storage(keep=1)) as cp:
        packs = store(cp).packs
        for first in range(0, 3 * _pieces._REMEMBERED, 500):
            packs.dropped(list(range(first, first + 500)))
        assert packs.dropped_here(3 * _pieces._REMEMBERED - 1)
        assert not packs.dropped_here(0)  # forgotten: a save built on it would give up
        assert len(packs._dropped) == _pieces._REMEMBERED
