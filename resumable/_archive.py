"""A folder as a tar stream and back: building, adaptive gzip, and extraction behind a guard.

- :func:`iter_tar`: a folder as an uncompressed POSIX (pax) tar stream in ~1 MiB chunks
  (never the whole archive in memory or on disk), counting what it holds (:class:`TarFacts`,
  recorded in the manifest);
- :func:`gzip_members` / :func:`gunzip_members`: a multi-member gzip stream, which is still a
  valid ``.tar.gz`` (``tar xzf`` and Python's ``gzip`` read it). Each member holds one chunk,
  compressed at level 1 when a probe shows that it compresses and stored (level 0) when it
  does not, so random data costs a CRC rather than seconds of deflate;
- :func:`extract_tar`: a tar stream unpacked into a new folder; every member is checked first
  by a lexical guard (no path or link may lead outside the folder) and counted against
  :class:`Limits` and what the manifest recorded. The files themselves are written by
  ``_files.TreeWriter``.

Where the chunks come from and go is the caller's business: this module sees chunks only, and
the files of the folder it packs or unpacks.
"""

from __future__ import annotations

import contextlib
import decimal
import errno
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._errors import (
    ResumableError,
    UnsafeArchiveError,
    UnsafeSymlinkError,
    UnsupportedDataError,
    source_error,
)
from ._files import SMALL_FILE, TreeWriter, check_source
from ._stream import CHUNK_SIZE, Chunk, ordered_map

__all__ = [
    "Compression",
    "Guard",
    "Limits",
    "TarFacts",
    "extract_tar",
    "gunzip_members",
    "gzip_members",
    "iter_tar",
    "link_target",
    "open_source",
    "reading",
    "safe_mode",
    "walk",
]

#: How a folder's tar stream is stored: gzip members, or as it is.
Compression = Literal["gzip", "none"]

# A probe of this many bytes decides whether a chunk is worth deflating.
_PROBE = 16 * 1024
# Deflate only when the probe shrinks to this fraction or less.
_WORTH_IT = 0.9

# What opening a path the folder listed meets when it was swapped since (it is opened without
# following links, a folder as a folder): not a fault of the file.
_CHANGED = frozenset({errno.ELOOP, errno.ENOTDIR})


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


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Report an ``OSError`` met reading ``path``, of a folder being saved, as naming it.

    A source error (``SourcePermissionError``, ...) says what to do, keeps the builtin a
    caller catches, and is never taken for a fault of the store. Wrap only the reads of the
    source: an error of the store met inside would be blamed on the file.

    A path removed since it was listed is a ``SourceNotFoundError``; one turned into a link
    or no longer a folder is left as it is: the folder changed under the save, and a
    retried save lists it anew.
    """
    try:
        yield
    except ResumableError:
        raise
    except OSError as exc:
        if exc.errno in _CHANGED:
            raise
        raise source_error(exc, str(path), in_folder=True) from exc


def walk(root: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Every path under ``root`` (sorted, links not followed) with its archive name.

    Each folder is opened without following a link and must be the folder its parent
    listed (same device and inode): a folder swapped for a link while it is saved is never
    followed out of the tree (``ResumableError``). A folder or entry that cannot be read is
    named (see :func:`reading`).
    """
    # Each folder with its archive name's prefix ("" for the root, "a/b/" below it): a
    # string join per entry, where Path.relative_to cost a fifth of a save of small files.
    stack: list[tuple[Path, str, tuple[int, int] | None]] = [(root, "", None)]
    while stack:
        folder, prefix, expected = stack.pop()
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        with reading(folder):
            fd = os.open(folder, flags if expected is None else flags | os.O_NOFOLLOW)
        try:
            with reading(folder):
                _same(fd, folder, expected)
                with os.scandir(fd) as it:
                    names = sorted(it, key=lambda e: e.name)
            for entry in names:
                path = folder / entry.name
                with reading(path):
                    st = entry.stat(follow_symlinks=False)
                rel = prefix + entry.name
                yield path, rel, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append((path, rel + "/", (st.st_dev, st.st_ino)))
        finally:
            os.close(fd)


def _replaced(path: Path) -> ResumableError:
    return ResumableError(
        f"{str(path)!r} was replaced while it was being saved; save again once the task has "
        "finished changing the folder"
    )


def _same(
    fd: int, path: Path, expected: tuple[int, int] | None, *, regular: bool = False
) -> os.stat_result:
    st = os.fstat(fd)
    if expected is not None and (st.st_dev, st.st_ino) != expected:
        raise _replaced(path)
    if regular and not stat.S_ISREG(st.st_mode):
        raise _replaced(path)
    return st


def open_source(path: Path, st: os.stat_result) -> int:
    """A file of the folder being saved, opened for reading: the file its folder listed.

    Never through a link, never blocking on a FIFO swapped in, and the same device and
    inode as ``st`` (else ``ResumableError``: it was replaced while being saved). A file
    that cannot be opened is named (see :func:`reading`).
    """
    with reading(path):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        # The file listed, not one swapped in (a new folder may even reuse its inode number).
        _same(fd, path, (st.st_dev, st.st_ino), regular=True)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def link_target(root: Path, path: Path) -> str:
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
    for path, name, st in walk(root):
        facts.members += 1
        info = _tar_info(root, path, name, st)
        yield from builder.put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if info.size:
            with open(open_source(path, st), "rb", buffering=0) as f, reading(path):
                # Only the file is read in here: what consumes the chunks runs outside.
                yield from builder.fill_from(f, info.size, str(path))
            if pad := -info.size % tarfile.BLOCKSIZE:
                yield from builder.put(bytes(pad))
    yield from builder.put(bytes(2 * tarfile.BLOCKSIZE))
    yield from builder.finish()


