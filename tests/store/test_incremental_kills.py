"""SIGKILL at the worst moments of incremental folder snapshots: nothing committed is ever lost.

Each test runs a real save (or restore) in a child process that stops at one chosen moment and
says so on its stdout; the test then kills it with SIGKILL (no sleeps: it waits on that line)
and checks, from a new Checkpoint as a resumed task would, that every snapshot left verifies,
the newest one loads, and the next save works.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from resumable import Checkpoint, Storage
from resumable._names import is_pack, is_temp
from resumable.testing import store

pytestmark = pytest.mark.slow

STORAGE = Storage(incremental=True, keep=1)

#: The child: ``prepare`` the folder and save it, then break ``at`` a moment and wait there.
_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import resumable._local, resumable._pieces, resumable._store
    from resumable import Checkpoint, Storage
    from resumable._names import is_pack

    src, url, at = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    def wait_here(what):
        print(what, flush=True)
        sys.stdin.readline()  # the test kills this process now
        raise SystemExit("the test should have killed this process")

    resumable._pieces.PACK_TARGET = 64 << 10  # several packs per save
    resumable._pieces.PACK_GRACE = 0.0  # unused packs go at once
    cp = Checkpoint(url, storage=Storage(incremental=True, keep=1))
    if at == "restore":
        real_decode = resumable._pieces.decode
        decoded = []

        def decode(piece, data):
            if len(decoded) == 3:  # three pieces written into the restore's staging folder
                wait_here("restoring")
            decoded.append(piece)
            return real_decode(piece, data)

        resumable._pieces.decode = decode
        cp.restore_into(Path(sys.argv[4]))
        raise SystemExit("the restore did not stop")
    for i in range(6):
        (src / f"new-{i}.bin").write_bytes(os.urandom(40_000))
    if at == "manifest":
        def publish(self, manifest, tree=None):
            wait_here("packs stored")

        resumable._store.SnapshotStore._publish = publish
    elif at == "pack":
        real_add = resumable._pieces.PackSink.add
        added = []

        def add(self, digest, size, data, codec):
            piece = real_add(self, digest, size, data, codec)
            added.append(piece)
            if len(added) == 3:
                wait_here("writing a pack")
            return piece

        resumable._pieces.PackSink.add = add
    elif at == "retention":
        real_delete = resumable._local.LocalBackend.delete_many

        def delete_many(self, names):
            if len(names) > 1 and all(is_pack(name) for name in names):
                real_delete(self, names[:1])
                wait_here("deleting packs")
            real_delete(self, names)

        resumable._local.LocalBackend.delete_many = delete_many
        for path in src.iterdir():  # every old pack is condemned by the next save
            if not path.name.startswith("new-"):
                path.unlink()
    cp.save_sync(src)
    cp.flush_sync()
    raise SystemExit("the save did not stop")
    """
)


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Each path under ``root`` and a file's bytes (None for a folder)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        found[path.relative_to(root).as_posix()] = path.read_bytes() if stat.S_ISREG(mode) else None
    return found


def killed_at(at: str, src: Path, url: Path, *extra: str) -> None:
    """Run the child until it stops ``at`` its moment, and SIGKILL it there."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(src), str(url), at, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        line = child.stdout.readline().strip()
        assert line in ("packs stored", "writing a pack", "deleting packs", "restoring"), line
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stdin.close()


def packs(url: Path) -> set[str]:
    """The packs in the task's pieces folder."""
    return {p.name for p in (url / "~pieces").iterdir() if is_pack(p.name)}


def temps(url: Path) -> list[str]:
    """The temp files of the task's pieces folder."""
    return [p.name for p in (url / "~pieces").iterdir() if is_temp(p.name)]


def every_snapshot_verifies(url: Path) -> list[int]:
    """Every snapshot listed loads exactly as a load would; their numbers."""
    with Checkpoint(url, storage=STORAGE) as cp:
        seqs = sorted(int(p.name[:20]) for p in url.glob("*.json"))
        for seq in seqs:
            assert store(cp).verify(seq) is not None
        return seqs


def loads(url: Path) -> dict[str, bytes | None]:
    """The tree a new Checkpoint loads."""
    with Checkpoint(url, storage=STORAGE) as cp:
        out = cp.load_sync()
        assert out is not None
        return tree_of(out)


def saves_again(url: Path, src: Path) -> None:
    """A new process's next save of the folder works, and loads back exactly."""
    (src / "after.bin").write_bytes(os.urandom(30_000))
    with mock.patch("resumable._pieces.PACK_GRACE", 0.0), Checkpoint(url, storage=STORAGE) as cp:
        cp.save_sync(src)
        cp.flush_sync()
    assert every_snapshot_verifies(url)
    assert loads(url) == tree_of(src)


@pytest.fixture(name="first")
def _first(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes | None]]:
    """A folder saved once (snapshot 0), the store, and the tree it holds."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"old-{i}.bin").write_bytes(os.urandom(40_000))
    url = tmp_path / "store"
    with (
        mock.patch("resumable._pieces.PACK_TARGET", 64 << 10),
        Checkpoint(url, storage=STORAGE) as cp,
    ):
        cp.save_sync(src)  # several packs: retention deletes them one by one
    return src, url, tree_of(src)


def test_a_kill_between_the_packs_and_the_manifest_keeps_the_previous_snapshot(
    first: tuple[Path, Path, dict[str, bytes | None]],
) -> None:
    """Killed with its packs durable and no manifest: snapshot 0 loads, the next save works."""
    src, url, before = first
    packs_before = packs(url)
    killed_at("manifest", src, url)
    assert packs(url) > packs_before  # the killed save's packs are there, used by nothing
    assert every_snapshot_verifies(url) == [0]
    assert loads(url) == before
    saves_again(url, src)


def test_a_kill_while_a_pack_is_written_leaves_no_temp_after_the_next_save(
    first: tuple[Path, Path, dict[str, bytes | None]],
) -> None:
    """Killed mid-pack: its temp file is no pack, and the next save of the task removes it."""
    src, url, before = first
    killed_at("pack", src, url)
    assert temps(url)  # the pack being written when it died
    assert every_snapshot_verifies(url) == [0]
    assert loads(url) == before
    saves_again(url, src)
    assert temps(url) == []


def test_a_kill_during_the_deletion_of_packs_loses_no_snapshot(
    first: tuple[Path, Path, dict[str, bytes | None]],
) -> None:
    """Killed after deleting one of the packs retention condemned: the kept snapshot is whole."""
    src, url, _ = first
    killed_at("retention", src, url)
    seqs = every_snapshot_verifies(url)
    assert seqs[-1] == 1
    assert loads(url) == tree_of(src)
    saves_again(url, src)


def test_a_kill_during_a_restore_leaves_the_folder_as_it_was(
    first: tuple[Path, Path, dict[str, bytes | None]], tmp_path: Path
) -> None:
    """Killed with half the pieces written: the folder is untouched, the next restore works."""
    src, url, before = first
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old-0.bin").write_bytes(b"what the folder held")
    (dest / "mine.txt").write_text("the task's own file")
    held = tree_of(dest)
    killed_at("restore", src, url, str(dest))
    assert tree_of(dest) == held
    with Checkpoint(url, storage=STORAGE) as cp:
        assert cp.restore_into(dest) is not None
    assert tree_of(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src", "store"]
