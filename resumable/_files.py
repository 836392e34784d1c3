"""Local files on both sides of a snapshot: the source a save reads, the tree a restore writes.

- :func:`check_source` and :func:`iter_file`: what a path to save is, and a file's bytes in
  chunks;
- :func:`write_file` and :class:`HoleWriter`: one file written at increasing offsets, with runs
  of zeros left as holes (a restored sparse file stays sparse);
- :class:`TreeWriter`: the files, folders and links of a restored tree, small files created in
  batches on IO threads, folders' times set last.

Knows nothing of archive formats: the caller (``_archive``) decides what each entry is, where
it goes and which mode and time it gets. Besides ``OSError``, what the tree writer raises
itself (a time it cannot set, a file's bytes ending early) is a ``tarfile`` error, which the
restore reports as an unreadable archive.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
import stat
import sys
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Literal

from ._errors import ConfigurationError, SourceNotFoundError, UnsupportedDataError, source_error
from ._stream import CHUNK_SIZE, Chunk
from ._threads import run_on_io

__all__ = [
    "SMALL_FILE",
    "HoleWriter",
    "TreeWriter",
    "check_source",
    "exchange",
    "iter_file",
    "refuse_overlap",
    "replace_file",
    "within",
    "write_file",
]

#: Files up to this size are read whole and created on an IO thread, in batches.
SMALL_FILE = 256 * 1024

# Runs of this many zero bytes in a restored file become holes (the file stays sparse).
_HOLE = 64 * 1024
_ZEROS = bytes(_HOLE)

# Small files go to an IO thread in batches of at most this many files or bytes, and at most
# this many batches are in flight at once.
_BATCH_FILES = 256
_BATCH_BYTES = 4 << 20
_IN_FLIGHT = 3

_File = tuple[str, bytes, int, int]  # path, content, mode, mtime in ns
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


# -- the source of a save -----------------------------------------------------------------------


def iter_file(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The bytes of a file, in chunks; one that cannot be read is named (``source_error``)."""
    try:
        with path.open("rb", buffering=0) as f:
            # What consumes the chunks runs outside this frame: its errors never land here.
            while chunk := f.read(chunk_size):
                yield chunk
    except OSError as exc:
        raise source_error(exc, str(path), in_folder=False) from exc


def _source_error(path: Path) -> SourceNotFoundError:
    return SourceNotFoundError(
        2, f"nothing to save at {str(path)!r}: the path does not exist", str(path)
    )


def check_source(path: Path) -> Literal["file", "dir"]:
    """Whether ``path`` is a file or a folder; clear errors for anything else."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # "file.txt/model.pt" does not exist either
        raise _source_error(path) from None
    except OSError as exc:  # a folder on the way that this process may not enter, ...
        raise source_error(exc, str(path), in_folder=False) from exc
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    raise UnsupportedDataError(
        f"cannot save {str(path)!r}: it is neither a regular file nor a folder"
    )


def within(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it (as written: resolve links first).

    Example:
        >>> within(Path("/data/run"), Path("/data")), within(Path("/data"), Path("/data/run"))
        (True, False)

    """
    return inner == outer or outer in inner.parents


def refuse_overlap(folder: Path, store: Path) -> None:
    """``ConfigurationError`` when ``folder`` is ``store``, or one of them holds the other.

    A restore replaces its folder whole: never the folder of the snapshots it restores.

    Example:
        >>> refuse_overlap(Path("/data/run"), Path("/data/store"))
        >>> try:
        ...     refuse_overlap(Path("/data"), Path("/data/store"))
        ... except ConfigurationError as exc:
        ...     print(str(exc)[:40])
        cannot restore into '/data': it overlaps

    """
    a, b = Path(os.path.realpath(folder)), Path(os.path.realpath(store))
    if within(a, b) or within(b, a):
        raise ConfigurationError(
            f"cannot restore into {str(folder)!r}: it overlaps the checkpoint's folder "
            f"{str(store)!r}, which the restore would replace; restore outside the store"
        )


# -- one restored file ----------------------------------------------------------------------------


