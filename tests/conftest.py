"""Shared fixtures: every store test runs on disk, in memory and on real object-store servers.

Storage tests run on local disk, on ``memory://``, on ``s3://`` (a SeaweedFS server on loopback,
started once per session by ``tests/servers.py``), on ``gs://`` (fake-gcs-server) and on
``az://`` (Azurite), both started by ``tests/servers_gcs_azure.py``; see docs/testing.md. I/O
tests run through the sync methods and through their async twins.
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

from .servers import SeaweedS3
from .servers import s3_server as s3_server  # the session fixture, re-exported for pytest
from .servers_gcs_azure import AzuriteBlob, FakeGCS
from .servers_gcs_azure import azure_server as azure_server  # session fixtures, re-exported
from .servers_gcs_azure import gcs_server as gcs_server

STORES = ["local", "memory", "s3", "gcs", "azure"]


@pytest.fixture(name="store_url", params=STORES)
def _store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL: local disk, fsspec's memory filesystem, S3, GCS or Azure."""
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    if request.param == "s3":
        server: SeaweedS3 = request.getfixturevalue("s3_server")
        # A prefix of its own per test; the server and its data go at the end of the session.
        yield f"s3://{server.bucket}/{uuid.uuid4().hex}"
        return
    if request.param == "gcs":
        gcs: FakeGCS = request.getfixturevalue("gcs_server")
        yield f"gs://{gcs.bucket}/{uuid.uuid4().hex}"
        return
    if request.param == "azure":
        azure: AzuriteBlob = request.getfixturevalue("azure_server")
        yield f"az://{azure.bucket}/{uuid.uuid4().hex}"
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


def _fs(url: str) -> tuple[Any, str]:
    """The filesystem and path of ``url``, with no stale listing cached for it."""
    fs, path = fsspec.url_to_fs(url)
    fs.invalidate_cache()
    return fs, path.rstrip("/")


def store_files(url: str) -> list[str]:
    """Names of the objects directly under a store URL (for format checks).

    Folder markers (keys ending in "/", which an object store may list for a prefix whose
    objects are gone) and sub-folders are not objects.
    """
    fs, path = _fs(url)
    try:
        infos = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(
        str(i["name"]).rsplit("/", 1)[-1]
        for i in infos
        if i.get("type") == "file" and not str(i["name"]).endswith("/")
    )


def read_object(url: str, name: str) -> bytes:
    """The bytes of one object under a store URL."""
    fs, path = _fs(url)
    data: bytes = fs.cat_file(f"{path}/{name}")
    return data


def write_object(url: str, name: str, data: bytes) -> None:
    """Overwrite one object under a store URL (to corrupt it on purpose)."""
    fs, path = _fs(url)
    fs.pipe_file(f"{path}/{name}", data)
    fs.invalidate_cache()


def delete_object(url: str, name: str) -> None:
    """Delete one object under a store URL."""
    fs, path = _fs(url)
    fs.rm_file(f"{path}/{name}")
    fs.invalidate_cache()
