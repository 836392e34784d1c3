"""A folder as pieces and back: the scan a save makes, and the tree a restore writes.

- :func:`scan` walks a folder and lists it as an :class:`~resumable._index.Index`. A file whose
  size, mtime, device, inode and ctime match the previous snapshot's entry (and that was not
  modified within :data:`RACY_NS` of that snapshot's scan) keeps its pieces unread. Any other
  file is read and cut into :data:`BLOCK` pieces; a piece whose digest is already known (in
  the previous snapshot, or earlier in this one) is not stored again, and a new one is coded
  (deflated when that pays) on worker threads and handed to a :class:`Sink`, which puts it in
  a pack.
- :func:`write_tree` writes an index's tree into a new folder: every entry checked first by
  the archive's lexical guard and ``Limits``, the pieces fetched pack by pack in order and
  each verified, written wherever it is used (zero blocks as holes), or taken from a folder
  that already holds the same bytes.

Knows nothing of where packs are: the caller hands pieces to a sink and fetches them back.
"""

from __future__ import annotations

import os
import stat
import tarfile
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ._archive import Guard, Limits, link_target, open_source, reading, safe_mode, walk
from ._errors import CorruptCheckpointError, ResumableError, UnsupportedDataError
from ._files import HoleWriter, TreeWriter, check_source
from ._index import Index, Node, NodeType, Piece
from ._stream import Chunk, piece_digest
from ._threads import submit

__all__ = ["BLOCK", "RACY_NS", "Fetch", "ScanFacts", "Sink", "decode", "scan", "write_tree"]

#: Files are cut into pieces of this size (the last piece of a file is shorter). Fixed blocks
#: find appends and rewrites in place; 1 MiB keeps a change's cost near its size and a 1 GiB
#: folder's index near 100 KB, and reads in blocks the kernel and allocator handle well.
BLOCK = 1 << 20
#: Below this, a file's pieces are never cut (but the last): what bounds how many piece uses
#: an index may hold for its bytes, so a forged one cannot make a restore write one byte a
#: million times.
_SMALLEST_BLOCK = 64 * 1024
#: A file modified less than this before the previous snapshot's scan began is read again
#: even when its size and times match: it may have changed within the clock's resolution.
RACY_NS = 2_000_000_000

# A probe of this many bytes decides whether a piece is worth deflating.
_PROBE = 16 * 1024
# Deflate only when the probe shrinks to this fraction or less.
_WORTH_IT = 0.9
# Batches of pieces coded on worker threads ahead of the one being stored.
_AHEAD = 8
# A batch holds pieces up to this many bytes (one piece when it is larger).
_BATCH_BYTES = 1 << 20
_OPEN_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC

#: The pieces of one pack to fetch, in offset order -> each with its verified bytes.
Fetch = Callable[[str, list[Piece]], Iterator[tuple[Piece, bytes]]]


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


def _worth_deflating(sample: Chunk) -> bool:
    return len(zlib.compress(sample, 1)) <= _WORTH_IT * len(sample)


