"""A folder snapshot by content written back: the tree a restore writes.

:func:`write_tree` writes an index's tree into a new folder: every entry checked first by the
archive's lexical guard and ``Limits`` (plus: no entry twice or before its folder, a bounded
number of piece uses), the pieces fetched pack by pack in order and each verified, written
wherever it is used (zero blocks as holes), or taken from a folder that already holds the
same bytes. The other way, the scan a save makes, is ``_tree``.

Knows nothing of where packs are: the caller fetches the pieces.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from . import _tree
from ._archive import Guard, Limits, safe_mode
from ._errors import CorruptCheckpointError
from ._files import HoleWriter, TreeWriter
from ._index import Index, Node, Piece
from ._stream import Chunk, piece_digest
from ._tree import SMALLEST_BLOCK

__all__ = ["Fetch", "write_tree"]

_OPEN_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC

#: The pieces of one pack to fetch, in offset order -> each with its verified bytes.
Fetch = Callable[[str, list[Piece]], Iterator[tuple[Piece, bytes]]]


def _member(node: Node) -> tarfile.TarInfo:
    """The tar header a node would have: the archive's guard checks it as one."""
    member = tarfile.TarInfo(node.path)
    member.type = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "f": tarfile.REGTYPE}[node.type]
    member.size = node.size
    member.linkname = node.target or ""
    return member


def _check(index: Index, limits: Limits) -> list[str]:
    """Each node's checked path under the root; ``UnsafeArchiveError`` or corrupt otherwise."""
    guard = Guard(limits, None)
    folders = {""}
    seen: set[str] = set()
    paths: list[str] = []
    for node in index.nodes:
        path = guard.check(_member(node))
        if path in seen:
            raise CorruptCheckpointError(f"folder index lists {path!r} twice")
        if path.rpartition("/")[0] not in folders:
            raise CorruptCheckpointError(f"folder index lists {path!r} before its folder")
        if node.type == "d":
            folders.add(path)
        seen.add(path)
        paths.append(path)
    uses = sum(len(n.pieces) for n in index.nodes)
    if uses > len(index.nodes) + index.logical_size() // min(_tree.BLOCK, SMALLEST_BLOCK):
        raise CorruptCheckpointError(
            f"folder index names pieces {uses} times for {index.logical_size()} bytes: "
            "more than any writer makes"
        )
    return paths


def _held(
    have: Path | None, rel: str, node: Node, pieces: list[Piece]
) -> Generator[bytes | None, None, None]:
    """Each piece of file ``node`` in order: its bytes if the replaced folder has them, else None.

    The folder being replaced must hold them at the same place of ``rel``, verified by their
    digest. One piece in memory at a time: a restore over a large file it already holds reads it
    piece by piece, never whole.
    """
    fd = _open_old(have, rel)
    try:
        offset = 0
        for i in node.pieces:
            piece = pieces[i]
            data = None if fd is None else os.pread(fd, piece.size, offset)
            offset += piece.size
            if data is not None and len(data) == piece.size and piece_digest(data) == piece.digest:
                yield data
            else:
                yield None
    finally:
        if fd is not None:
            os.close(fd)


