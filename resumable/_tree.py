"""A folder as pieces: the scan a save makes (the tree a restore writes is ``_rebuild``).

:func:`scan` walks a folder and lists it as an :class:`~resumable._index.Index`. A file whose
size, mtime, device, inode and ctime match the previous snapshot's entry (and that was not
modified within :data:`RACY_NS` of that snapshot's scan) keeps its pieces unread. Any other
file is read and cut into :data:`BLOCK` pieces; a piece whose digest is already known (in the
previous snapshot, or earlier in this one) is not stored again, and a new one is coded
(deflated when that pays) on worker threads and handed to a :class:`Sink`, which puts it in a
pack. :func:`decode` turns a stored piece back into its bytes, checked.

Knows nothing of where packs are: the caller hands pieces to a sink.
"""

from __future__ import annotations

import os
import stat
import time
import zlib
from collections import deque
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ._archive import link_target, open_source, reading, walk
from ._errors import CorruptCheckpointError, ResumableError, UnsupportedDataError
from ._files import check_source
from ._index import Index, Node, NodeType, Piece
from ._stream import Chunk, piece_digest
from ._threads import submit

__all__ = ["BLOCK", "RACY_NS", "SMALLEST_BLOCK", "ScanFacts", "Sink", "decode", "scan"]

#: Files are cut into pieces of this size (the last piece of a file is shorter). Fixed blocks
#: find appends and rewrites in place; 1 MiB keeps a change's cost near its size and a 1 GiB
#: folder's index near 100 KB, and reads in blocks the kernel and allocator handle well.
BLOCK = 1 << 20
#: Below this, a file's pieces are never cut (but the last): what bounds how many piece uses
#: an index may hold for its bytes, so a forged one cannot make a restore write one byte a
#: million times.
SMALLEST_BLOCK = 64 * 1024
#: A file modified or changed (its mtime or ctime) less than this before the previous
#: snapshot's scan began is read again even when its size and times match: it may have
#: changed within the clock's resolution.
RACY_NS = 2_000_000_000

# A probe of this many bytes decides whether a piece is worth deflating.
_PROBE = 16 * 1024
# Deflate only when the probe shrinks to this fraction or less.
_WORTH_IT = 0.9
# Batches of pieces coded on worker threads ahead of the one being stored.
_AHEAD = 4
# A batch holds pieces up to this many bytes (one piece when it is larger).
_BATCH_BYTES = 1 << 20
# A file's whole blocks are read, hashed and coded on workers this many to a task.
_SPAN = 4


class Sink(Protocol):
    """Where a scan puts the pieces it did not find: a pack being written."""

    def add(self, digest: str, size: int, data: Chunk, codec: str) -> Piece:
        """Store a coded piece; where it went."""
        ...


@dataclass(slots=True)
class ScanFacts:
    """What a scan did: how much it read, and how much it stored anew."""

    #: Files read (the others kept their pieces unread).
    files_read: int = 0
    #: Bytes of file content read and hashed.
    bytes_read: int = 0
    #: Pieces stored anew, and their stored bytes.
    new_pieces: int = 0
    bytes_added: int = 0


def _code(block: Chunk) -> tuple[Chunk, str]:
    """A piece's stored bytes and codec: deflated (level 1) when a probe shows it pays."""
    if _worth_deflating(block[:_PROBE]):
        packer = zlib.compressobj(1, zlib.DEFLATED, -15)
        coded = packer.compress(block) + packer.flush()
        if len(coded) < len(block):  # the probe can be wrong about the rest
            return coded, "deflate"
    return block, "raw"


def decode(piece: Piece, data: bytes) -> bytes:
    """A piece's bytes from what its pack holds, checked against its size and digest.

    Example:
        >>> p = Piece(_hash(b"abc"), 3, "0" * 32 + ".pack", 0, 3, "raw")
        >>> decode(p, b"abc")
        b'abc'

    """
    if len(data) != piece.stored:
        raise CorruptCheckpointError(f"piece {piece.digest[:16]} is cut short in its pack")
    if piece.codec == "deflate":
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(data, piece.size + 1)  # a byte more shows a lie
        except zlib.error as exc:
            raise CorruptCheckpointError(f"piece {piece.digest[:16]} does not inflate") from exc
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise CorruptCheckpointError(f"piece {piece.digest[:16]} does not inflate to its size")
    else:
        out = data
    if len(out) != piece.size or _hash(out) != piece.digest:
        raise CorruptCheckpointError(f"piece {piece.digest[:16]} does not match its digest")
    return out