class HoleWriter:
    """Writes a file's bytes at increasing offsets from ``at``, seeking over zero blocks (holes).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f:
        ...     w = HoleWriter(f.fileno())
        ...     w.write(b"a" + bytes(200_000))
        ...     w.close()
        ...     os.fstat(f.fileno()).st_size
        200001

    """

    def __init__(self, fd: int, at: int = 0) -> None:
        self._fd = fd
        self._pos = at

    def write(self, data: Chunk) -> None:
        """Append ``data``; zero blocks of 64 KiB are skipped, not written."""
        view = memoryview(data).cast("B")
        n = len(view)
        start = 0  # beginning of the pending run of data
        i = 0
        while i < n:
            end = min(i + _HOLE, n)
            # Random data almost never starts and ends with a zero: a compare only then.
            if end - i == _HOLE and view[i] == 0 and view[end - 1] == 0 and view[i:end] == _ZEROS:
                if start < i:
                    _pwrite_all(self._fd, view[start:i], self._pos + start)
                start = end
            i = end
        if start < n:
            _pwrite_all(self._fd, view[start:], self._pos + start)
        self._pos += n

    def close(self) -> None:
        """Set the size: a file that ends in a hole gets its full length."""
        os.ftruncate(self._fd, self._pos)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def write_file(path: Path, chunks: Iterable[Chunk]) -> None:
    """Write ``chunks`` to a new file at ``path``, keeping runs of zeros as holes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        w = HoleWriter(fd)
        for chunk in chunks:
            w.write(chunk)
        w.close()
    finally:
        os.close(fd)


def _libc_renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (Linux, glibc 2.28 or later), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# What renameat2 answers where an exchange cannot be done: nothing was changed. (EPERM: a
# sandbox refusing the call; a rename that is not allowed fails again, saying so.)
_NO_EXCHANGE = frozenset(
    {errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES}
)


def exchange(a: Path, b: Path) -> bool:
    """Swap the entries at ``a`` and ``b`` in one step; False (nothing done) where it cannot be.

    It cannot where the system or filesystem has no atomic exchange, or ``b`` is missing.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     a, b = Path(d, "a"), Path(d, "b")
        ...     _ = a.write_bytes(b"new"), b.write_bytes(b"old")
        ...     done = exchange(a, b)
        ...     b.read_bytes() if done else b"new"
        b'new'

    """
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_file(path: Path, chunks: Iterable[Chunk]) -> None:
    """Make ``path`` hold ``chunks``, all or nothing: a temp file beside it, swapped in.

    The swap happens only once ``chunks`` were read to their end (a verified payload raises
    there when it does not match): a failure leaves ``path`` as it was. The file ``path``
    held before is never written to: whoever still reads (or maps) it reads it whole. A
    folder at ``path`` stays: ``IsADirectoryError``.
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_file(temp, chunks)
        # ext4 starts writing a file's data out when it is renamed over another (its
        # auto_da_alloc), which made a 16-byte load 90 us slower; an exchange does not.
        if not exchange(temp, path):
            os.replace(temp, path)
        else:
            try:
                os.unlink(temp)  # the previous file, now under the temp name
            except IsADirectoryError:  # it was a folder: put it back, and fail as a rename does
                exchange(temp, path)
                raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path)) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


# -- a restored tree ------------------------------------------------------------------------------


def _write_small(batch: list[_File]) -> None:
    for path, data, mode, ns in batch:
        fd = os.open(path, _NEW_FILE, 0o600)
        try:
            if data:
                _pwrite_all(fd, memoryview(data), 0)
            os.fchmod(fd, mode)
            _set_mtime(fd, path, ns)
        finally:
            os.close(fd)


def _set_mtime(fd: int | str, name: str, ns: int) -> None:
    try:
        os.utime(fd, ns=(ns, ns), follow_symlinks=not isinstance(fd, str))
    except (OverflowError, OSError) as exc:
        raise tarfile.ExtractError(f"could not set the time of {name!r}: {exc}") from None


