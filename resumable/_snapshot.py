"""What a snapshot is to a ``Checkpoint``'s user: one to write, and the newest one written.

- :class:`Captured`: a snapshot's kind and a source of its bytes, made by :func:`capture`
  (``Checkpoint.capture``) from what ``save`` accepts (:data:`SaveData`) and written by
  ``Checkpoint.commit``;
- :class:`CheckpointInfo`: a committed snapshot's metadata (``Checkpoint.info``, and what
  ``commit`` and ``restore_into`` return).

These are the types the public methods of ``Checkpoint`` name; both are public
(``resumable.Captured``, ``resumable.CheckpointInfo``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from ._archive import Compression, TarFacts, gzip_members, iter_tar
from ._errors import UnsupportedDataError
from ._files import check_source, iter_file
from ._manifest import Kind, Manifest
from ._pieces import TreeSave
from ._store import Producer
from ._stream import CHUNK_SIZE, Chunk, Spool, discard, frozen_copy

__all__ = [
    "Captured",
    "CheckpointInfo",
    "Kind",
    "SaveData",
    "Source",
    "capture",
    "committed_info",
    "info_of",
    "shown_as_info",
    "warn_foreign",
    "warned_foreign",
]

log = logging.getLogger("resumable")

#: A callable that produces a snapshot's bytes (or a producer of them), again on every call.
Source = Callable[[], Iterable[Chunk] | Producer]

#: What ``save`` accepts: bytes, the path of a file or folder (a ``str`` is a path), or a
#: readable binary file object (``open(path, "rb")``, ``io.BytesIO``, a pipe), read from its
#: current position to its end.
SaveData = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """A committed snapshot of a checkpoint, as its manifest records it.

    Returned by :meth:`Checkpoint.info_sync` / ``await info()`` for the newest one, which read
    one listing and one manifest and restore nothing (flyte's ``prev_exists()``, with the
    metadata), and by the layer ``@resumable`` builds on (``commit``, ``restore_into``).

    Example:
        >>> import tempfile
        >>> from resumable import Checkpoint
        >>> with Checkpoint(tempfile.mkdtemp()) as cp:
        ...     cp.save_sync(b"step 3")
        ...     info = cp.info_sync()
        >>> info.seq, info.kind, info.size
        (0, 'bytes', 6)

    """

    #: The snapshot's sequence number: 0 for the first save, one more for each save after.
    seq: int
    #: What was saved: ``"bytes"``, a ``"file"``, a ``"dir"`` (folder) or pickled ``"state"``.
    kind: Literal["bytes", "file", "dir", "state"]
    #: The stored payload's size in bytes: a folder's compressed archive, or for an
    #: incremental folder snapshot its file list (see :attr:`files_size`, :attr:`added`).
    size: int
    #: When it was committed, in seconds since the epoch (``time.time()``).
    created: float
    #: The attempt of the ``@resumable`` call that saved it (0 for a plain save).
    attempt: int
    #: Whether its manifest carries a signature (``info`` does not verify it: a load does).
    signed: bool
    #: A folder's bytes (what a restore writes), where the manifest records them.
    files_size: int | None = None
    #: The bytes this save stored anew (a folder snapshot stores only what the previous one
    #: lacks); None where the manifest does not say (bytes, files, state, archives).
    added: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Captured:
    """A snapshot captured at one moment, to be written later by :meth:`Checkpoint.commit`.

    Made by :meth:`Checkpoint.capture` (what ``save`` accepts), or by hand for a payload of
    your own. ``source()`` produces the bytes again on every call (a save that meets a
    transient storage error starts over); :meth:`release` frees what the capture holds (a
    temp copy).

    Example:
        >>> from resumable import Captured
        >>> snap = Captured("state", lambda: (b"pickled",))
        >>> snap.kind, b"".join(snap.source())
        ('state', b'pickled')

    """

    #: What the snapshot holds: ``"bytes"``, a ``"file"``, a ``"dir"`` or pickled ``"state"``.
    kind: Kind
    #: Produces the snapshot's chunks (or a producer of them) again on every call.
    source: Source
    #: Manifest fields that describe the bytes, known once ``source()`` has been read to its
    #: end (a folder's tar size and member count).
    facts: Callable[[], dict[str, Any]] | None = None

    def release(self) -> None:
        """Free the temp copy a frozen capture holds; the snapshot cannot be written after."""
        discard(self.source)


#: Makes the snapshot of a folder by content (``SnapshotStore.tree_save``): root, frozen.
Folders = Callable[[Path, bool], TreeSave]


class _TreeSource:
    """The source of a folder snapshot by content: the same save on every call."""

    def __init__(self, tree: TreeSave) -> None:
        self.tree = tree

    def __call__(self) -> TreeSave:
        return self.tree

    def close(self) -> None:
        self.tree.release()


def capture(
    data: SaveData,
    *,
    compression: Compression = "gzip",
    frozen: bool = False,
    folders: Folders | None = None,
) -> Captured:
    """What kind of snapshot ``data`` makes, and a source of its bytes (``Checkpoint.capture``).

    Bytes are copied at once. A file or folder is read when the snapshot is written,
    unless ``frozen``: then it is copied now (to a temp file). With ``folders``, a folder is
    saved by content (only what the previous snapshot lacks is stored; frozen: its changes
    are spooled now); else it is archived with ``compression``.

    A binary file object makes a ``"file"`` snapshot of what it holds from its current
    position to its end, streamed in chunks. A seekable one is read when the snapshot is
    written (again from that position if a transient error restarts the save); any other
    (a pipe, a socket) is spooled to a temp file now, once, so that a retried save can
    replay it. ``frozen`` copies either kind now. It is left at its end, not closed.

    Example:
        >>> capture(b"abc").kind
        'bytes'
        >>> import io
        >>> snap = capture(io.BytesIO(b"abc"))
        >>> snap.kind, b"".join(snap.source())
        ('file', b'abc')

    """
    if isinstance(data, bytes | bytearray | memoryview):
        # Copied now: the caller may reuse its buffer as soon as save() returns.
        return _bytes_capture(frozen_copy(data))
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if check_source(path) == "file":
            if frozen:
                return Captured("file", Spool.of_file(path))
            return Captured("file", lambda: iter_file(path))
        if folders is not None:
            tree = folders(path, frozen)
            return Captured("dir", _TreeSource(tree), tree.fields)
        gzip = compression == "gzip"
        counted = [TarFacts()]  # of the latest stream: a retried save streams anew

        def tar() -> Iterable[Chunk]:
            counted[0] = TarFacts()
            raw = iter_tar(path, facts=counted[0])
            return gzip_members(raw) if gzip else raw

        return Captured("dir", Spool(tar()) if frozen else tar, lambda: counted[0].fields())
    if callable(getattr(data, "read", None)):
        return _stream_capture(data, frozen=frozen)
    raise UnsupportedDataError(
        f"save() takes bytes, or the path of a file or folder (str or os.PathLike), or a "
        f"binary file object; got {type(data).__name__}. To save a Python object, pickle it first "
        "or use @resumable(state=...)."
    )


def _stream_capture(stream: IO[bytes], *, frozen: bool) -> Captured:
    """The ``"file"`` capture of a readable binary file object (see :func:`capture`)."""
    seekable = _check_stream(stream)
    if seekable and not frozen:
        start = stream.tell()

        def reread() -> Iterator[bytes]:
            stream.seek(start)  # a retried save reads the same bytes again
            return _chunks_of(stream)

        return Captured("file", reread)
    return Captured("file", _Replay(Spool(_chunks_of(stream))))


def _chunks_of(stream: IO[bytes]) -> Iterator[bytes]:
    """What ``stream`` holds from its position to its end, a chunk at a time."""
    while chunk := stream.read(CHUNK_SIZE):
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise _text_stream(stream)
        yield chunk


def _check_stream(stream: IO[bytes]) -> bool:
    """Refuse a closed, unreadable or text-mode file object; whether it can seek."""
    what = _describe(stream)
    try:
        # A file-like object may lack readable() and seekable(): then it is read as it is.
        readable = getattr(stream, "readable", None)
        if callable(readable) and not readable():
            raise UnsupportedDataError(
                f"save() cannot read {what}: it is not open for reading. Open it with "
                "mode 'rb' (or pass its path)."
            )
        # Reads nothing: tells a text stream ("") from a binary one (b"") and keeps its place.
        if isinstance(stream.read(0), str):
            raise _text_stream(stream)
        seekable = getattr(stream, "seekable", None)
        return callable(seekable) and bool(seekable())
    except ValueError as exc:  # "I/O operation on closed file", from the calls above
        if isinstance(exc, UnsupportedDataError):
            raise
        raise UnsupportedDataError(
            f"save() cannot read {what}: {str(exc).rstrip('.')}. Pass it while it is open (or "
            "pass its path)."
        ) from exc


def _text_stream(stream: IO[Any]) -> UnsupportedDataError:
    return UnsupportedDataError(
        f"save() takes a binary file object; {_describe(stream)} is open in text mode (its "
        "reads return str). Open it with mode 'rb', or pass its path or its encoded bytes."
    )


def _describe(stream: IO[Any]) -> str:
    name = getattr(stream, "name", None)
    kind = type(stream).__name__
    return f"the {kind} {name!r}" if isinstance(name, str) else f"the {kind}"


class _Replay:
    """The source of a spooled stream: the spool's bytes again on every call.

    ``save_sync`` drops its capture without releasing it: the spool's temp file is closed
    when this source is collected, as :meth:`Captured.release` would.
    """

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._closed = weakref.finalize(self, spool.close)

    def __call__(self) -> Iterator[bytes]:
        return self._spool()

    def close(self) -> None:
        self._closed()


def _bytes_capture(frozen: bytes | memoryview) -> Captured:
    return Captured("bytes", lambda: (frozen,))


def info_of(m: Manifest | None) -> CheckpointInfo | None:
    """What a manifest tells a ``Checkpoint``'s user, or None for no manifest."""
    if m is None:
        return None
    return CheckpointInfo(
        seq=m.seq,
        kind=m.kind,  # type: ignore[arg-type]  # a committed snapshot is never "cleared"
        size=m.size,
        created=m.created,
        attempt=m.attempt,
        signed="hmac" in m.extra,
        files_size=m.extra.get("raw_size") if m.compression == "pieces" else None,
        added=m.extra.get("added"),
    )


