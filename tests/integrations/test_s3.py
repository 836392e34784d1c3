"""S3-specific behaviour, on a real S3 server (SeaweedFS on loopback, see tests/servers.py).

The generic storage tests already run on s3 through the ``store_url`` fixture; these pin what
only an object store has: conditional writes, multipart uploads and their abort.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest

from resumable import Captured, Checkpoint, Storage
from resumable._backend import open_backend
from resumable._store import INLINE_MAX, SnapshotStore

from ..conftest import store_files
from ..servers import SeaweedS3
from .test_gcs_azure import (  # noqa: F401  the same tests, collected here with this ``url``
    test_second_exclusive_create_raises_file_exists,
    test_second_store_committing_the_same_seq_loses_cleanly,
)

pytestmark = pytest.mark.remote  # every test here needs the S3 server

MiB = 1 << 20
#: Small multipart parts (S3's minimum is 5 MiB) so that a 20 MiB payload takes several.
PART = 5 * MiB
MULTIPART = {"default_block_size": PART}


@pytest.fixture(name="url")
def _url(s3_server: SeaweedS3) -> str:
    """A fresh prefix in the test server's bucket."""
    return f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"


def _s3(url: str, **options: Any) -> tuple[Any, str]:
    fs, path = fsspec.url_to_fs(url, **options)
    fs.invalidate_cache()
    return fs, path


def _uploads_in_progress(url: str) -> list[str]:
    fs, path = _s3(url)
    bucket, prefix = path.split("/", 1)
    return [u["Key"] for u in fs.list_multipart_uploads(bucket) if u["Key"].startswith(prefix)]


def test_failed_write_that_is_not_a_conflict_is_not_file_exists(s3_server: SeaweedS3) -> None:
    """A refused exclusive create for another reason (no such bucket) stays an error of its own."""
    backend = open_backend(f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/x", None)
    with pytest.raises(OSError) as caught:
        backend.create_exclusive("00000000000000000000.json", b"data")
    assert not isinstance(caught.value, FileExistsError)


def test_large_file_round_trips_through_multipart_upload(url: str, tmp_path: Any) -> None:
    """A 20 MiB file saved in 5 MiB multipart parts loads back byte for byte."""
    source = tmp_path / "big.bin"
    data = os.urandom(20 * MiB)
    source.write_bytes(data)
    with Checkpoint(url, storage=Storage(storage_options=MULTIPART)) as cp:
        cp.save_sync(source)
        (blob,) = [n for n in store_files(url) if n.endswith(".blob")]
        fs, path = _s3(url)
        etag = str(fs.info(f"{path}/{blob}")["ETag"]).strip('"')
        _, _, parts = etag.rpartition("-")  # a multipart object's ETag ends in its part count
        assert parts.isdigit(), etag
        assert int(parts) >= 2, etag
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == data


def test_upload_aborted_midway_leaves_no_blob(url: str) -> None:
    """A save whose source fails after parts were uploaded leaves no object and no upload."""
    with Checkpoint(url, storage=Storage(storage_options=MULTIPART)) as cp:
        cp.save_sync(b"previous")
        before = store_files(url)
        seen_upload: list[str] = []

        def chunks() -> Iterator[bytes]:
            for _ in range(12):
                yield os.urandom(MiB)
            seen_upload.extend(_uploads_in_progress(url))  # two parts are up by now
            raise RuntimeError("source failed mid-upload")

        with pytest.raises(RuntimeError, match="mid-upload"):
            cp.commit(Captured("bytes", lambda: chunks()))
        gc.collect()  # a discarded upload must not try to publish itself when collected
        assert seen_upload, "the payload was not being uploaded in parts"
        assert store_files(url) == before
        assert _uploads_in_progress(url) == []
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == b"previous"


def test_emptied_prefix_lists_no_objects(url: str) -> None:
    """A prefix whose snapshots were all deleted lists no objects, loads None, takes new saves."""
    store = SnapshotStore(open_backend(url, None), keep=2)
    store.commit("bytes", [os.urandom(INLINE_MAX + 1)])
    store.clear()
    # SeaweedFS may still list the emptied prefix as a folder marker ("<prefix>/").
    assert store.backend.entries() == []
    assert store_files(url) == []
    assert store.newest_seq() is None
    with Checkpoint(url) as cp:
        assert cp.load_sync() is None
        cp.save_sync(b"again")
        assert store.newest_seq() == 0
