"""Overlap network transfers with the work around them: upload behind, download ahead.

An object store's file object uploads a part inside ``write()`` once its buffer fills, and
fetches a range inside ``read()``: the thread that packs, compresses and hashes the snapshot
waits for the network each time. ``PipelinedBackend`` moves those calls to one IO thread
(``_threads``) per transfer with a bounded queue between them, so a save takes about
max(produce, upload) instead of their sum, and a load max(download, verify + extract).
Memory stays bounded by the queue. Every other call passes through (``ForwardingBackend``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, BinaryIO

from ._backend import BlobWriter, ForwardingBackend
from ._stream import CHUNK_SIZE, Chunk
from ._threads import run_on_io

__all__ = ["PipelinedBackend"]

#: Chunks queued between the producer and the uploading thread (1 MiB each).
_WRITE_DEPTH = 16
#: Bytes fetched per read ahead, and how many such reads may wait.
_READ_BLOCK = 8 * CHUNK_SIZE
_READ_DEPTH = 2

_DONE: Any = object()


class _UploadBehind:
    """A BlobWriter whose writes run on a worker thread, in order."""

    def __init__(self, inner: BlobWriter) -> None:
        self._inner = inner
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_WRITE_DEPTH)
        self._error: BaseException | None = None
        self._done = run_on_io(self._run)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    self._inner.write(chunk)
                except BaseException as exc:
                    self._error = exc  # raised in the producer at its next call

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: Chunk) -> None:
        self._raise()
        self._queue.put(data)  # the caller never mutates a chunk it handed over

    def _finish(self) -> None:
        self._queue.put(_DONE)
        self._done.result()

    def commit(self) -> None:
        self._finish()
        self._raise()
        self._inner.commit()

    def abort(self) -> None:
        self._finish()
        self._inner.abort()


class _DownloadAhead:
    """A read-only stream that fetches the next blocks on a worker thread."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_READ_DEPTH)
        self._stop = threading.Event()
        self._buf = memoryview(b"")
        self._eof = False
        self._done = run_on_io(self._run)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._inner.read(_READ_BLOCK)
                self._queue.put(block)
                if not block:
                    return
        except BaseException as exc:
            self._queue.put(exc)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (a whole block when negative); ``b""`` at the end."""
        if not self._buf and not self._eof:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
            self._buf = memoryview(item)
        if size < 0 or size >= len(self._buf):
            out, self._buf = self._buf, memoryview(b"")
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return bytes(out)

    def close(self) -> None:
        """Stop reading ahead and close the underlying stream."""
        self._stop.set()
        while not self._done.done():
            with contextlib.suppress(queue.Empty):  # unblock a worker waiting for room
                self._queue.get(timeout=0.05)
        self._inner.close()

    def __enter__(self) -> _DownloadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PipelinedBackend(ForwardingBackend):
    """A backend whose large transfers overlap with the caller's work; other calls pass through."""

    def open_read(self, name: str) -> BinaryIO:
        """A stream over an object, fetched ahead of the reader."""
        return _DownloadAhead(self.backend.open_read(name))  # type: ignore[return-value]

    def writer(self, name: str) -> BlobWriter:
        """A writer for a new object, uploading behind the writer."""
        return _UploadBehind(self.backend.writer(name))
