"""Folder restores: many small files, big files beside them, attributes and nanosecond mtimes."""

from __future__ import annotations

import io as stdio
import os
import tarfile
from pathlib import Path

from resumable import Checkpoint, latest_checkpoint, testing

from ..conftest import IO


def test_many_small_files_round_trip(tmp_path: Path, io: IO) -> None:
    """Thousands of small files in nested folders come back byte for byte."""
    src = tmp_path / "src"
    for i in range(3000):
        folder = src / f"d{i // 500}" / "inner"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_bytes(str(i).encode() * (i % 7))
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    (src / "link").symlink_to("big.bin")
    io.save(Checkpoint(tmp_path / "store"), src)
    loader = Checkpoint(tmp_path / "store")
    root = io.load(loader)
    assert root is not None
    for i in range(3000):
        assert (root / f"d{i // 500}/inner/f{i}.txt").read_bytes() == str(i).encode() * (i % 7)
    assert (root / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert os.readlink(root / "link") == "big.bin"


def test_modes_are_those_of_the_data_filter(tmp_path: Path) -> None:
    """An executable stays executable; group/other write is dropped, owner read/write added."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o775)
    (src / "ro.txt").write_text("x")
    (src / "ro.txt").chmod(0o444)
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(src)
        loader = Checkpoint(tmp_path / "store")
        root = loader.load_sync()
    assert root is not None
    assert (root / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert (root / "ro.txt").stat().st_mode & 0o7777 == 0o644


def test_mtimes_keep_their_nanoseconds(tmp_path: Path) -> None:
    """Files and folders come back with their mtimes to the nanosecond."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    stamps = {
        "small.txt": 1_700_000_000_123_456_789,
        "sub/big.bin": 1_700_000_001_000_000_001,
        "sub": 1_700_000_002_999_999_999,
    }
    (src / "small.txt").write_text("s")
    (src / "sub" / "big.bin").write_bytes(os.urandom(1 << 20))
    for name, ns in stamps.items():
        os.utime(src / name, ns=(ns, ns))
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(src)
        loader = Checkpoint(tmp_path / "store")
        root = loader.load_sync()
    assert root is not None
    for name, ns in stamps.items():
        assert (root / name).stat().st_mtime_ns == ns, name


def test_latest_checkpoint_after_restore_picks_the_newer_file(tmp_path: Path) -> None:
    """Files saved within the same second keep their order: ckpt-10 is newer than ckpt-9."""
    src = tmp_path / "src"
    src.mkdir()
    base = 1_700_000_000_000_000_000
    for i in range(1, 11):
        (src / f"ckpt-{i}.pt").write_bytes(b"w")
        os.utime(src / f"ckpt-{i}.pt", ns=(base + i * 50_000_000, base + i * 50_000_000))
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(src)
        loader = Checkpoint(tmp_path / "store")
        root = loader.load_sync()
    assert root is not None
    assert latest_checkpoint(root, "ckpt-*.pt") == root / "ckpt-10.pt"


def test_duplicate_members_last_one_wins(tmp_path: Path) -> None:
    """An archive naming a file twice restores the later content, as tar does."""
    buf = stdio.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for data in (b"first", b"second", os.urandom(300_000), b"last"):
            info = tarfile.TarInfo("same.txt")
            info.size = len(data)
            tar.addfile(info, stdio.BytesIO(data))
    with Checkpoint(tmp_path / "store") as cp:
        testing.store(cp).commit("dir", [buf.getvalue()], compression="none")
        root = cp.load_sync()
        assert root is not None
        assert (root / "same.txt").read_bytes() == b"last"