def _tar_info(root: Path, path: Path, name: str, st: os.stat_result) -> tarfile.TarInfo:
    """The tar header of one entry: its type, mode, size or link, and exact mtime."""
    info = tarfile.TarInfo(name)
    info.mtime, frac = divmod(st.st_mtime_ns, 1_000_000_000)
    if frac and info.mtime >= 0:  # pax keeps the nanoseconds that ustar drops
        info.pax_headers = {"mtime": f"{info.mtime}.{frac:09d}"}
    info.mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = link_target(root, path)
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
    else:
        raise UnsupportedDataError(
            f"cannot save {str(path)!r}: only files, folders and links can be saved "
            "(this is a socket, fifo or device)"
        )
    return info


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


# Longest name and path a member may have: what Linux filesystems hold (NAME_MAX and
# PATH_MAX, less the final NUL). Anything longer cannot have been saved from one; refused as
# the snapshot's fault rather than failing the restore as if the disk had.
_NAME_MAX = 255
_PATH_MAX = 4095


def _refuse(member: tarfile.TarInfo, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"member {member.name!r} refused: {why}")


class Guard:
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
        """The member's path under the root, or ``UnsafeArchiveError``.

        A backslash is a character of a name, as on the systems snapshots are made on, not
        a separator (a file named with one came back as a file in a new folder).
        """
        self._count(member)
        name = member.name
        if name.startswith("/") or ".." in name.split("/"):
            raise _refuse(member, "absolute or has '..'")
        if len(os.fsencode(name)) > _PATH_MAX or any(
            len(os.fsencode(part)) > _NAME_MAX for part in name.split("/")
        ):
            raise _refuse(member, "a name or path longer than any filesystem holds")
        if member.islnk():
            raise _refuse(member, "a hard link (snapshots hold none)")
        where = self._resolve(member, name.split("/"), follow=False)
        if not where:
            raise _refuse(member, "it names the folder itself")
        path = "/".join(where)
        if path in self._links:
            raise _refuse(member, "it replaces a link in the archive")
        if member.issym():
            self._add_link(member, path, where)
        elif not (member.isreg() or member.isdir()):
            raise _refuse(member, "only files, folders and links are restored (a device or fifo)")
        return path

    def _add_link(self, member: tarfile.TarInfo, path: str, where: list[str]) -> None:
        """Record the link ``member`` makes at ``path``, with its target resolved in the root."""
        if path in self._through:
            raise _refuse(member, "an earlier path goes through where this link would be")
        link = member.linkname
        if len(os.fsencode(link)) > _PATH_MAX:
            raise _refuse(member, "its link target is longer than any filesystem holds")
        if not link or link.startswith("/"):
            raise _refuse(member, f"its link target {member.linkname!r} is absolute or empty")
        self._links[path] = self._resolve(member, [*where[:-1], *link.split("/")], True)


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


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """A member's mtime in nanoseconds: exact from a pax ``mtime``, else its seconds."""
    text = member.pax_headers.get("mtime")
    try:
        if text is not None:
            return int(decimal.Decimal(text).scaleb(9))
        return int(member.mtime) * 1_000_000_000
    except (ArithmeticError, ValueError, TypeError):
        return 0


def safe_mode(mode: int) -> int:
    """A file's mode as ``tarfile``'s ``data`` filter sets it: no high bits, no go-w, u+rw.

    Example:
        >>> oct(safe_mode(0o4777)), oct(safe_mode(0o644))
        ('0o755', '0o644')

    """
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def extract_tar(
    chunks: Iterable[Chunk], dest: Path, limits: Limits, expected: TarFacts | None = None
) -> None:
    """Extract a tar stream into ``dest``, refusing anything that would land outside it.

    With ``expected`` (what the manifest records), an archive longer or with more members
    than that is refused as soon as it exceeds it. ``dest`` must be a new, empty folder.
    Every member is checked by :class:`Guard` (lexically) and gets the attributes that
    ``tarfile``'s ``data`` filter would give it; zero blocks of large files become holes.
    """
    reader = _Forward(chunks if expected is None else _bounded(chunks, expected.raw_size))
    guard = Guard(limits, expected)
    writer = TreeWriter(dest)
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=reader, mode="r:", errorlevel=2
        ) as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # nothing is looked up by name: keep memory flat
                _extract(tar, reader, writer, guard.check(member), member)
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    reader.drain()


def _extract(
    tar: tarfile.TarFile, reader: _Forward, writer: TreeWriter, rel: str, member: tarfile.TarInfo
) -> None:
    """Hand one checked member to the writer, with the attributes the data filter gives it."""
    ns = _mtime_ns(member)
    if member.isdir():
        writer.directory(rel, ns)
    elif member.issym():
        writer.link(rel, member.linkname, ns)
    elif member.size <= SMALL_FILE and member.sparse is None:
        data = reader.read_at(member.offset_data, member.size)
        writer.small(rel, data, safe_mode(member.mode), ns)
    else:
        source = tar.extractfile(member)
        assert source is not None
        with source:
            writer.large(rel, source, member.size, safe_mode(member.mode), ns)