def committed_info(m: Manifest) -> CheckpointInfo:
    """What a committed snapshot's manifest tells a ``Checkpoint``'s user."""
    info = info_of(m)
    assert info is not None
    return info


def shown_as_info(
    accept: Callable[[CheckpointInfo], None] | None,
) -> Callable[[Manifest], None] | None:
    """``accept`` of a ``CheckpointInfo``, as the store calls it: with each manifest."""
    if accept is None:
        return None
    return lambda m: accept(committed_info(m))


#: Locations already warned about holding objects but no snapshot (one warning each).
_warned_foreign: set[str] = set()
_warned_lock = threading.Lock()
#: How many of the objects found there the warning names.
_NAMES_SHOWN = 5


def warned_foreign(uri: str) -> bool:
    """Whether :func:`warn_foreign` already warned about ``uri`` in this process."""
    return uri in _warned_foreign


def warn_foreign(uri: str, found: list[str]) -> None:
    """Warn, once per location, that ``uri`` holds objects (``found``) but no snapshot.

    A location with files but no snapshot is often a checkpoint another tool wrote (such as
    flyte's), or a store whose tasks are its sub-folders: ``load`` cannot read either.
    """
    if not found:
        return
    with _warned_lock:
        if uri in _warned_foreign:
            return
        _warned_foreign.add(uri)
    more = len(found) - _NAMES_SHOWN
    shown = ", ".join(found[:_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
    log.warning(
        "%s holds objects but no snapshot (%s): load() returns None. It is not a "
        "resumable checkpoint: files another tool wrote (flyte's checkpoint files, say) "
        "are read as they are, with fsspec; a @resumable store keeps each task's snapshots "
        "in a folder of its own (<store>/<key>)",
        uri,
        shown,
    )
