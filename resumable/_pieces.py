"""The pieces of incremental folder snapshots on a backend: packs written, read, and collected.

A folder snapshot by content (see ``_index``) is its index (the snapshot's payload) plus the
packs of the task's ``~pieces/`` folder that hold its pieces. This module is everything that
touches packs:

- :class:`PackSink` stores new pieces back to back, ``PACK_TARGET`` bytes per pack: uploaded
  as they fill, or spooled to a local temp file and uploaded when the snapshot is written (a
  capture that must not see later changes of the folder);
- :class:`TreeSave` is a folder snapshot being saved: its packs first, its index last (as
  the payload the store commits);
- :func:`fetch` reads pieces back from one pack, each verified;
- :class:`Packs` collects the packs no snapshot uses any more, safely (see its docstring).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, TypeVar

from . import _forks
from ._backend import Backend, BlobWriter
from ._errors import CorruptCheckpointError
from ._index import Index, Piece
from ._names import condemned_name, condemned_pack, is_pack, pack_name
from ._stream import CHUNK_SIZE, Chunk, read_at_most
from ._threads import run_on_io
from ._tree import ScanFacts, decode, scan

__all__ = ["PACK_GRACE", "PACK_TARGET", "PackSink", "Packs", "TreeSave", "fetch", "remove_all"]

log = logging.getLogger("resumable")

#: A pack is closed once it holds this many bytes: few requests per save on object stores,
#: and little left unused when some of its pieces are no longer needed.
PACK_TARGET = 16 << 20
#: A pack no snapshot uses is deleted only this long after that was first seen, and only if
#: a fresh listing still shows no snapshot using it: a save of another writer that decided to
#: reuse it has committed (or given up) by then. See :class:`Packs`.
PACK_GRACE = 600.0

#: Packs made durable at once behind the one being filled.
_COMMITTING = 2

#: The packs snapshot ``seq`` uses, read from the store (none when it is not a folder by
#: content); ``FileNotFoundError`` when it is gone, ``CorruptCheckpointError`` if unreadable.
ReadPacks = Callable[[int], frozenset[str]]


class PackSink:
    """Packs new pieces back to back and stores the packs: uploaded, or spooled first.

    With a backend, each pack is streamed to it as it fills. Without (``spool``), the packs
    go to one local temp file, and :meth:`upload` writes them later (again on a retry).
    """

    def __init__(self, backend: Backend | None) -> None:
        self._backend = backend
        #: The names of the packs made so far.
        self.packs: list[str] = []
        self._spool: IO[bytes] | None = None
        if backend is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - close() closes it
        self._spans: list[tuple[str, int, int]] = []  # spooled packs: name, start, end
        self._writer: BlobWriter | None = None
        # Packs being made durable (fsync and rename, or an upload's completion) on IO
        # threads while the next one fills: a save waits for durability once, at its end.
        self._committing: deque[Future[None]] = deque()
        self._name = ""
        self._size = 0
        self._start = 0

    def add(self, digest: str, size: int, data: Chunk, codec: str) -> Piece:
        """Append a coded piece to the open pack (a new one when none is open)."""
        if not self._name:
            self._open()
        piece = Piece(digest, size, self._name, self._size, len(data), codec)
        if self._writer is not None:
            self._writer.write(data)
        else:
            assert self._spool is not None
            self._spool.write(data)
        self._size += len(data)
        if self._size >= PACK_TARGET:
            self._close()
        return piece

    def _open(self) -> None:
        self._name = pack_name()
        self._size = 0
        self.packs.append(self._name)
        if self._backend is not None:
            self._writer = self._backend.writer(self._name)
        else:
            assert self._spool is not None
            self._start = self._spool.tell()

    def _close(self) -> None:
        if self._writer is not None:
            self._committing.append(run_on_io(self._writer.commit))
            self._writer = None
            while len(self._committing) > _COMMITTING:
                self._committing.popleft().result()
        elif self._name:
            self._spans.append((self._name, self._start, self._start + self._size))
        self._name = ""

    def finish(self) -> None:
        """Close the last pack, and wait until every pack is durable under its final name."""
        self._close()
        while self._committing:
            self._committing.popleft().result()

    def upload(self, backend: Backend) -> None:
        """Write the spooled packs to ``backend`` (all of them, again on every call)."""
        assert self._spool is not None
        for name, start, end in self._spans:
            writer = backend.writer(name)
            try:
                self._spool.seek(start)
                left = end - start
                while left:
                    data = self._spool.read(min(left, CHUNK_SIZE))
                    writer.write(data)
                    left -= len(data)
                writer.commit()
            except BaseException:
                writer.abort()
                raise

    def close(self) -> None:
        """Throw away a pack being written and the spool."""
        while self._committing:  # a failed save: its packs are orphans either way
            with contextlib.suppress(Exception):
                self._committing.popleft().result()
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        if self._spool is not None:
            self._spool.close()


class TreeSave:
    """A folder snapshot by content being saved: a producer of its payload, the index.

    Called with the store's ``write``, it stores the pieces the base snapshot (``base``: its
    sequence number and index) does not have, then writes the index. ``frozen``: the folder
    is scanned now, its new pieces spooled locally, so later changes cannot reach the
    snapshot; calling it uploads them. Otherwise the folder is scanned when called (again
    on every call: a retried save starts over).
    """

    def __init__(
        self,
        root: Path,
        pieces: Backend,
        base: tuple[int, Index] | None,
        *,
        frozen: bool = False,
    ) -> None:
        self.root = root
        self.base = base
        #: Where its packs go: the pieces of the store that made it, and no other.
        self.pieces = pieces
        self._done = False  # committed: its packs are a snapshot's, never discarded
        #: The index written (once called), and what its scan did.
        self.index: Index | None = None
        self.facts = ScanFacts()
        self._spooled: PackSink | None = None
        self._made: list[str] = []  # the packs the last call wrote (not frozen)
        if frozen:
            self._spooled = PackSink(None)
            try:
                self.index, self.facts = self._scan(self._spooled)
            except BaseException:
                self._spooled.close()
                raise

    def _scan(self, sink: PackSink) -> tuple[Index, ScanFacts]:
        index, facts = scan(self.root, None if self.base is None else self.base[1], sink)
        sink.finish()
        return index, facts

    def reused(self) -> set[str]:
        """The packs the index uses that this save did not write (the base snapshot's)."""
        if self.base is None or self.index is None:
            return set()
        return self.index.packs().difference(self.made())

    def made(self) -> list[str]:
        """The packs this save wrote."""
        return self._spooled.packs if self._spooled is not None else self._made

    def __call__(self, write: Callable[[Chunk], None]) -> None:
        if self._spooled is not None:
            try:
                self._spooled.upload(self.pieces)
            except BaseException:
                self.discard()
                raise
        else:
            sink = PackSink(self.pieces)
            try:
                self.index, self.facts = self._scan(sink)
            except BaseException:
                sink.close()  # after the packs still being made durable have landed...
                self._made = sink.packs
                self.discard()  # ... a failed save leaves none of them behind
                raise
            sink.close()
            self._made = sink.packs
        assert self.index is not None
        write(self.index.to_json())

    def done(self) -> None:
        """Its snapshot is committed: its packs are never discarded, and it commits no more.

        A frozen capture committed again would write the same packs under the same names,
        unseen by the checks that keep a save's reused packs from being deleted under it.
        """
        self._done = True

    @property
    def committed(self) -> bool:
        """Whether its snapshot is committed."""
        return self._done

    def discard(self) -> None:
        """Delete the packs this save wrote (it will never commit): they are its own."""
        if not self._done and self.made():
            with contextlib.suppress(Exception):
                self.pieces.delete_many(list(self.made()))

    def fields(self) -> dict[str, Any]:
        """Manifest fields: its files' bytes and entries (bounds a load checks), bytes added."""
        assert self.index is not None
        return {
            "raw_size": self.index.logical_size(),
            "members": len(self.index.nodes),
            "added": self.facts.bytes_added,
        }

    def release(self) -> None:
        """Free the spool of a frozen save."""
        if self._spooled is not None:
            self._spooled.close()


def fetch(backend: Backend, pack: str, pieces: list[Piece]) -> Iterator[tuple[Piece, bytes]]:
    """The ``pieces`` of ``pack`` (in offset order), each decoded and verified.

    A missing pack, or one that holds other bytes, is ``CorruptCheckpointError``.
    """
    if not is_pack(pack):
        raise CorruptCheckpointError(f"{pack!r} is not a pack's name")
    try:
        stream = backend.open_read(pack)
    except (FileNotFoundError, NotADirectoryError):  # gone, or ~pieces is not a folder
        raise CorruptCheckpointError(f"pack {pack} is missing") from None
    with stream:
        at = 0
        for piece in pieces:
            if piece.offset < at:
                raise CorruptCheckpointError(f"pieces of pack {pack} overlap")
            try:
                _skip(stream, piece.offset - at)
                data = read_at_most(stream, piece.stored)
            except FileNotFoundError:  # deleted mid-read (object stores say so late)
                raise CorruptCheckpointError(f"pack {pack} disappeared while read") from None
            at = piece.offset + len(data)
            yield piece, decode(piece, data)


def _skip(stream: IO[bytes], count: int) -> None:
    """Move ``count`` bytes ahead: by reading, as a stream downloaded ahead cannot seek."""
    while count > 0:
        skipped = len(stream.read(min(count, CHUNK_SIZE)))
        if not skipped:
            return
        count -= skipped


#: How many dropped snapshots and deleted packs a ``Packs`` remembers.
_REMEMBERED = 10_000

K = TypeVar("K")


def _remember(seen: dict[K, None], new: Iterable[K]) -> None:
    """Add ``new`` to ``seen``, forgetting the oldest beyond ``_REMEMBERED``."""
    seen.update(dict.fromkeys(new))
    for old in list(itertools.islice(seen, max(0, len(seen) - _REMEMBERED))):
        del seen[old]


class Packs:
    """Which packs the snapshots of one task use, and the deletion of those none uses.

    When retention drops snapshots, the packs they used that no known snapshot uses are
    *condemned*; a condemned pack is deleted at a later retention pass, once
    :data:`PACK_GRACE` has passed and a fresh listing shows no snapshot using it. Only packs
    of dropped snapshots are ever candidates: a pack that a save in flight is writing is used
    by no snapshot yet, and is never condemned.

    A pack's grace period starts only once a fresh listing, every snapshot in it read
    anew, shows no snapshot using it (at the retention pass that dropped the snapshot that
    did), and starts again whenever a snapshot using it is dropped again. A pack is deleted
    only when, after its grace, a second such listing still shows none using it; a listing
    with a snapshot that cannot be read (gone since listed, or unreadable) proves nothing,
    and the pass deletes nothing.

    The race this closes: another writer's save that decided to reuse a pack (its base
    snapshot used it), while this one drops that base. That save checks, just before it
    commits, that its base still exists (else it gives up: ``ConcurrentWriterError``); if
    it existed then, the pack's grace period had not started, so the pack is not deleted
    before the grace period has passed, by when the save's manifest is listed. And a save
    whose checks come after a pack's grace started sees its marker in the store (written
    before the grace starts, see :meth:`_mark`): it gives up instead of reusing the pack.
    """

    def __init__(self, pieces: Backend, read_packs: ReadPacks) -> None:
        self.backend = pieces
        self.grace = PACK_GRACE
        self._read_packs = read_packs
        self._lock = threading.Lock()
        self._uses: dict[int, frozenset[str]] = {}  # snapshot -> its packs, where known
        # Pack -> since when (time.monotonic()) a listing shows none using it; None: freed by
        # a drop, not yet checked against a listing.
        self._condemned: dict[str, float | None] = {}
        # Snapshots this process's retention deleted, and packs it deleted (or is deleting),
        # the newest _REMEMBERED of each: a save in flight asks about its base, a few
        # snapshots back, and a long-running task must not grow them without end. A save
        # whose base is older than that gives up (its listing check would catch a lost pack
        # anyway).
        self._dropped: dict[int, None] = {}
        self._gone: dict[str, None] = {}
        self._any = False  # whether a folder snapshot by content of the task was seen
        #: This process's name on the condemnation markers it writes beside the packs.
        self.me = secrets.token_hex(8)
        self._marked: set[str] = set()  # condemned packs whose marker is written
        self._unmark: set[str] = set()  # packs whose marker goes at the next pass
        _forks.track(self)

    def _after_fork(self) -> None:
        """A child forked while retention held the lock gets a new one, and its own name.

        The parent's condemnations stay the parent's: the child neither deletes those packs
        nor takes the parent's markers for its own.
        """
        self._lock = threading.Lock()
        self.me = secrets.token_hex(8)
        self._condemned.clear()
        self._marked.clear()
        self._unmark.clear()

    def used(self, seq: int, index: Index | None) -> None:
        """Snapshot ``seq`` is committed (or read) and uses the packs of ``index`` (None: none)."""
        with self._lock:
            self._uses[seq] = frozenset(index.packs() if index is not None else ())
            if index is not None:
                self._any = True

    def _may_hold_packs(self) -> bool:
        """Whether this process saw a folder snapshot by content of the task.

        Only then does it read the index of a snapshot it drops without knowing it: a
        process that saves bytes or state pays nothing for folders. (A process that never
        saw one leaves the packs of those it drops to ``resumable gc``.)
        """
        return self._any

    def forget(self) -> None:
        """Know no snapshot (a clear)."""
        with self._lock:
            self._uses.clear()
            self._condemned.clear()
            self._any = False

    def dropping(self, seqs: list[int]) -> None:
        """Before snapshots ``seqs`` are deleted: learn the packs of those not known yet."""
        if self._may_hold_packs():
            for seq in seqs:
                self._packs_of(seq)

    def dropped(self, seqs: list[int]) -> None:
        """Snapshots ``seqs`` are deleted: their packs no known snapshot uses are candidates.

        A candidate's grace period starts at the next :meth:`collect` that shows no snapshot
        using it, again for a pack whose period had started (another snapshot used it since).
        """
        with self._lock:
            _remember(self._dropped, seqs)
            freed = set().union(*(self._uses.pop(seq, frozenset()) for seq in seqs))
            freed.difference_update(*self._uses.values())
            for pack in freed:
                self._condemned[pack] = None

    def collect(self, manifests: Callable[[], list[int]]) -> list[str]:
        """Start the grace of new candidates, and delete the packs whose grace has passed.

        Both only for packs that no snapshot uses, in a listing of ``manifests`` (the
        snapshots there are now) whose every snapshot was read anew. Returns the packs deleted.
        """
        with self._lock:
            # A pack is due when its grace had passed before the listing began: a save that
            # commits within the grace of its checks is in that listing.
            listed = time.monotonic()
            if not self._unmark and not any(
                t is None or listed - t >= self.grace for t in self._condemned.values()
            ):
                return []
        used = self._used_now(manifests)
        if used is None:  # proves nothing: none starts its grace, none is deleted
            return []
        with self._lock:
            for pack in used.intersection(self._condemned):
                del self._condemned[pack]  # used again: a candidate only once dropped again
                self._unmark.update(self._marked.intersection((pack,)))
            due = [
                p for p, t in self._condemned.items() if t is not None and listed - t >= self.grace
            ]
            new = [p for p, t in self._condemned.items() if t is None]
            if self.grace <= 0:  # no grace: what this listing proves unused goes now
                due, new = list(self._condemned), []
            _remember(self._gone, due)  # from now on no save may rescue them
            unmark, self._unmark = self._unmark, set()
        self._mark(new)
        markers = [condemned_name(p, self.me) for p in {*due, *unmark} if p in self._marked]
        try:
            self.backend.delete_many([*due, *markers])
        except BaseException:
            with self._lock:  # not deleted after all (the next retention tries again)
                for pack in due:
                    self._gone.pop(pack, None)
                self._unmark.update(unmark)
            raise
        with self._lock:
            for pack in due:
                self._condemned.pop(pack, None)
            self._marked.difference_update(due, unmark)
        if due:
            log.debug("%s: deleted %d unused packs", self.backend.url, len(due))
        return due

    def _mark(self, packs: list[str]) -> None:
        """Start the grace of ``packs``: once their markers are in the store, for every writer.

        A save of another writer that reuses a pack lists the packs just before it commits:
        one with another writer's marker is given up (the next save stores its pieces
        anew). A save that saw no marker commits within the grace, so before the pack goes.
        """
        for pack in packs:
            with contextlib.suppress(FileExistsError):
                self.backend.create_exclusive(condemned_name(pack, self.me), b"")
            with self._lock:
                self._marked.add(pack)
                if pack in self._condemned and self._condemned[pack] is None:
                    self._condemned[pack] = time.monotonic()
                else:  # rescued meanwhile: its marker goes at the next pass
                    self._unmark.add(pack)

    def _used_now(self, manifests: Callable[[], list[int]]) -> set[str] | None:
        """The packs the snapshots there are now use, each read anew; None if one cannot be.

        Never from what this process remembers: the same number may be another snapshot now
        (another writer cleared the task and saved again).
        """
        used: set[str] = set()
        for seq in manifests():
            try:
                used.update(self._read_packs(seq))
            except (CorruptCheckpointError, FileNotFoundError):
                return None  # gone since listed, or unreadable: it may use any pack
        return used

    def _packs_of(self, seq: int) -> frozenset[str]:
        """The packs snapshot ``seq`` uses: known, or read from its index (and kept)."""
        if seq not in self._uses:
            with contextlib.suppress(CorruptCheckpointError, FileNotFoundError):
                packs = self._read_packs(seq)
                with self._lock:
                    self._uses[seq] = packs
        return self._uses.get(seq, frozenset())

    def rescue(self, packs: set[str]) -> bool:
        """A save about to commit uses ``packs``: none may be deleted. False if one may be gone.

        Takes them off the condemned list; fails when this process deleted one (or is
        deleting it now).
        """
        with self._lock:
            if not packs.isdisjoint(self._gone):
                return False
            for pack in packs:
                self._condemned.pop(pack, None)
            self._unmark.update(self._marked.intersection(packs))
            return True

    def foreign_marks(self, names: Iterable[str]) -> set[str]:
        """The packs that another writer's markers among ``names`` (a listing) condemn."""
        found = set()
        for name in names:
            marked = condemned_pack(name)
            if marked is not None and marked[1] != self.me:
                found.add(marked[0])
        return found

    def dropped_here(self, seq: int) -> bool:
        """Whether this process's retention deleted snapshot ``seq``."""
        with self._lock:
            return seq in self._dropped

    def pending(self) -> int:
        """How many condemned packs wait for their grace period."""
        with self._lock:
            return len(self._condemned)


def remove_all(pieces: Backend) -> None:
    """Delete every pack and condemnation marker (a clear); other objects are left alone."""
    names = [e.name for e in pieces.entries()]
    pieces.delete_many([n for n in names if is_pack(n) or condemned_pack(n) is not None])