def _fields(n: Node) -> tuple[str, NodeType, int, int, int, str | None]:
    """A node's fields before its pieces (``dataclasses.replace`` costs ten times more)."""
    return n.path, n.type, n.mode, n.mtime_ns, n.size, n.target


def _hash(data: Chunk) -> str:
    """The piece digest of ``data``, here: a piece is hashed once, on the thread that has it."""
    return piece_digest(data)


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


#: A piece as a worker prepared it: digest, size, and its coded bytes and codec (None, ""
#: when the base snapshot has it already).
_Prepared = tuple[str, int, Chunk | None, str]


def _prepare(batch: list[Chunk], known: dict[str, Piece]) -> list[_Prepared]:
    """Hash pieces and code those the base snapshot does not hold (on a worker thread).

    One probe decides for a batch of small pieces (a sample of each, 16 KiB in all): a
    probe per 64 KiB file would deflate a quarter of what does not compress.
    """
    done: list[_Prepared] = []
    sample = b"".join(data[: max(_PROBE // len(batch), 512)] for data in batch)[:_PROBE]
    deflate = len(batch) == 1 or _worth_deflating(sample)
    for data in batch:
        digest = _hash(data)
        if digest in known:
            done.append((digest, len(data), None, ""))
        elif deflate:
            coded, codec = _code(data)
            done.append((digest, len(data), coded, codec))
        else:
            done.append((digest, len(data), data, "raw"))
    return done


def _prepare_span(
    fd: int, path: Path, start: int, count: int, known: dict[str, Piece], spare: list[bytearray]
) -> list[_Prepared]:
    """Read ``count`` whole blocks of ``fd`` from block ``start``, hash and code them (a worker).

    The worker reads them itself (a main thread reading for two workers to hash was the
    bottleneck of a changed large file), each into a buffer from ``spare``, which it puts
    back unless the piece went on as read (new and not deflated: the sink takes the view).
    """
    done: list[_Prepared] = []
    buffer = _take(spare)
    try:
        for block in range(start, start + count):
            with reading(path):
                got = _read_into(fd, buffer, block * BLOCK)
            if got < BLOCK:
                raise _shrank(path)
            view = memoryview(buffer)
            digest = _hash(view)
            if digest in known:
                done.append((digest, BLOCK, None, ""))
                continue
            coded, codec = _code(view)
            done.append((digest, BLOCK, coded, codec))
            if coded is view:
                buffer = _take(spare)
    finally:
        spare.append(buffer)
    return done


def _take(spare: list[bytearray]) -> bytearray:
    """A buffer of :data:`BLOCK` bytes: a spare one, or a new one."""
    try:
        return spare.pop()  # atomic: workers share the list
    except IndexError:
        return bytearray(BLOCK)


def _shrank(path: Path) -> ResumableError:
    return ResumableError(
        f"{str(path)!r} shrank while it was being saved; save again once the task has "
        "finished writing it"
    )


def _worth_deflating(sample: Chunk) -> bool:
    return len(zlib.compress(sample, 1)) <= _WORTH_IT * len(sample)


class _Builder:
    """The index being built: each piece once, new ones coded ahead and stored in order.

    Pieces are hashed and coded on worker threads (a large file's whole blocks read there
    too) while the next files are listed and read; what a file refers to is a *slot*, which
    names its piece once that is known (two slots may name the same piece). :meth:`finish`
    resolves them.
    """

    def __init__(self, base: Index | None, sink: Sink) -> None:
        self.pieces: list[Piece] = []
        self._at: dict[str, int] = {}
        self._known = {p.digest: p for p in base.pieces} if base is not None else {}
        self._sink = sink
        self._slots: list[int] = []  # slot -> piece index (-1 until it is known)
        # Small pieces go to a worker in batches: a thread hop per 64 KiB file costs more
        # than hashing it.
        self._batch: list[Chunk] = []
        self._batch_bytes = 0
        # Whole blocks are read into spare buffers, reused unless handed to the sink: a
        # fresh 1 MiB object per block cost the allocator more than the read itself.
        self._spare: list[bytearray] = []
        # Batches being coded, in slot order, each with the file it is the last reader of.
        self._coding: deque[tuple[int, Future[list[_Prepared]], int | None]] = deque()
        # The files handed to blocks() and not closed yet: each is closed once, by whoever
        # takes it out of here (once its last batch is stored, or abandon()).
        self._open: set[int] = set()
        self.facts = ScanFacts()

    def _piece(self, piece: Piece) -> int:
        found = self._at.get(piece.digest)
        if found is None:
            found = self._at[piece.digest] = len(self.pieces)
            self.pieces.append(piece)
        return found

    def use(self, piece: Piece) -> int:
        """A slot for a stored piece."""
        self._send()  # slots are numbered in order: the batch before this one goes first
        self._slots.append(self._piece(piece))
        return len(self._slots) - 1

    def block(self, data: Chunk) -> int:
        """A slot for the piece with these bytes: known, or coded and stored."""
        self._slots.append(-1)
        self._batch.append(data)
        self._batch_bytes += len(data)
        if self._batch_bytes >= _BATCH_BYTES:
            self._send()
        return len(self._slots) - 1

    def blocks(self, fd: int, path: Path, count: int) -> list[int]:
        """Slots for the first ``count`` whole blocks of the open file ``fd``, read on workers.

        The builder owns ``fd`` from here: it is closed once its blocks are read (or given up).
        """
        self._open.add(fd)
        self._send()  # slots are numbered in order: the batch before these goes first
        first = len(self._slots)
        self._slots.extend([-1] * count)
        for start in range(0, count, _SPAN):
            span = min(_SPAN, count - start)
            last = start + span == count
            self._coding.append(
                (
                    first + start,
                    submit(_prepare_span, fd, path, start, span, self._known, self._spare),
                    fd if last else None,
                )
            )
            self._send()
        return list(range(first, first + count))

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)

    def _send(self) -> None:
        if self._batch:
            first = len(self._slots) - len(self._batch)
            self._coding.append((first, submit(_prepare, self._batch, self._known), None))
            self._batch, self._batch_bytes = [], 0
        while len(self._coding) > _AHEAD:
            self._store_one()

    def _store_one(self) -> None:
        slot, future, fd = self._coding[0]
        prepared = future.result()  # until it returns, the entry stays for abandon() to wait on
        self._coding.popleft()
        if fd is not None:
            self._close(fd)
        for digest, size, coded, codec in prepared:
            if (found := self._at.get(digest)) is not None:
                self._slots[slot] = found
            elif coded is None:
                self._slots[slot] = self._piece(self._known[digest])
            else:
                piece = self._sink.add(digest, size, coded, codec)
                self._slots[slot] = self._piece(piece)
                self.facts.new_pieces += 1
                self.facts.bytes_added += piece.stored
            slot += 1

    def finish(self, nodes: list[Node]) -> tuple[list[Piece], list[Node]]:
        """Every piece stored; the pieces, and ``nodes`` with their slots resolved."""
        self._send()
        while self._coding:
            self._store_one()
        slots = self._slots
        resolved = [
            Node(*_fields(n)[:6], tuple(slots[s] for s in n.pieces), n.stat) if n.pieces else n
            for n in nodes
        ]
        return self.pieces, resolved

    def abandon(self) -> None:
        """Give up: no more coding, and the files closed once no worker reads them."""
        for _, future, _ in self._coding:
            future.cancel()
        wait([future for _, future, _ in self._coding])  # the ones already running
        self._coding.clear()
        for fd in list(self._open):
            self._close(fd)


def _read_pieces(path: Path, st: os.stat_result, builder: _Builder) -> tuple[int, ...]:
    """The slots of the file at ``path`` (``st`` as its folder listed it), cut in blocks.

    Its whole blocks are read on workers, the last, shorter one here. A file that cannot be
    opened or read is named (``SourcePermissionError``, ...).
    """
    size = st.st_size
    whole, tail = divmod(size, BLOCK)
    fd = open_source(path, st)
    try:
        with reading(path):  # only the reads: the builder's store calls are not the file's
            data = _read(fd, tail, whole * BLOCK) if tail else b""
    except BaseException:
        os.close(fd)
        raise
    if len(data) < tail:
        os.close(fd)
        raise _shrank(path)
    refs = builder.blocks(fd, path, whole) if whole else []
    if not whole:
        os.close(fd)
    if tail:
        refs.append(builder.block(data))
    builder.facts.bytes_read += size
    builder.facts.files_read += 1
    return tuple(refs)


def _read_into(fd: int, buffer: bytearray, at: int) -> int:
    """Fill ``buffer`` from ``fd`` at offset ``at``; the bytes read (fewer only at its end)."""
    view, got = memoryview(buffer), 0
    while got < len(view):  # a short read is not the end of a regular file
        n = os.preadv(fd, [view[got:]], at + got)
        if not n:
            break
        got += n
    return got


def _read(fd: int, want: int, at: int) -> bytes:
    """Up to ``want`` bytes of ``fd`` from offset ``at`` (fewer only at the file's end)."""
    data = os.pread(fd, want, at)
    while 0 < len(data) < want:
        more = os.pread(fd, want - len(data), at + len(data))
        if not more:
            break
        data += more
    return data


def _unchanged(old: Node, st: os.stat_result, base: Index) -> bool:
    # Both times must be older than the previous scan by more than a clock's resolution: a
    # file rewritten with its mtime put back (`cp -p`, `touch -r`) within the same tick as
    # that scan keeps its ctime too, on filesystems with coarse timestamps.
    return (
        old.type == "f"
        and old.size == st.st_size
        and old.mtime_ns == st.st_mtime_ns
        and old.stat == _stat_key(st)
        and max(st.st_mtime_ns, st.st_ctime_ns) < base.scanned_ns - RACY_NS
    )


def _node(
    root: Path,
    path: Path,
    rel: str,
    st: os.stat_result,
    base: Index | None,
    before: Node | None,
    builder: _Builder,
) -> Node:
    """The entry of one path of the folder; a file's new pieces go to the builder."""
    mode, ns = stat.S_IMODE(st.st_mode), st.st_mtime_ns
    if stat.S_ISDIR(st.st_mode):
        return Node(rel, "d", mode, ns)
    if stat.S_ISLNK(st.st_mode):
        return Node(rel, "l", mode, ns, target=link_target(root, path))
    if not stat.S_ISREG(st.st_mode):
        raise UnsupportedDataError(
            f"cannot save {str(path)!r}: only files, folders and links can be saved "
            "(this is a socket, fifo or device)"
        )
    if base is not None and before is not None and _unchanged(before, st, base):
        refs = tuple(builder.use(base.pieces[i]) for i in before.pieces)
    else:
        refs = _read_pieces(path, st, builder)
    return Node(rel, "f", mode, ns, st.st_size, None, refs, _stat_key(st))


def scan(root: Path, base: Index | None, sink: Sink) -> tuple[Index, ScanFacts]:
    """List the folder at ``root`` as an index, storing the pieces ``base`` does not have.

    ``base`` is the previous snapshot's index: its pieces are known to be stored, and its
    files that did not change are not read. Links must stay inside the folder; sockets,
    FIFOs and devices are refused (``UnsupportedDataError``).

    Example:
        >>> import tempfile
        >>> class Memory:
        ...     def add(self, digest, size, data, codec):
        ...         return Piece(digest, size, "0" * 32 + ".pack",
        ...                      0, len(data), codec)
        >>> with tempfile.TemporaryDirectory() as root:
        ...     _ = (Path(root) / "a.txt").write_bytes(b"hello")
        ...     index, facts = scan(Path(root), None, Memory())
        >>> [(n.path, n.size) for n in index.nodes], facts.new_pieces
        ([('a.txt', 5)], 1)

    """
    root = Path(os.path.abspath(root))
    if check_source(root) != "dir":
        raise UnsupportedDataError(f"{str(root)!r} is not a folder")
    scanned_ns = time.time_ns()
    builder = _Builder(base, sink)
    old = {n.path: n for n in base.nodes} if base is not None else {}
    nodes: list[Node] = []
    try:
        for path, rel, st in walk(root):
            nodes.append(_node(root, path, rel, st, base, old.get(rel), builder))
        pieces, nodes = builder.finish(nodes)
    except BaseException:
        builder.abandon()
        raise
    return Index(scanned_ns, pieces, nodes), builder.facts
