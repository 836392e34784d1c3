"""Chunk streams: digests that overlap I/O, ordered parallel maps, and replayable spools.

Pure plumbing with no storage knowledge. blake3, sha256, zlib and file I/O all release the GIL
on large buffers, so running them on different threads overlaps them for real: verifying or
compressing a payload costs about as much as copying it, not the sum of both.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

import blake3

from ._errors import source_error
from ._forks import forked
from ._threads import submit

__all__ = [
    "CHUNK_SIZE",
    "DIGESTS",
    "NEW_DIGEST",
    "Chunk",
    "Digest",
    "Spool",
    "anonymous_memory",
    "discard",
    "frozen_copy",
    "frozen_copy_slow",
    "ordered_map",
    "piece_digest",
    "read_at_most",
]

#: Size of one read, write or compressed member when streaming.
CHUNK_SIZE = 1 << 20

Chunk = bytes | bytearray | memoryview
T = TypeVar("T")
U = TypeVar("U")

# Below this, handing a chunk to another thread costs more than hashing it here.
_INLINE_HASH = 64 * 1024


#: Large copies and page faults go in pieces of this size, without the GIL (see frozen_copy).
_PIECE = 8 << 20
#: Below this a copy is one ``bytes()`` call: it holds the GIL for well under a millisecond.
_OFF_GIL_MIN = 1 << 20
#: Linux ``madvise`` advice: fault in (and zero) the pages of a range now, for writing.
_MADV_POPULATE_WRITE = 23


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


#: ``madvise`` through ctypes, which releases the GIL for the call (``mmap.madvise`` does not).
_MADVISE = _madvise()


def anonymous_memory(size: int) -> mmap.mmap:
    """``size`` bytes of new writable memory, its pages faulted in without holding the GIL.

    New memory costs a page fault per page when first written; faulting the pages in ahead,
    in bulk, is faster (a fresh 144 MB buffer filled in 73 ms instead of 118 ms here). The
    bulk fault ran in ``mmap(MAP_POPULATE)``, which holds the GIL: 90 ms for 300 MiB, during
    which an event loop of the process stood still. Here it runs in pieces through
    ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14+) called by ctypes, which lets the GIL go;
    elsewhere, or on an older kernel, the pages are faulted in by the first writes.

    Example:
        >>> len(anonymous_memory(3 << 20))
        3145728

    """
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if _MADVISE is not None and size:
        view = (ctypes.c_char * size).from_buffer(memory)
        try:
            start = ctypes.addressof(view)
            for offset in range(0, size, _PIECE):
                if _MADVISE(start + offset, min(_PIECE, size - offset), _MADV_POPULATE_WRITE):
                    break  # EINVAL before Linux 5.14: the first writes fault the pages in
        finally:
            del view  # the map cannot be closed or resized while a ctypes view exports it
    return memory


def frozen_copy(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """A copy of ``data`` that later changes to it cannot reach (``bytes`` come back as they are).

    The fast twin of :func:`frozen_copy_slow` (``bytes(data)``; held to the same bytes by
    ``tests/codec/test_statecodec_fastpath.py``). ``bytes()`` of 300 MiB holds the GIL for
    about 130 ms: on a worker thread under an event loop (``await cp.save(buffer)``) that is
    how long the loop stands still. A large writable buffer is copied instead into new
    memory (:func:`anonymous_memory`) in pieces by ``ctypes.memmove``, which lets the GIL go;
    a read-only or non-contiguous view is copied piece by piece, with the GIL free between
    pieces. The result is a read-only view of the copy.

    Example:
        >>> bytes(frozen_copy(bytearray(b"abc")))
        b'abc'

    """
    if isinstance(data, bytes):
        return data  # immutable: nothing can change it
    view = memoryview(data)
    if view.nbytes < _OFF_GIL_MIN or not view.c_contiguous:
        return bytes(view)
    view = view.cast("B")
    size = view.nbytes
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if view.readonly:
        target = memoryview(memory)
        try:
            for offset in range(0, size, _PIECE):  # the GIL may switch between pieces
                target[offset : offset + _PIECE] = view[offset : offset + _PIECE]
        finally:
            target.release()
    else:
        to_view = (ctypes.c_char * size).from_buffer(memory)
        from_view = (ctypes.c_char * size).from_buffer(view)
        try:
            to, start = ctypes.addressof(to_view), ctypes.addressof(from_view)
            for offset in range(0, size, _PIECE):
                ctypes.memmove(to + offset, start + offset, min(_PIECE, size - offset))
        finally:
            del to_view, from_view
    return memoryview(memory).toreadonly()


def frozen_copy_slow(data: bytes | bytearray | memoryview) -> bytes:
    """:func:`frozen_copy` the obvious way: ``bytes(data)``."""
    return bytes(data)


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


def piece_digest(data: Chunk) -> str:
    """The digest (:data:`NEW_DIGEST`, hex) of ``data``, hashed on the calling thread alone.

    For hashing already spread over the CPU pool (a folder's pieces, one per task): BLAKE3's
    own threads would only contend with the pool's.

    Example:
        >>> piece_digest(b"abc") == blake3.blake3(b"abc").hexdigest()
        True

    """
    hasher = blake3.blake3(max_threads=1)
    hasher.update(data)
    return hasher.hexdigest()


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


def read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``: fewer only at its end (short reads are read on).

    Example:
        >>> import io
        >>> read_at_most(io.BytesIO(b"abcdef"), 4), read_at_most(io.BytesIO(b"ab"), 4)
        (b'abcd', b'ab')

    """
    parts: list[bytes] = []
    left = limit
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


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
        try:
            opened = path.open("rb")
        except OSError as exc:  # the file to save, not the store: say which, and what to do
            raise source_error(exc, str(path), in_folder=False) from exc
        with opened as src:
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
