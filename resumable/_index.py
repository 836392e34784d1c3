"""The file list of a folder snapshot by content: what a tree holds and where its bytes are.

An incremental folder snapshot (manifest format 3, compression ``pieces``) stores its folder
as this index (the snapshot's payload, digested and signed like any payload) plus *pieces*:
runs of file content, each named by the BLAKE3 digest of its bytes, stored in *packs*
(objects of the task's ``~pieces/`` folder, each holding many pieces back to back). A file is
the concatenation of its pieces; a piece already stored is never written again.

Pure values and rules: :meth:`Index.from_json` returns an index whose fields all make sense,
or raises ``CorruptCheckpointError`` saying what is wrong, so it can be fuzzed on bytes
alone. Whether paths and links stay inside the folder is checked where the tree is written
(``_tree``), with the same guard as an archive's members.

Example:
    >>> piece = Piece("0" * 64, 3, "0123456789abcdef0123456789abcdef.pack", 0, 3, "raw")
    >>> index = Index(scanned_ns=0, pieces=[piece], nodes=[
    ...     Node("a.txt", "f", 0o644, 0, size=3, pieces=(0,)),
    ... ])
    >>> Index.from_json(index.to_json()) == index
    True
    >>> index.packs()
    {'0123456789abcdef0123456789abcdef.pack'}

"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import CorruptCheckpointError
from ._names import is_pack

__all__ = [
    "CODECS",
    "INDEX_MAX",
    "INDEX_VERSION",
    "MAX_PIECE",
    "Index",
    "Node",
    "NodeType",
    "Piece",
]

#: The index layout this library writes and reads.
INDEX_VERSION = 1
#: How a piece's bytes are stored in its pack: as they are, or deflated (zlib, raw stream).
CODECS = ("raw", "deflate")

#: The largest piece (stored or decoded) an index may name; pieces are ``_tree.BLOCK``.
MAX_PIECE = 64 << 20
#: The largest index a load reads (a million entries take about 200 MB).
INDEX_MAX = 512 << 20
_HEX64 = frozenset("0123456789abcdef")

#: ``d``: a folder, ``f``: a file, ``l``: a symbolic link.
NodeType = Literal["d", "f", "l"]


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of file content: its digest and size, and where its (coded) bytes are stored."""

    #: Lowercase hex BLAKE3 of the piece's bytes (as the file holds them).
    digest: str
    #: The piece's size in bytes, decoded.
    size: int
    #: The pack object holding it.
    pack: str
    #: Where its stored bytes start in the pack.
    offset: int
    #: How many bytes it takes in the pack.
    stored: int
    #: How it is stored (see :data:`CODECS`).
    codec: str


@dataclass(frozen=True, slots=True)
class Node:
    """One entry of the tree: a folder, a file or a link, with its mode and time."""

    #: Its path under the folder, ``/``-separated.
    path: str
    #: What it is (see :data:`NodeType`).
    type: NodeType
    #: Permission bits.
    mode: int
    #: Modification time, in nanoseconds since the epoch.
    mtime_ns: int
    #: A file's size in bytes (0 for folders and links).
    size: int = 0
    #: A link's target, relative (None for folders and files).
    target: str | None = None
    #: A file's pieces, in order, as indexes into :attr:`Index.pieces`.
    pieces: tuple[int, ...] = ()
    #: A saved file's device, inode and ctime in ns: the next save of the same folder on the
    #: same machine knows it unchanged (with its size and mtime) without reading it.
    stat: tuple[int, int, int] | None = None


