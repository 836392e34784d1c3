"""Pure encoders: state <-> pickle, folder <-> tar stream, adaptive gzip, safe extraction.

Nothing here knows where bytes go. A folder becomes an iterator of ~1 MiB chunks of a tar
stream (never the whole archive in memory or on disk), optionally wrapped as a multi-member
gzip stream, which is still a valid ``.tar.gz``: ``tar xzf`` and Python's ``gzip`` read it.
Each member holds one chunk, compressed at level 1 when a probe shows that it compresses and
stored (level 0) when it does not, so random data costs a CRC rather than seconds of deflate.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import io
import os
import stat
import tarfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import cloudpickle

from ._errors import (
    ResumableError,
    SourceNotFoundError,
    StateError,
    UnsafeArchiveError,
    UnsafeSymlinkError,
    UnsupportedDataError,
)
from ._stream import CHUNK_SIZE, Chunk, ordered_map
from ._threads import run_on_io

__all__ = [
    "Compression",
    "HoleWriter",
    "Limits",
    "TarFacts",
    "dumps_state",
    "extract_tar",
    "gunzip_members",
    "gzip_members",
    "iter_file",
    "iter_tar",
    "loads_state",
    "write_file",
]

Compression = Literal["gzip", "none"]

# A probe of this many bytes decides whether a chunk is worth deflating.
_PROBE = 16 * 1024
# Deflate only when the probe shrinks to this fraction or less.
_WORTH_IT = 0.9


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what restoring one directory snapshot may write (stops tar bombs).

    Example:
        >>> Limits(max_entries=10).max_entries
        10

    """

    #: The most files, folders and links one snapshot may hold.
    max_entries: int = 1_000_000
    #: The most bytes of file content one snapshot may declare.
    max_bytes: int = 1 << 40


@dataclass(slots=True)
class TarFacts:
    """What a folder's tar stream held, counted as it was written; recorded in the manifest.

    A load refuses, mid-stream, an archive longer or with more members than its manifest says.

    Example:
        >>> TarFacts(raw_size=1024, members=1).fields()
        {'raw_size': 1024, 'members': 1}

    """

    #: Bytes of the uncompressed tar stream.
    raw_size: int = 0
    #: Files, folders and links in it.
    members: int = 0

    def fields(self) -> dict[str, int]:
        """The manifest fields that record these facts."""
        return {"raw_size": self.raw_size, "members": self.members}


def dumps_state(obj: object) -> bytes:
    """Pickle task state with cloudpickle (lambdas and local classes included)."""
    try:
        data: bytes = cloudpickle.dumps(obj)
    except Exception as exc:
        raise StateError(
            f"cannot pickle the task state ({type(obj).__name__}): {exc}. Yield picklable "
            "values (numbers, dicts, dataclasses, arrays), or keep files in Dir() state."
        ) from exc
    return data


def loads_state(data: bytes) -> Any:
    """Unpickle task state. Unpickling runs code: only load stores you trust (or sign them).

    Takes both a plain cloudpickle and a streamed state payload (see ``_statecodec``).
    """
    from ._statecodec import MAGIC, read_state  # the streamed format

    if data.startswith(MAGIC):
        return read_state((data,), size=len(data))[0]
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        raise StateError(
            f"cannot unpickle the saved task state: {exc}. Was it written by another version "
            "of the task's code? Delete the snapshot (resumable rm) to start over."
        ) from exc


