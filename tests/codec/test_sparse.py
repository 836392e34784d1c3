"""Sparse files stay sparse: zero blocks of a restored file are holes, not allocated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resumable import Checkpoint

from ..conftest import IO

MiB = 1 << 20


def make_sparse(path: Path, size: int) -> list[int]:
    """A file of ``size`` bytes made by truncate, with a few 4 KiB blocks written."""
    offsets = [0, size // 3, size - 4096]
    with path.open("wb") as f:
        f.truncate(size)
        for off in offsets:
            f.seek(off)
            f.write(b"\x5a" * 4096)
    return offsets


def check_sparse(path: Path, size: int, offsets: list[int]) -> None:
    """The file has its size and data, and allocates far less than its size."""
    st = path.stat()
    assert st.st_size == size
    assert st.st_blocks * 512 < size // 8, f"{st.st_blocks * 512} bytes allocated"
    with path.open("rb") as f:
        for off in offsets:
            f.seek(off)
            assert f.read(4096) == b"\x5a" * 4096
        f.seek(offsets[0] + 4096)
        assert f.read(MiB) == bytes(MiB)


@pytest.fixture
def sparse_ok(tmp_path: Path) -> None:
    """Skip where the filesystem of tmp_path does not keep holes."""
    probe = tmp_path / "probe"
    with probe.open("wb") as f:
        f.truncate(64 * MiB)
    if probe.stat().st_blocks * 512 >= MiB:
        pytest.skip("this filesystem does not support sparse files")
    probe.unlink()


@pytest.mark.usefixtures("sparse_ok")
def test_sparse_file_in_folder_is_stored_small_and_restored_sparse(tmp_path: Path, io: IO) -> None:
    """A 256 MiB sparse file in a folder: a small payload, restored with holes."""
    size = 256 * MiB
    src = tmp_path / "src"
    src.mkdir()
    offsets = make_sparse(src / "sparse.bin", size)
    store = tmp_path / "store"
    io.save(Checkpoint(store), src)
    stored = sum(p.stat().st_size for p in store.iterdir())
    assert stored < size // 64, f"stored {stored} bytes"
    loader = Checkpoint(store)
    root = io.load(loader)
    assert root is not None
    check_sparse(root / "sparse.bin", size, offsets)


@pytest.mark.usefixtures("sparse_ok")
def test_sparse_file_saved_alone_is_restored_sparse(tmp_path: Path, io: IO) -> None:
    """A sparse file saved on its own comes back as a sparse ``payload``."""
    size = 64 * MiB
    offsets = make_sparse(tmp_path / "sparse.bin", size)
    io.save(Checkpoint(tmp_path / "store"), tmp_path / "sparse.bin")
    loader = Checkpoint(tmp_path / "store")
    root = io.load(loader)
    assert root is not None
    check_sparse(root / "payload", size, offsets)


def test_zeros_inside_data_are_kept(tmp_path: Path) -> None:
    """Zero runs shorter than a hole block and at odd offsets are written as data."""
    data = os.urandom(1000) + bytes(70_000) + os.urandom(5) + bytes(200_000)
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(data)
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == data