class TreeWriter:
    """Creates a tree's files: small ones in batches on IO threads, the rest in order.

    Paths are relative to ``dest``, with ``/`` separators, already checked to stay inside it
    (``_archive``'s guard); a parent folder is made when missing. No fsync: a restore is a
    copy of a committed, durable snapshot, made visible by one rename once complete; after a
    crash the next run restores it again from the store.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as dest:
        ...     w = TreeWriter(Path(dest))
        ...     w.small("a/b.txt", b"hi", 0o644, 0)
        ...     w.finish()
        ...     (Path(dest) / "a" / "b.txt").read_bytes()
        b'hi'

    """

    def __init__(self, dest: Path) -> None:
        self._dest = str(dest)
        self._batch: list[_File] = []
        self._batch_bytes = 0
        self._flight: deque[Future[None]] = deque()
        self._made: set[str] = {""}  # folders known to exist (relative)
        self._files: set[str] = set()  # files written so far (relative)
        self._dirs: list[tuple[str, int]] = []  # folders and their mtimes, set at the end

    def _parent(self, rel: str) -> None:
        parent = rel.rpartition("/")[0]
        if parent not in self._made:
            os.makedirs(os.path.join(self._dest, parent), exist_ok=True)
            while parent and parent not in self._made:
                self._made.add(parent)
                parent = parent.rpartition("/")[0]

    def _send(self) -> None:
        if self._batch:
            while len(self._flight) >= _IN_FLIGHT:
                self._flight.popleft().result()
            self._flight.append(run_on_io(functools.partial(_write_small, self._batch)))
            self._batch, self._batch_bytes = [], 0

    def settle(self) -> None:
        """Wait for every file in flight (their errors raise here)."""
        self._send()
        while self._flight:
            self._flight.popleft().result()

    def abandon(self) -> None:
        """Wait for the files in flight, ignoring their errors (one is already raising)."""
        self._batch = []
        while self._flight:
            with contextlib.suppress(BaseException):
                self._flight.popleft().result()

    def _replacing(self, rel: str) -> None:
        """Before writing at ``rel`` a second time, let the first write land."""
        if rel in self._files:
            self.settle()

    def directory(self, rel: str, mtime_ns: int) -> None:
        """Make the folder ``rel`` (an existing one is kept); its time is set by :meth:`finish`."""
        self._parent(rel)
        path = os.path.join(self._dest, rel)
        if rel not in self._made:
            self._replacing(rel)
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise
            self._made.add(rel)
        self._dirs.append((rel, mtime_ns))

    def link(self, rel: str, target: str, mtime_ns: int) -> None:
        """Make ``rel`` a symbolic link to ``target``, replacing what is there."""
        self._parent(rel)
        self.settle()
        path = os.path.join(self._dest, rel)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
        _set_mtime(path, rel, mtime_ns)

    def small(self, rel: str, data: bytes, mode: int, mtime_ns: int) -> None:
        """Queue the file ``rel`` holding ``data``: it is written with a batch, on an IO thread."""
        self._parent(rel)
        self._replacing(rel)
        self._files.add(rel)
        path = os.path.join(self._dest, rel)
        self._batch.append((path, data, mode, mtime_ns))
        self._batch_bytes += len(data)
        if len(self._batch) >= _BATCH_FILES or self._batch_bytes >= _BATCH_BYTES:
            self._send()

    def large(self, rel: str, source: IO[bytes], size: int, mode: int, mtime_ns: int) -> None:
        """Write the file ``rel`` from ``size`` bytes of ``source`` now, zero blocks as holes."""
        self._parent(rel)
        self._replacing(rel)
        self._files.add(rel)
        path = os.path.join(self._dest, rel)
        fd = os.open(path, _NEW_FILE, 0o600)
        try:
            w = HoleWriter(fd)
            left = size
            while left:
                data = source.read(min(left, CHUNK_SIZE))
                if not data:
                    raise tarfile.ReadError("unexpected end of data")
                w.write(data)
                left -= len(data)
            w.close()
            os.fchmod(fd, mode)
            _set_mtime(fd, rel, mtime_ns)
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Wait for every file, then set the folders' mtimes, deepest first."""
        self.settle()
        for rel, ns in reversed(self._dirs):
            _set_mtime(os.path.join(self._dest, rel), rel, ns)
