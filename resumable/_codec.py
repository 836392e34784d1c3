"""Pure encoders: state <-> pickle, folder <-> tar stream, adaptive gzip, safe extraction.

Nothing here knows where bytes go. A folder becomes an iterator of ~1 MiB chunks of a tar
stream (never the whole archive in memory or on disk), optionally wrapped as a multi-member
gzip stream, which is still a valid ``.tar.gz``: ``tar xzf`` and Python's ``gzip`` read it.
Each member holds one chunk, compressed at level 1 when a probe shows that it compresses and
stored (level 0) when it does not, so random data costs a CRC rather than seconds of deflate.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cloudpickle

from ._errors import (
    ResumableError,
    SourceNotFoundError,
    StateError,
    UnsafeArchiveError,
    UnsafeSymlinkError,
    UnsupportedDataError,
)
from ._stream import CHUNK_SIZE, Chunk, ChunkReader, ordered_map

__all__ = [
    "Compression",
    "Limits",
    "dumps_state",
    "extract_tar",
    "gunzip_members",
    "gzip_members",
    "iter_file",
    "iter_tar",
    "loads_state",
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
    """Unpickle task state. Unpickling runs code: only load stores you trust (or sign them)."""
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


def iter_tar(root: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytearray]:
    """A folder as an uncompressed POSIX (pax) tar stream, in chunks of ``chunk_size``."""
    root = Path(os.path.abspath(root))
    if check_source(root) != "dir":
        raise UnsupportedDataError(f"{str(root)!r} is not a folder")
    builder = _TarBuilder(chunk_size)
    for path, name, st in _entries(root):
        info = tarfile.TarInfo(name)
        info.mtime = int(st.st_mtime)
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


def _checked_filter(limits: Limits) -> Any:
    counts = {"entries": 0, "bytes": 0}

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        counts["entries"] += 1
        counts["bytes"] += max(member.size, 0)
        if counts["entries"] > limits.max_entries:
            raise UnsafeArchiveError(
                f"the archive has more than {limits.max_entries} entries (Limits.max_entries)"
            )
        if counts["bytes"] > limits.max_bytes:
            raise UnsafeArchiveError(
                f"the archive declares more than {limits.max_bytes} bytes (Limits.max_bytes)"
            )
        parts = member.name.replace("\\", "/").split("/")
        if member.name.startswith("/") or ".." in parts:
            raise UnsafeArchiveError(f"member {member.name!r} refused: absolute or has '..'")
        if member.islnk():
            raise UnsafeArchiveError(f"hard link {member.name!r} refused: snapshots hold none")
        try:
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(f"unsafe member {member.name!r}: {exc}") from exc

    return check


def extract_tar(chunks: Iterable[Chunk], dest: Path, limits: Limits) -> None:
    """Extract a tar stream into ``dest``, refusing anything that would land outside it."""
    reader = ChunkReader(chunks)
    member_filter = _checked_filter(limits)
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=reader, mode="r|", bufsize=CHUNK_SIZE, errorlevel=2
    ) as tar:
        tar.copybufsize = CHUNK_SIZE  # its 16 KiB default makes large members crawl
        for member in tar:
            tar.extract(member, dest, filter=member_filter)
    reader.drain()