class _Builder:
    """The index being built: each piece once, new ones coded ahead and stored in order.

    A file's pieces are hashed and coded on worker threads while the next ones are read;
    what a file refers to is a *slot*, which names its piece once that is known (two slots
    may name the same piece). :meth:`finish` resolves them.
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
        # Whole blocks are read into these buffers, each reused once its batch is stored:
        # a fresh 1 MiB object per block costs the allocator more than the read itself.
        self._buffers: list[bytearray] = []
        self._held: list[bytearray] = []  # the buffers of the batch being filled
        self._coding: deque[tuple[int, Future[list[_Prepared]], list[bytearray]]] = deque()
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

    def buffer(self) -> bytearray:
        """A buffer of :data:`BLOCK` bytes to read a block into, then hand to :meth:`block`."""
        return self._buffers.pop() if self._buffers else bytearray(BLOCK)

    def block(self, data: Chunk, buffer: bytearray | None = None) -> int:
        """A slot for the piece with these bytes: known, or coded and stored.

        ``data`` may be a view of ``buffer`` (from :meth:`buffer`): the buffer is reused once
        the piece is known or was stored coded, never when the sink was handed the view.
        """
        self._slots.append(-1)
        self._batch.append(data)
        self._batch_bytes += len(data)
        if buffer is not None:
            self._held.append(buffer)
        if self._batch_bytes >= _BATCH_BYTES:
            self._send()
        return len(self._slots) - 1

    def _send(self) -> None:
        if self._batch:
            first = len(self._slots) - len(self._batch)
            coding = submit(_prepare, self._batch, self._known)
            self._coding.append((first, coding, self._held))
            self._batch, self._batch_bytes, self._held = [], 0, []
        while len(self._coding) > _AHEAD:
            self._store_one()

    def _store_one(self) -> None:
        slot, future, held = self._coding.popleft()
        given = False  # a piece stored as read: its buffer now belongs to the sink
        for digest, size, coded, codec in future.result():
            if (found := self._at.get(digest)) is not None:
                self._slots[slot] = found
            elif coded is None:
                self._slots[slot] = self._piece(self._known[digest])
            else:
                piece = self._sink.add(digest, size, coded, codec)
                given = given or isinstance(coded, memoryview)
                self._slots[slot] = self._piece(piece)
                self.facts.new_pieces += 1
                self.facts.bytes_added += piece.stored
            slot += 1
        if not given:  # hashed and known, or coded anew: free to read into again
            self._buffers.extend(held)

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
        # A worker may still be reading a buffer: none is reused, the builder is dropped.
        for _, future, _ in self._coding:
            future.cancel()
        self._coding.clear()


def _read_pieces(path: Path, st: os.stat_result, builder: _Builder) -> tuple[int, ...]:
    """Read the file at ``path`` (``st`` as its folder listed it) in blocks; their slots.

    A file that cannot be opened or read is named (``SourcePermissionError``, ...).
    """
    refs: list[int] = []
    size = st.st_size
    fd = open_source(path, st)
    try:
        left = size
        while left:
            want = min(left, BLOCK)
            with reading(path):  # only the reads: the builder's store calls are not the file's
                if want == BLOCK:
                    buffer = builder.buffer()
                    data: Chunk = memoryview(buffer)[: _read_into(fd, buffer)]
                else:
                    buffer, data = None, _read(fd, want)
            if len(data) < want:
                raise ResumableError(
                    f"{str(path)!r} shrank while it was being saved; save again once the task "
                    "has finished writing it"
                )
            refs.append(builder.block(data, buffer))
            left -= want
            builder.facts.bytes_read += want
    finally:
        os.close(fd)
    builder.facts.files_read += 1
    return tuple(refs)


def _read_into(fd: int, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``fd``; the bytes read (fewer only at the file's end)."""
    view, got = memoryview(buffer), 0
    while got < len(view):  # a short read is not the end of a regular file
        n = os.readv(fd, [view[got:]])
        if not n:
            break
        got += n
    return got


def _read(fd: int, want: int) -> bytes:
    """Up to ``want`` bytes from ``fd`` (fewer only at the file's end)."""
    data = os.read(fd, want)
    while 0 < len(data) < want:
        more = os.read(fd, want - len(data))
        if not more:
            break
        data += more
    return data


def _unchanged(old: Node, st: os.stat_result, base: Index) -> bool:
    return (
        old.type == "f"
        and old.size == st.st_size
        and old.mtime_ns == st.st_mtime_ns
        and old.stat == _stat_key(st)
        and st.st_mtime_ns < base.scanned_ns - RACY_NS
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


# -- restoring ------------------------------------------------------------------------------


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
    if uses > len(index.nodes) + index.logical_size() // min(BLOCK, _SMALLEST_BLOCK):
        raise CorruptCheckpointError(
            f"folder index names pieces {uses} times for {index.logical_size()} bytes: "
            "more than any writer makes"
        )
    return paths


def _local_match(source: Path, node: Node, pieces: list[Piece]) -> Iterator[tuple[int, bytes]]:
    """The pieces of ``node`` (index, bytes) that a local file at ``source`` already holds."""
    try:  # never blocking on a FIFO the old folder holds there
        fd = os.open(source, _OPEN_SOURCE | os.O_NONBLOCK)
    except OSError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        offset = 0
        for i in node.pieces:
            piece = pieces[i]
            data = os.pread(fd, piece.size, offset)
            offset += piece.size
            if len(data) == piece.size and _hash(data) == piece.digest:
                yield i, data
    finally:
        os.close(fd)


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
        local = _local_pieces(have, rel, node, index.pieces)
        whole = local.get(node.pieces[0], b"") if len(node.pieces) == 1 else None
        if not node.pieces or whole:
            writer.small(rel, whole or b"", safe_mode(node.mode), node.mtime_ns)
            continue
        if len(node.pieces) > 1:
            _create(dest / rel, node.size)
            pieced.append((rel, node))
        offset = 0
        for i in node.pieces:
            if i in local:
                _write_at(dest / rel, offset, local[i])
            else:
                uses[i].append((rel, offset, node))
            offset += index.pieces[i].size
    return uses, pieced


def _local_pieces(have: Path | None, rel: str, node: Node, pieces: list[Piece]) -> dict[int, bytes]:
    """The pieces of file ``node`` that the folder being replaced holds at ``rel``."""
    if have is None or not os.path.lexists(have / rel) or not _inside(have, have / rel):
        return {}
    return dict(_local_match(have / rel, node, pieces))


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
