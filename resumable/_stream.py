"""Chunk streams: digests that overlap I/O, ordered parallel maps, and replayable spools.

Pure plumbing with no storage knowledge. blake3, sha256, zlib and file I/O all release the GIL
on large buffers, so running them on different threads overlaps them for real: verifying or
compressing a payload costs about as much as copying it, not the sum of both.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

import blake3

from ._forks import forked
from ._threads import submit

__all__ = [
    "CHUNK_SIZE",
    "DIGESTS",
    "NEW_DIGEST",
    "Chunk",
    "Digest",
    "Spool",
    "discard",
    "ordered_map",
]

#: Size of one read, write or compressed member when streaming.
CHUNK_SIZE = 1 << 20

Chunk = bytes | bytearray | memoryview
T = TypeVar("T")
U = TypeVar("U")

# Below this, handing a chunk to another thread costs more than hashing it here.
_INLINE_HASH = 64 * 1024


class _Hasher(Protocol):
    def update(self, data: Chunk, /) -> object: ...
    def hexdigest(self) -> str: ...


def _blake3() -> _Hasher:
    # Large updates hash on all cores (BLAKE3 is a tree): a 1 MiB chunk in half the time on two.
    # Not in a fork child: the parent's rayon pool may exist there only as bookkeeping, and an
    # update handed to it never returns. Whether the parent started it is not knowable.
    return blake3.blake3(max_threads=1 if forked() else blake3.blake3.AUTO)


#: The payload digests a manifest may name, by the name it records.
DIGESTS: dict[str, Callable[[], _Hasher]] = {
    "blake3": _blake3,
    "sha256": hashlib.sha256,
}
#: The digest new snapshots record: blake3 is a cryptographic hash about three times as fast
#: as sha256 on one core, which is what lets a save or load of tensors keep pace with the disk.
NEW_DIGEST = "blake3"


class Digest:
    """A running digest and byte count whose updates run behind the caller's I/O.

    Example:
        >>> d = Digest("sha256")
        >>> d.update(b"abc")
        >>> d.hexdigest()[:8], d.size, d.algorithm
        ('ba7816bf', 3, 'sha256')

    """

    def __init__(self, algorithm: str = NEW_DIGEST) -> None:
        self.algorithm = algorithm
        self._hash = DIGESTS[algorithm]()
        self._pending: Future[None] | None = None
        self.size = 0

    def update(self, chunk: Chunk) -> None:
        """Add ``chunk``; a large one is hashed on a worker while the caller goes on.

        The caller must not mutate ``chunk`` afterwards.
        """
        self.size += len(chunk)
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if len(chunk) < _INLINE_HASH:
            self._hash.update(chunk)
        else:
            self._pending = submit(self._feed, chunk)

    def _feed(self, chunk: Chunk) -> None:
        self._hash.update(chunk)

    def hexdigest(self) -> str:
        """The lowercase hex digest of everything added so far (64 digits)."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._hash.hexdigest()


def ordered_map(fn: Callable[[T], U], items: Iterable[T], ahead: int = 2) -> Iterator[U]:
    """``map(fn, items)`` computed on worker threads, ``ahead`` items in flight, in order."""
    window: deque[Future[U]] = deque()
    try:
        for item in items:
            window.append(submit(fn, item))
            if len(window) > ahead:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for fut in window:
            fut.cancel()


def discard(source: object) -> None:
    """Release what a chunk source holds (a spool's temp file, an open generator)."""
    close = getattr(source, "close", None)
    if close is not None:
        close()


def _kernel_copy(src: int, dst: int, count: int) -> int:
    try:
        return os.copy_file_range(src, dst, count)
    except OSError:  # not supported between these filesystems: sendfile copies in-kernel too
        return os.sendfile(dst, src, None, count)


class Spool:
    """Chunks copied to an unnamed temp file, replayable from the start (for retries).

    Calling it returns a fresh iterator over the bytes; ``close()`` frees the file.
    """

    def __init__(self, chunks: Iterable[Chunk] = (), *, file: Path | None = None) -> None:
        self._f: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - close() closes it
        try:
            if file is not None:
                self._copy_file(file)
            for chunk in chunks:
                self._f.write(chunk)
        except BaseException:
            self._f.close()
            raise

    @classmethod
    def of_file(cls, path: Path) -> Spool:
        """A spool of a file's bytes, copied in the kernel when it can."""
        return cls(file=path)

    def _copy_file(self, path: Path) -> None:
        # No trip through Python's memory: copy_file_range, else sendfile.
        with path.open("rb") as src:
            size = os.fstat(src.fileno()).st_size
            copied = 0
            while copied < size or size == 0:
                n = _kernel_copy(src.fileno(), self._f.fileno(), size - copied or CHUNK_SIZE)
                if not n:
                    break
                copied += n
            # The file may have grown while we copied: take the rest the plain way.
            while chunk := src.read(CHUNK_SIZE):
                self._f.write(chunk)

    def __call__(self) -> Iterator[bytes]:
        self._f.seek(0)
        return iter(lambda: self._f.read(CHUNK_SIZE), b"")

    def close(self) -> None:
        """Delete the temp file."""
        self._f.close()