@dataclass(slots=True)
class Index:
    """What a folder snapshot holds: its entries, in walk order, and the pieces they use."""

    #: When the save that made it started looking at the folder (ns since the epoch). A file
    #: modified or changed less than ``_tree.RACY_NS`` before it is re-read by the next save
    #: even if its size and times match: it may have changed within the clock's resolution.
    scanned_ns: int
    #: Every piece the files use, each once.
    pieces: list[Piece] = field(default_factory=list)
    #: Folders before what they hold.
    nodes: list[Node] = field(default_factory=list)

    def packs(self) -> set[str]:
        """The names of the packs this snapshot needs."""
        return {p.pack for p in self.pieces}

    def logical_size(self) -> int:
        """The bytes of all its files (what a restore writes)."""
        return sum(n.size for n in self.nodes)

    def to_json(self) -> bytes:
        """The index document (compact JSON)."""
        packs = sorted(self.packs())
        where = {name: i for i, name in enumerate(packs)}
        doc = {
            "version": INDEX_VERSION,
            "scanned_ns": self.scanned_ns,
            "packs": packs,
            "pieces": [
                [where[p.pack], p.offset, p.stored, p.size, p.codec, p.digest] for p in self.pieces
            ],
            "nodes": [_node_doc(n) for n in self.nodes],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview) -> Index:
        """Parse and check an index; ``CorruptCheckpointError`` says what is wrong."""
        try:
            doc = _document(data)
            packs = [_pack(name) for name in _list(doc["packs"])]
            pieces = [_piece(item, packs) for item in _list(doc["pieces"])]
            nodes = [_node(item, pieces) for item in _list(doc["nodes"])]
            return cls(_whole(doc["scanned_ns"]), pieces, nodes)
        except (TypeError, ValueError, LookupError, ArithmeticError, RecursionError) as exc:
            raise CorruptCheckpointError(f"folder index is malformed ({exc!r:.200})") from exc


def _node_doc(n: Node) -> list[Any]:
    return [n.path, n.type, n.mode, n.mtime_ns, n.size, n.target, list(n.pieces), n.stat]


# -- the field checks: each returns the value, or raises ------------------------------------


def _document(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    doc = json.loads(bytes(data))
    if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
        raise ValueError(f"not a version {INDEX_VERSION} index")
    return doc


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"not a list: {type(value).__name__}")
    return value


def _whole(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a whole number >= 0: {value!r:.40}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"not a whole number: {value!r:.40}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"not a non-empty name: {value!r:.60}")
    return value


def _pack(value: object) -> str:
    if not isinstance(value, str) or not is_pack(value):
        raise ValueError(f"not a pack name: {value!r:.80}")
    return value


def _piece(item: object, packs: list[str]) -> Piece:
    pack, offset, stored, size, codec, digest = _list(item)
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r:.20}")
    if not isinstance(digest, str) or len(digest) != 64 or not _HEX64.issuperset(digest):
        raise ValueError(f"not a blake3 digest: {digest!r:.80}")
    piece = Piece(digest, _whole(size), packs[_whole(pack)], _whole(offset), _whole(stored), codec)
    if max(piece.size, piece.stored) > MAX_PIECE or piece.size == 0:
        raise ValueError(f"a piece of {piece.size} bytes stored in {piece.stored}")
    if codec == "raw" and piece.stored != piece.size:
        raise ValueError(f"a raw piece of {piece.size} bytes stored in {piece.stored}")
    return piece


def _node(item: object, pieces: list[Piece]) -> Node:
    path, kind, mode, mtime_ns, size, target, used, stat = _list(item)
    if kind not in ("d", "f", "l"):
        raise ValueError(f"unknown entry type {kind!r:.20}")
    if not 0 <= _int(mode) <= 0o7777:
        raise ValueError(f"invalid mode {mode!r}")
    node = Node(
        _text(path),
        kind,
        mode,
        _int(mtime_ns),
        _whole(size),
        None if target is None else _text(target),
        _refs(used, len(pieces)),
        None if stat is None else _stat(stat),
    )
    _check_content(node, pieces)
    return node


def _refs(used: object, count: int) -> tuple[int, ...]:
    refs = tuple(_whole(i) for i in _list(used))
    if any(i >= count for i in refs):
        raise IndexError("a file uses a piece the index does not list")
    return refs


def _check_content(node: Node, pieces: list[Piece]) -> None:
    """A link has a target, a file pieces that add up to its size, nothing else either."""
    if (node.target is not None) != (node.type == "l"):
        raise ValueError(f"{node.path!r}: only a link has a target")
    if node.type != "f" and (node.size or node.pieces):
        raise ValueError(f"{node.path!r}: only a file has content")
    if node.type == "f" and sum(pieces[i].size for i in node.pieces) != node.size:
        raise ValueError(f"{node.path!r}: its pieces do not add up to its size")


def _stat(value: object) -> tuple[int, int, int]:
    dev, ino, ctime_ns = _list(value)
    return (_whole(dev), _whole(ino), _int(ctime_ns))