def iter_file(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The bytes of a file, in chunks."""
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            yield chunk


def _source_error(path: Path) -> SourceNotFoundError:
    return SourceNotFoundError(
        2, f"nothing to save at {str(path)!r}: the path does not exist", str(path)
    )


def check_source(path: Path) -> Literal["file", "dir"]:
    """Whether ``path`` is a file or a folder; clear errors for anything else."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise _source_error(path) from None
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    raise UnsupportedDataError(
        f"cannot save {str(path)!r}: it is neither a regular file nor a folder"
    )


class _TarBuilder:
    """Packs tar records into fixed-size bytearrays handed out as they fill."""

    def __init__(self, chunk_size: int) -> None:
        self._size = chunk_size
        self._buf = bytearray(chunk_size)
        self._pos = 0

    def _take(self) -> bytearray:
        full = self._buf if self._pos == self._size else self._buf[: self._pos]
        self._buf = bytearray(self._size)
        self._pos = 0
        return full

    def put(self, data: bytes) -> Iterator[bytearray]:
        view = memoryview(data)
        while view:
            n = min(len(view), self._size - self._pos)
            self._buf[self._pos : self._pos + n] = view[:n]
            self._pos += n
            view = view[n:]
            if self._pos == self._size:
                yield self._take()

    def fill_from(self, f: io.RawIOBase, remaining: int, name: str) -> Iterator[bytearray]:
        """Copy exactly ``remaining`` bytes of ``f`` straight into the chunk buffers."""
        while remaining:
            end = self._pos + min(remaining, self._size - self._pos)
            room = memoryview(self._buf)[self._pos : end]
            n = f.readinto(room)
            if not n:
                raise ResumableError(
                    f"{name!r} shrank while it was being saved; save again once the task has "
                    "finished writing it"
                )
            self._pos += n
            remaining -= n
            if self._pos == self._size:
                yield self._take()

    def finish(self) -> Iterator[bytearray]:
        if self._pos:
            yield self._take()


def _entries(root: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Every path under ``root`` (sorted, links not followed) with its archive name."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            names = sorted(it, key=lambda e: e.name)
        for entry in names:
            path = Path(entry.path)
            st = entry.stat(follow_symlinks=False)
            yield path, path.relative_to(root).as_posix(), st
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)


def _link_target(root: Path, path: Path) -> str:
    """The relative target of a symlink under ``root``; refuse one that leaves it."""
    target = os.readlink(path)
    resolved = os.path.normpath(os.path.join(path.parent, target))
    if os.path.commonpath([root, resolved]) != str(root):
        raise UnsafeSymlinkError(
            f"cannot save {str(root)!r}: the link {str(path)!r} points to {target!r}, outside "
            "the folder. Copy the target into the folder or remove the link."
        )
    return os.path.relpath(resolved, path.parent)


def iter_tar(
    root: Path, chunk_size: int = CHUNK_SIZE, facts: TarFacts | None = None
) -> Iterator[bytearray]:
    """A folder as an uncompressed POSIX (pax) tar stream, in chunks of ``chunk_size``.

    ``facts``, when given, counts the stream's bytes and members as they are produced.
    """
    counted = facts if facts is not None else TarFacts()
    for chunk in _tar_records(Path(os.path.abspath(root)), chunk_size, counted):
        counted.raw_size += len(chunk)
        yield chunk


def _tar_records(root: Path, chunk_size: int, facts: TarFacts) -> Iterator[bytearray]:
    if check_source(root) != "dir":
        raise UnsupportedDataError(f"{str(root)!r} is not a folder")
    builder = _TarBuilder(chunk_size)
    for path, name, st in _entries(root):
        facts.members += 1
        info = tarfile.TarInfo(name)
        info.mtime, frac = divmod(st.st_mtime_ns, 1_000_000_000)
        if frac and info.mtime >= 0:  # pax keeps the nanoseconds that ustar drops
            info.pax_headers = {"mtime": f"{info.mtime}.{frac:09d}"}
        info.mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = _link_target(root, path)
        elif stat.S_ISREG(st.st_mode):
            info.size = st.st_size
        else:
            raise UnsupportedDataError(
                f"cannot save {str(path)!r}: only files, folders and links can be saved "
                "(this is a socket, fifo or device)"
            )
        yield from builder.put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if info.size:
            with path.open("rb", buffering=0) as f:
                yield from builder.fill_from(f, info.size, str(path))
            if pad := -info.size % tarfile.BLOCKSIZE:
                yield from builder.put(bytes(pad))
    yield from builder.put(bytes(2 * tarfile.BLOCKSIZE))
    yield from builder.finish()


def _gzip_member(chunk: Chunk) -> bytes:
    probe = zlib.compress(chunk[:_PROBE], 1)
    level = 1 if len(probe) <= _WORTH_IT * min(len(chunk), _PROBE) else 0
    return zlib.compress(chunk, level, wbits=31)


def gzip_members(chunks: Iterable[Chunk]) -> Iterator[bytes]:
    """A gzip stream made of one member per chunk, compressed on worker threads."""
    return ordered_map(_gzip_member, chunks)


def gunzip_members(chunks: Iterable[Chunk]) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip stream chunk by chunk; a truncated one raises."""
    d = zlib.decompressobj(wbits=31)
    started = False  # whether the current member has received any input
    for chunk in chunks:
        data = chunk
        while data:
            started = True
            out = d.decompress(data, 1 << 22)
            if out:
                yield out
            if d.eof:
                data = d.unused_data
                d = zlib.decompressobj(wbits=31)
                started = False
            else:
                data = d.unconsumed_tail
    if started:
        raise zlib.error("truncated gzip stream")


def _refuse(member: tarfile.TarInfo, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"member {member.name!r} refused: {why}")


class _Guard:
    """Checks each member before it is extracted, lexically, without asking the filesystem.

    ``tarfile``'s ``data`` filter resolves paths on disk, which unfixed CPython releases let a
    chain of links longer than PATH_MAX defeat (CVE-2025-4517). This guard needs no disk: it
    keeps the links the archive made (each with its target, resolved inside the root) and
    resolves every path against them. A member's own path must stay inside the root and must
    not pass through a link; a link's target, followed through the archive's earlier links,
    must stay inside the root; and no link may be made where an earlier path passed.
    """

    def __init__(self, limits: Limits, expected: TarFacts | None) -> None:
        self._limits = limits
        self._expected = expected
        self._entries = 0
        self._bytes = 0
        self._links: dict[str, list[str]] = {}  # each link made so far -> its resolved target
        self._through: set[str] = set()  # folders some path went through

    def _resolve(self, member: tarfile.TarInfo, parts: list[str], follow: bool) -> list[str]:
        """``parts`` resolved from the root through the archive's links (when ``follow``)."""
        steps = [p for p in parts if p not in ("", ".")]
        out: list[str] = []
        for i, part in enumerate(steps):
            if part == "..":
                if not out:
                    raise _refuse(member, "it leads outside the folder")
                out.pop()
                continue
            out.append(part)
            here = "/".join(out)
            last = i == len(steps) - 1
            if here in self._links and (follow or not last):
                if not follow:
                    raise _refuse(member, "its path passes through a link in the archive")
                out = list(self._links[here])
            if not last:
                self._through.update((here, "/".join(out)))
        return out

    def _count(self, member: tarfile.TarInfo) -> None:
        self._entries += 1
        self._bytes += max(member.size, 0)
        if self._entries > self._limits.max_entries:
            raise UnsafeArchiveError(
                f"the archive has more than {self._limits.max_entries} entries (Limits.max_entries)"
            )
        if self._bytes > self._limits.max_bytes:
            raise UnsafeArchiveError(
                f"the archive declares more than {self._limits.max_bytes} bytes (Limits.max_bytes)"
            )
        if self._expected is not None and self._entries > self._expected.members:
            raise UnsafeArchiveError(
                f"the archive has more than the {self._expected.members} members its manifest "
                "records"
            )

    def check(self, member: tarfile.TarInfo) -> str:
        """The member's path under the root, or ``UnsafeArchiveError``."""
        self._count(member)
        name = member.name.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/"):
            raise _refuse(member, "absolute or has '..'")
        if member.islnk():
            raise _refuse(member, "a hard link (snapshots hold none)")
        where = self._resolve(member, name.split("/"), follow=False)
        if not where:
            raise _refuse(member, "it names the folder itself")
        path = "/".join(where)
        if path in self._links:
            raise _refuse(member, "it replaces a link in the archive")
        if member.issym():
            if path in self._through:
                raise _refuse(member, "an earlier path goes through where this link would be")
            link = member.linkname.replace("\\", "/")
            if not link or link.startswith("/"):
                raise _refuse(member, f"its link target {member.linkname!r} is absolute or empty")
            self._links[path] = self._resolve(member, [*where[:-1], *link.split("/")], True)
        elif not (member.isreg() or member.isdir()):
            raise _refuse(member, "only files, folders and links are restored (a device or fifo)")
        return path


def _bounded(chunks: Iterable[Chunk], limit: int) -> Iterator[Chunk]:
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise UnsafeArchiveError(
                f"the archive is longer than the {limit} bytes its manifest records"
            )
        yield chunk


class _Forward:
    """A forward-only binary file over chunks: ``read``, ``tell`` and ``seek`` ahead.

    Enough for ``tarfile`` in its ordinary (not stream) mode, whose reads of a 512-byte
    header cost a slice here, where its stream mode copies its whole buffer on every read.
    """

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self._chunks = iter(chunks)
        self._buf = memoryview(b"")
        self._pos = 0

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """True, but only forward."""
        return True

    def tell(self) -> int:
        """Bytes consumed so far."""
        return self._pos

    def _take(self, size: int) -> list[memoryview]:
        out: list[memoryview] = []
        while size:
            if not self._buf:
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._buf = memoryview(nxt).cast("B")
            piece, self._buf = self._buf[:size], self._buf[size:]
            out.append(piece)
            size -= len(piece)
            self._pos += len(piece)
        return out

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); ``b""`` at the end."""
        if size < 0:
            size = 1 << 62
        pieces = self._take(size)
        return pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Skip ahead to ``offset``; going back is an error."""
        target = offset + (self._pos if whence == os.SEEK_CUR else 0)
        if whence == os.SEEK_END or target < self._pos:
            raise io.UnsupportedOperation("a tar stream is read forward only")
        self._take(target - self._pos)
        return self._pos

    def read_at(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes from ``offset`` on, or ``tarfile.ReadError``."""
        self.seek(offset)
        data = self.read(size)
        if len(data) != size:
            raise tarfile.ReadError("unexpected end of data")
        return data

    def drain(self) -> None:
        """Consume what is left, so that a digest over the source sees every byte."""
        self._buf = memoryview(b"")
        for _ in self._chunks:
            pass


# Runs of this many zero bytes in a restored file become holes (the file stays sparse).
_HOLE = 64 * 1024
_ZEROS = bytes(_HOLE)


class HoleWriter:
    """Writes a file's bytes at increasing offsets, seeking over zero blocks (holes).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f:
        ...     w = HoleWriter(f.fileno())
        ...     w.write(b"a" + bytes(200_000))
        ...     w.close()
        ...     os.fstat(f.fileno()).st_size
        200001

    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

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


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """A member's mtime in nanoseconds: exact from a pax ``mtime``, else its seconds."""
    text = member.pax_headers.get("mtime")
    try:
        if text is not None:
            return int(decimal.Decimal(text).scaleb(9))
        return int(member.mtime) * 1_000_000_000
    except (ArithmeticError, ValueError, TypeError):
        return 0


def _data_mode(member: tarfile.TarInfo) -> int:
    """A file's mode as ``tarfile``'s ``data`` filter sets it: no high bits, no go-w, u+rw."""
    mode = member.mode & 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


# A small file: read whole and created on an IO thread, in batches.
_SMALL = 256 * 1024
_BATCH_FILES = 256
_BATCH_BYTES = 4 << 20
_IN_FLIGHT = 3

_File = tuple[str, bytes, int, int]  # path, content, mode, mtime in ns
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


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


class _Writer:
    """Creates an archive's files: small ones in batches on IO threads, the rest in order.

    No fsync: a restore is a copy of a committed, durable snapshot, made visible by one
    rename once complete; after a crash the next run restores it again from the store.
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

    def directory(self, rel: str, member: tarfile.TarInfo) -> None:
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
        self._dirs.append((rel, _mtime_ns(member)))

    def link(self, rel: str, member: tarfile.TarInfo) -> None:
        self._parent(rel)
        self.settle()
        path = os.path.join(self._dest, rel)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(member.linkname, path)
        _set_mtime(path, rel, _mtime_ns(member))

    def small(self, rel: str, member: tarfile.TarInfo, data: bytes) -> None:
        self._parent(rel)
        self._replacing(rel)
        self._files.add(rel)
        path = os.path.join(self._dest, rel)
        self._batch.append((path, data, _data_mode(member), _mtime_ns(member)))
        self._batch_bytes += len(data)
        if len(self._batch) >= _BATCH_FILES or self._batch_bytes >= _BATCH_BYTES:
            self._send()

    def large(self, rel: str, member: tarfile.TarInfo, source: IO[bytes]) -> None:
        self._parent(rel)
        self._replacing(rel)
        self._files.add(rel)
        path = os.path.join(self._dest, rel)
        fd = os.open(path, _NEW_FILE, 0o600)
        try:
            w = HoleWriter(fd)
            left = member.size
            while left:
                data = source.read(min(left, CHUNK_SIZE))
                if not data:
                    raise tarfile.ReadError("unexpected end of data")
                w.write(data)
                left -= len(data)
            w.close()
            os.fchmod(fd, _data_mode(member))
            _set_mtime(fd, rel, _mtime_ns(member))
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Wait for every file, then set the folders' mtimes, deepest first."""
        self.settle()
        for rel, ns in reversed(self._dirs):
            _set_mtime(os.path.join(self._dest, rel), rel, ns)


def extract_tar(
    chunks: Iterable[Chunk], dest: Path, limits: Limits, expected: TarFacts | None = None
) -> None:
    """Extract a tar stream into ``dest``, refusing anything that would land outside it.

    With ``expected`` (what the manifest records), an archive longer or with more members
    than that is refused as soon as it exceeds it. ``dest`` must be a new, empty folder.
    Every member is checked by :class:`_Guard` (lexically) and gets the attributes that
    ``tarfile``'s ``data`` filter would give it; zero blocks of large files become holes.
    """
    reader = _Forward(chunks if expected is None else _bounded(chunks, expected.raw_size))
    guard = _Guard(limits, expected)
    writer = _Writer(dest)
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=reader, mode="r:", errorlevel=2
        ) as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # nothing is looked up by name: keep memory flat
                rel = guard.check(member)
                if member.isdir():
                    writer.directory(rel, member)
                elif member.issym():
                    writer.link(rel, member)
                elif member.size <= _SMALL and member.sparse is None:
                    writer.small(rel, member, reader.read_at(member.offset_data, member.size))
                else:
                    source = tar.extractfile(member)
                    assert source is not None
                    with source:
                        writer.large(rel, member, source)
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    reader.drain()
