"""GCS- and Azure-specific behaviour, on real servers (fake-gcs-server and Azurite on loopback).

The generic storage tests already run on both through the ``store_url`` fixture; these pin what
only an object store has: a real conditional create of the manifest, uploads in several parts,
and an aborted upload that publishes nothing. See tests/servers_gcs_azure.py.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable import Captured, Checkpoint, ConcurrentWriterError, Storage
from resumable._backend import open_backend
from resumable._store import INLINE_MAX, SnapshotStore

from ..conftest import read_object, store_files
from ..servers_gcs_azure import AzuriteBlob, FakeGCS

pytestmark = pytest.mark.remote  # every test here needs the GCS or the Azure server

MiB = 1 << 20
#: Small upload parts so that a few MiB take several: gcsfs's minimum is 256 KiB.
PART = 256 * 1024
#: The option that sets the upload part size, per protocol.
PART_OPTIONS = {"gs": {"block_size": PART}, "az": {"blocksize": PART}}


@pytest.fixture(name="url", params=["gcs", "azure"])
def _url(request: pytest.FixtureRequest) -> str:
    """A fresh prefix in the GCS bucket or the Azure container of the session's server."""
    if request.param == "gcs":
        gcs: FakeGCS = request.getfixturevalue("gcs_server")
        return f"gs://{gcs.bucket}/{uuid.uuid4().hex}"
    azure: AzuriteBlob = request.getfixturevalue("azure_server")
    return f"az://{azure.bucket}/{uuid.uuid4().hex}"


def test_second_exclusive_create_raises_file_exists(url: str) -> None:
    """A second exclusive create of a name raises FileExistsError; the first's content stays."""
    backend = open_backend(url, None)
    backend.create_exclusive("00000000000000000000.json", b"first")
    with pytest.raises(FileExistsError):
        backend.create_exclusive("00000000000000000000.json", b"second")
    assert read_object(url, "00000000000000000000.json") == b"first"


def test_exclusive_create_is_conditional_not_checked(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal comes from the server's condition, not from an existence check before it."""
    backend = open_backend(url, None)
    backend.create_exclusive("00000000000000000000.json", b"first")
    fs = backend.fs  # type: ignore[attr-defined]
    # A racing writer's check would see nothing: only the server can refuse now.
    monkeypatch.setattr(fs, "exists", lambda *args, **kwargs: False)
    with pytest.raises(FileExistsError):
        backend.create_exclusive("00000000000000000000.json", b"second")
    assert read_object(url, "00000000000000000000.json") == b"first"


def test_failed_write_that_is_not_a_conflict_is_not_file_exists(url: str) -> None:
    """A refused exclusive create for another reason (no such bucket) stays an error of its own."""
    protocol = url.split("://", 1)[0]
    backend = open_backend(f"{protocol}://no-such-bucket-{uuid.uuid4().hex[:12]}/x", None)
    with pytest.raises(Exception) as caught:  # each client has its own type
        backend.create_exclusive("00000000000000000000.json", b"data")
    assert not isinstance(caught.value, FileExistsError)


def test_second_store_committing_the_same_seq_loses_cleanly(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that picked a committed seq gets ConcurrentWriterError; the first one stays."""
    first = SnapshotStore(open_backend(url, None), keep=2)
    second = SnapshotStore(open_backend(url, None), keep=2)
    # The second writer listed the store before the first one committed: both pick seq 0.
    stale = second.backend.entries()
    monkeypatch.setattr(second.backend, "entries", lambda: stale)
    winner = os.urandom(INLINE_MAX + 1)  # large enough for a payload object of its own
    first.commit("bytes", [winner])
    with pytest.raises(ConcurrentWriterError):
        second.commit("bytes", [os.urandom(INLINE_MAX + 1)])
    names = store_files(url)
    assert len(names) == 2, names  # the winner's manifest and payload; the loser's payload went
    with Checkpoint(url) as cp:
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == winner


def test_file_uploaded_in_parts_round_trips(url: str, tmp_path: Path) -> None:
    """A 3 MiB file saved in 256 KiB upload parts loads back byte for byte."""
    source = tmp_path / "big.bin"
    data = os.urandom(3 * MiB)
    source.write_bytes(data)
    options = PART_OPTIONS[url.split("://", 1)[0]]
    with Checkpoint(url, storage=Storage(storage_options=options)) as cp:
        cp.save_sync(source)
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == data


def test_upload_aborted_midway_leaves_no_blob(url: str) -> None:
    """A save whose source fails after parts were uploaded leaves no new object; the old loads."""
    options = PART_OPTIONS[url.split("://", 1)[0]]
    with Checkpoint(url, storage=Storage(storage_options=options)) as cp:
        cp.save_sync(b"previous")
        before = store_files(url)

        def chunks() -> Iterator[bytes]:
            for _ in range(3):
                yield os.urandom(MiB)
            raise RuntimeError("source failed mid-upload")

        with pytest.raises(RuntimeError, match="mid-upload"):
            cp.commit(Captured("bytes", lambda: chunks()))
        gc.collect()  # a discarded upload must not try to publish itself when collected
        assert store_files(url) == before
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == b"previous"