def _open_old(have: Path | None, rel: str) -> int | None:
    """The regular file at ``rel`` of the folder being replaced, open; None if there is none."""
    if have is None or not os.path.lexists(have / rel) or not _inside(have, have / rel):
        return None
    try:  # never blocking on a FIFO the old folder holds there
        fd = os.open(have / rel, _OPEN_SOURCE | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` resolves inside ``root`` (no link of the old folder leads out)."""
    return os.path.commonpath([os.path.realpath(root), os.path.realpath(path)]) == str(
        os.path.realpath(root)
    )


#: Where a fetched piece goes: a file's path, the offset in it, and the file's entry.
_Use = tuple[str, int, Node]


def write_tree(
    index: Index, dest: Path, limits: Limits, fetch: Fetch, have: Path | None = None
) -> None:
    """Write the tree ``index`` describes into ``dest``, a new empty folder.

    Every entry is checked before anything is written (paths and links stay inside,
    ``limits``, no entry twice or before its folder). Pieces come from ``fetch``, pack by
    pack in offset order, each verified; a piece that ``have`` (the folder being replaced)
    already holds at the same place of the same file is copied from there instead. Files
    of one piece are written whole, in batches on IO threads (``TreeWriter``); larger ones
    piece by piece at their offsets. Files get the mode and time the archive path would
    give them; links and folders' times come last.
    """
    paths = _check(index, limits)
    writer = TreeWriter(dest)
    try:
        uses, pieced = _start(index, paths, dest, writer, have)
        _fetch_into(dest, index.pieces, uses, fetch, writer)
        writer.settle()
        for rel, node in pieced:
            os.chmod(dest / rel, safe_mode(node.mode), follow_symlinks=False)
            _set_time(dest / rel, node.mtime_ns)
        for rel, node in zip(paths, index.nodes, strict=True):
            if node.type == "l":
                assert node.target is not None
                writer.link(rel, node.target, node.mtime_ns)
        writer.finish()
    except tarfile.TarError as exc:  # what the tree writer raises of its own
        writer.abandon()
        raise CorruptCheckpointError(f"folder snapshot cannot be written ({exc})") from exc
    except BaseException:
        writer.abandon()
        raise


def _start(
    index: Index, paths: list[str], dest: Path, writer: TreeWriter, have: Path | None
) -> tuple[dict[int, list[_Use]], list[tuple[str, Node]]]:
    """Make the folders and what ``have`` provides; the pieces still to fetch, and where to.

    Also the files written piece by piece (made at their size now, their mode and time set
    once every piece is in).
    """
    uses: dict[int, list[_Use]] = defaultdict(list)
    pieced: list[tuple[str, Node]] = []
    for rel, node in zip(paths, index.nodes, strict=True):
        if node.type == "d":
            writer.directory(rel, node.mtime_ns)
        if node.type != "f":
            continue
        with contextlib.closing(_held(have, rel, node, index.pieces)) as held:
            if len(node.pieces) <= 1:
                whole = next(held) if node.pieces else b""
                if whole is not None:
                    writer.small(rel, whole, safe_mode(node.mode), node.mtime_ns)
                else:
                    uses[node.pieces[0]].append((rel, 0, node))
                continue
            _create(dest / rel, node.size)
            pieced.append((rel, node))
            offset = 0
            for i, data in zip(node.pieces, held, strict=True):
                if data is not None:
                    _write_at(dest / rel, offset, data)
                else:
                    uses[i].append((rel, offset, node))
                offset += index.pieces[i].size
    return uses, pieced


def _create(path: Path, size: int) -> None:
    fd = os.open(path, _NEW_FILE, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _fetch_into(
    dest: Path,
    pieces: list[Piece],
    uses: dict[int, list[_Use]],
    fetch: Fetch,
    writer: TreeWriter,
) -> None:
    """Fetch the pieces still needed, pack by pack in offset order, and write each use."""
    by_pack: dict[str, list[int]] = defaultdict(list)
    for i in uses:
        by_pack[pieces[i].pack].append(i)
    for pack in sorted(by_pack):
        wanted = sorted(by_pack[pack], key=lambda i: pieces[i].offset)
        ids = {id(pieces[i]): i for i in wanted}
        got = 0
        for piece, data in fetch(pack, [pieces[i] for i in wanted]):
            for rel, offset, node in uses[ids[id(piece)]]:
                if len(node.pieces) == 1:
                    writer.small(rel, data, safe_mode(node.mode), node.mtime_ns)
                else:
                    _write_at(dest / rel, offset, data)
            got += 1
        if got != len(wanted):
            raise CorruptCheckpointError(f"pack {pack} holds {got} of {len(wanted)} pieces")


def _write_at(path: Path, offset: int, data: Chunk) -> None:
    fd = os.open(path, _WRITE)
    try:
        HoleWriter(fd, offset).write(data)  # the file already has its size: no close()
    finally:
        os.close(fd)


def _set_time(path: Path, ns: int) -> None:
    try:
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    except (OverflowError, OSError) as exc:
        raise CorruptCheckpointError(f"could not set the time of {path.name!r}: {exc}") from None
