"""Storage calls per save and per load, counted and pinned (a count is deterministic).

In steady state a save is one write (the manifest, small payloads inline) plus one batched
delete once retention runs; a load is one listing plus one read (plus the payload's read when
it is not inlined). Only the first save of a process lists. See docs/storage-format.md.

Retention runs behind the save (``flush_sync`` waits for it): the counts below flush after
each save, so that the delete a save causes is counted with it.
"""

from __future__ import annotations

import uuid

import pytest

from benchmarks.requests import counted_checkpoint
from resumable import Checkpoint, ConcurrentWriterError, Storage
from tests.servers import SeaweedS3

remote = pytest.mark.remote  # needs the S3 server: `-m "not remote"` deselects it


def test_memory_save_is_one_write_and_load_one_list_one_read() -> None:
    """On memory://, a steady save is one write (+ a batched delete); a load, one ls + one read."""
    url = f"memory://requests-test/{uuid.uuid4().hex}"
    with counted_checkpoint(url, keep=2) as (cp, calls):
        cp.save_sync(b"first")
        assert calls == {"ls": 1, "pipe_file": 1}  # the first save of a process lists
        calls.clear()
        cp.save_sync(b"second")
        assert calls == {"pipe_file": 1}  # nothing to retire yet
        for n in range(3):
            calls.clear()
            cp.save_sync(b"steady %d" % n)
            cp.flush_sync()
            assert calls == {"pipe_file": 1, "rm_file": 1}  # one write, one delete
        calls.clear()
        found = cp.read_newest_with(b"".join)
        assert found is not None
        assert found[1] == b"steady 2"
        assert calls == {"ls": 1, "cat_file": 1}


def test_memory_large_payload_is_two_writes_and_one_batched_delete() -> None:
    """A payload over the inline limit adds one write; retention deletes its two objects.

    memory:// has no batch delete (S3's one request is counted in the S3 test).
    """
    url = f"memory://requests-test/{uuid.uuid4().hex}"
    big = b"x" * (1 << 20)  # over the inline limit: a payload object of its own
    with counted_checkpoint(url, keep=1) as (cp, calls):
        cp.save_sync(big)
        calls.clear()
        cp.save_sync(big)
        cp.flush_sync()
        # payload, then manifest; then the old snapshot's manifest and payload
        assert calls == {"open_write": 1, "pipe_file": 1, "rm_file": 2}
        calls.clear()
        assert cp.load_sync() is not None
        assert calls == {"ls": 1, "cat_file": 1, "open_read": 1}


def test_memory_refused_create_lists_then_raises() -> None:
    """A competing writer is detected by the exclusive create; then the store lists again."""
    url = f"memory://requests-test/{uuid.uuid4().hex}"
    with (
        counted_checkpoint(url, keep=2) as (cp, calls),
        Checkpoint(url, storage=Storage(keep=2)) as other,
    ):
        cp.save_sync(b"mine")
        other.save_sync(b"theirs")  # commits the number `cp` would take next
        calls.clear()
        with pytest.raises(ConcurrentWriterError):
            cp.save_sync(b"mine again")
        assert calls == {"pipe_file": 1, "ls": 1}
        cp.save_sync(b"after the conflict")  # the listing told it the newest number
        found = other.read_newest_with(b"".join)
        assert found is not None
        assert found[1] == b"after the conflict"


def test_local_save_is_one_create_and_load_one_list_one_read(tmp_path: object) -> None:
    """On local disk, a steady save is one exclusive create; a load, one listing and one read."""
    with counted_checkpoint(str(tmp_path), keep=2) as (cp, calls):
        for n in range(3):
            cp.save_sync(b"%d" % n)
        cp.flush_sync()
        calls.clear()
        cp.save_sync(b"steady")
        cp.flush_sync()
        assert calls == {"create_exclusive": 1, "delete_many": 1}
        calls.clear()
        assert cp.read_newest_with(b"".join) is not None
        assert calls == {"entries": 1, "read": 1}


@remote
def test_s3_save_is_one_request_and_load_two(s3_server: SeaweedS3) -> None:
    """HTTP requests to the S3 server, counted by a botocore hook."""
    url = f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"
    options = {"storage_options": {"skip_instance_cache": True}}
    with counted_checkpoint(url, keep=2, http=True, **options) as (cp, calls):
        cp.save_sync(b"first")
        # The first save of a process lists; s3fs lists an empty prefix twice (the second
        # time to tell a missing path from an empty one).
        assert calls == {"ListObjectsV2": 2, "PutObject": 1}
        calls.clear()
        cp.save_sync(b"second")
        assert calls == {"PutObject": 1}
        for n in range(3):
            calls.clear()
            cp.save_sync(b"steady %d" % n)
            cp.flush_sync()
            assert calls == {"PutObject": 1, "DeleteObject": 1}
        calls.clear()
        found = cp.read_newest_with(b"".join)
        assert found is not None
        assert found[1] == b"steady 2"
        assert calls == {"ListObjectsV2": 1, "GetObject": 1}
    with counted_checkpoint(url, keep=2, http=True, **options) as (cp, calls):
        cp.save_sync(b"a new process")  # lists once, then as in steady state
        cp.flush_sync()
        assert calls == {"ListObjectsV2": 1, "PutObject": 1, "DeleteObject": 1}
        big = b"x" * (1 << 20)  # a payload object of its own: retention deletes two objects
        cp.save_sync(big)
        cp.save_sync(big)
        cp.flush_sync()
        calls.clear()
        cp.save_sync(big)
        cp.flush_sync()
        assert calls == {"PutObject": 2, "DeleteObjects": 1}
