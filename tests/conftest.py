"""Shared fixtures: every store test runs on disk, in memory and on real object-store servers.

Storage tests run on local disk, on ``memory://``, on ``s3://`` (a SeaweedFS server on loopback,
started once per session by ``tests/servers.py``), on ``gs://`` (fake-gcs-server) and on
``az://`` (Azurite), both started by ``tests/servers_gcs_azure.py``; see docs/testing.md. I/O
tests run through the sync methods and through their async twins.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

# Before anything imports gcsfs (Lightning and transformers may, through fsspec): the variable
# picks gcsfs's class once, and the other one's bucket lookups hang on the GCS test server.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from resumable import Checkpoint
from resumable._stream import DIGESTS

# The server fixtures, re-exported for pytest: ``s3_server``, ``gcs_server`` and
# ``azure_server`` (per test, refused to a test not marked remote) share one server per session.
from .servers import STARTED, SeaweedS3, exit_with_parent
from .servers import s3_server as s3_server
from .servers import s3_session_server as s3_session_server
from .servers_gcs_azure import AzuriteBlob, FakeGCS
from .servers_gcs_azure import azure_server as azure_server
from .servers_gcs_azure import azure_session_server as azure_session_server
from .servers_gcs_azure import gcs_server as gcs_server
from .servers_gcs_azure import gcs_session_server as gcs_session_server

#: The stores of ``store_url``; those on a server carry the ``remote`` mark, so that
#: ``pytest -m "not remote"`` runs the others without starting any server.
STORES = [
    "local",
    "memory",
    pytest.param("s3", marks=pytest.mark.remote),
    pytest.param("gcs", marks=pytest.mark.remote),
    pytest.param("azure", marks=pytest.mark.remote),
]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under tests/, collect test modules only: not helpers, scripts or typing samples.

    ``--doctest-modules`` (for the package's doctests) would import every module here, and a
    script such as ``lightning_run.py`` may import what is not installed.
    """
    name = collection_path.name
    if collection_path.suffix == ".py" and not name.startswith("test_"):
        return name not in ("conftest.py", "__init__.py")
    return None


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker ends with its controller, and so do the servers it started."""
    if hasattr(config, "workerinput"):
        exit_with_parent()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run that started a server although none of its tests is marked ``remote``.

    So ``pytest -m "not remote"`` proves, each time it runs, that it started no server.
    """
    items = getattr(session, "items", [])
    if STARTED and not any(item.get_closest_marker("remote") for item in items):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"no test is marked remote, yet servers started: {STARTED}")


@pytest.fixture(name="tmp")
def _tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder of its own for this test (and its subprocesses): workspaces go there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


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


def payload_digest(doc: dict[str, Any], data: bytes) -> str:
    """The digest of ``data`` by the algorithm that manifest ``doc`` names (blake3 or sha256)."""
    hasher = DIGESTS["sha256" if "sha256" in doc else "blake3"]()
    hasher.update(data)
    return hasher.hexdigest()


def set_digest(doc: dict[str, Any], data: bytes) -> None:
    """Make manifest ``doc`` record ``data``'s size and digest, as a writer with no key could."""
    doc["size"] = len(data)
    doc["sha256" if "sha256" in doc else "blake3"] = payload_digest(doc, data)


def as_format_1(url: str, seq: int) -> dict[str, Any]:
    """Rewrite snapshot ``seq``'s manifest as format 1 (sha256) wrote it; the new document.

    A signature is dropped: format 1 signatures are made by the tests that need one.
    """
    name = f"{seq:020d}.json"
    doc: dict[str, Any] = json.loads(read_object(url, name))
    data = base64.b64decode(doc["inline"]) if doc["blob"] is None else read_object(url, doc["blob"])
    del doc["blake3"]
    doc.pop("hmac", None)
    doc.pop("hmac_version", None)
    doc.update(format=1, sha256=hashlib.sha256(data).hexdigest())
    write_object(url, name, json.dumps(doc).encode())
    return doc
