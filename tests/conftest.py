"""Shared fixtures: every store test runs on disk and in memory, sync and async.

Storage tests run on local disk and on ``memory://``; I/O tests run through the sync methods
and through their async twins.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from resumable import Checkpoint


@pytest.fixture(name="store_url", params=["local", "memory"])
def _store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL on local disk or in fsspec's memory filesystem."""
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    root = f"/resumable-test-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


class IO:
    """Calls ``Checkpoint`` I/O through the sync methods or the async twins."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def save(self, cp: Checkpoint, data: Any) -> None:
        """Save through ``save_sync`` or ``await save``."""
        if self.mode == "sync":
            cp.save_sync(data)
        else:
            asyncio.run(cp.save(data))

    def load(self, cp: Checkpoint) -> Path | None:
        """Load through ``load_sync`` or ``await load``."""
        if self.mode == "sync":
            return cp.load_sync()
        return asyncio.run(cp.load())


@pytest.fixture(name="io", params=["sync", "async"])
def _io(request: pytest.FixtureRequest) -> IO:
    """The sync or the async twin of each Checkpoint method."""
    return IO(request.param)


def store_files(url: str) -> list[str]:
    """Names of the objects directly under a store URL (for format checks)."""
    fs, path = fsspec.url_to_fs(url)
    fs.invalidate_cache()
    try:
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def read_object(url: str, name: str) -> bytes:
    """The bytes of one object under a store URL."""
    fs, path = fsspec.url_to_fs(url)
    data: bytes = fs.cat_file(f"{path}/{name}")
    return data


def write_object(url: str, name: str, data: bytes) -> None:
    """Overwrite one object under a store URL (to corrupt it on purpose)."""
    fs, path = fsspec.url_to_fs(url)
    fs.pipe_file(f"{path}/{name}", data)


def delete_object(url: str, name: str) -> None:
    """Delete one object under a store URL."""
    fs, path = fsspec.url_to_fs(url)
    fs.rm_file(f"{path}/{name}")
