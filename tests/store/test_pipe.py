"""Pipelined transfers: order kept, failures surfaced, streams closed."""

from __future__ import annotations

import io
import os

import pytest

from resumable import testing
from resumable._backend import open_backend
from resumable._pipe import PipelinedBackend


class Recorder:
    """A BlobWriter that records writes and can fail on the n-th one."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.fail_at = fail_at
        self.committed = self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise ConnectionResetError("peer went away")
        self.chunks.append(bytes(data))

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        self.aborted = True


class Inner:
    """The smallest backend for PipelinedBackend to wrap."""

    url = "inner://"
    exclusive = True

    def __init__(self, writer: Recorder, data: bytes = b"") -> None:
        self._writer = writer
        self._data = data

    def writer(self, name: str) -> Recorder:
        return self._writer

    def open_read(self, name: str) -> io.BytesIO:
        return io.BytesIO(self._data)


def test_uploads_keep_their_order() -> None:
    """Chunks reach the inner writer in the order they were written."""
    rec = Recorder()
    w = PipelinedBackend(Inner(rec)).writer("x")  # type: ignore[arg-type]
    chunks = [os.urandom(1000) for _ in range(100)]
    for c in chunks:
        w.write(c)
    w.commit()
    assert rec.chunks == chunks
    assert rec.committed


def test_upload_failure_surfaces_and_nothing_commits() -> None:
    """A failing upload is raised in the writer's thread; the object is not committed."""
    rec = Recorder(fail_at=3)
    w = PipelinedBackend(Inner(rec)).writer("x")  # type: ignore[arg-type]

    def upload() -> None:
        for _ in range(50):
            w.write(b"x" * 10)
        w.commit()

    with pytest.raises(ConnectionResetError):
        upload()
    w.abort()
    assert not rec.committed
    assert rec.aborted


def test_download_ahead_returns_every_byte() -> None:
    """Reading ahead returns the stream's bytes unchanged, in any read sizes."""
    data = os.urandom(20 << 20)
    stream = PipelinedBackend(Inner(Recorder(), data)).open_read("x")  # type: ignore[arg-type]
    out = bytearray()
    sizes = [1, 1000, 1 << 20, 7 << 20]
    i = 0
    while chunk := stream.read(sizes[i % len(sizes)]):
        out += chunk
        i += 1
    stream.close()
    assert bytes(out) == data


def test_download_closed_early_stops_the_reader() -> None:
    """Closing before the end stops the read-ahead thread and closes the stream."""
    inner = io.BytesIO(os.urandom(40 << 20))
    backend = Inner(Recorder())
    backend.open_read = lambda name: inner  # type: ignore[method-assign]
    stream = PipelinedBackend(backend).open_read("x")  # type: ignore[arg-type]
    assert stream.read(10)
    stream.close()
    assert inner.closed


def test_remote_checkpoints_are_pipelined() -> None:
    """Non-local stores get the pipelined wrapper; local disk does not need it."""
    from resumable import Checkpoint

    with Checkpoint("memory://pipe-check") as cp:
        assert isinstance(testing.backend(cp), PipelinedBackend)
    assert not isinstance(open_backend("memory://x", None), PipelinedBackend)
