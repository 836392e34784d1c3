"""A store's folder snapshots by content: the base a save builds on, and the packs it keeps.

:class:`Folders` is what a ``SnapshotStore`` adds for incremental folder snapshots (see
``_index`` for the format, ``_pieces`` for packs): the newest folder snapshot a save can
reuse pieces of, the check that those pieces cannot be gone when the save commits, and the
collection of packs that retention frees. It reads the store through :class:`StoreView`,
the few public methods of a store it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ._backend import Backend
from ._errors import CorruptCheckpointError
from ._index import INDEX_MAX, Index, Piece
from ._manifest import Manifest
from ._names import manifest_seqs
from ._pieces import Packs, TreeSave, fetch, remove_all
from ._stream import Chunk

__all__ = ["Folders", "StoreView"]

log = logging.getLogger("resumable")


#: How many indexes' packs :meth:`Folders.read_packs` keeps by digest.
_DIGESTS_KEPT = 1024


class StoreView(Protocol):
    """What :class:`Folders` reads of its store."""

    backend: Backend

    def newest_manifest(self) -> Manifest | None:
        """The newest committed snapshot's manifest, unverified."""
        ...

    def manifest(self, seq: int, size: int | None = None) -> Manifest:
        """Snapshot ``seq``'s parsed manifest."""
        ...

    def check_signature(self, m: Manifest) -> None:
        """Refuse a manifest this store's key did not sign."""
        ...

    def payload(self, m: Manifest) -> Iterator[Chunk]:
        """The payload's bytes, verified as they stream."""
        ...

    def snapshot_exists(self, seq: int) -> bool:
        """Whether snapshot ``seq``'s manifest is there (one read)."""
        ...


class Folders:
    """The folder snapshots by content of one store, and the packs in ``pieces``."""

    def __init__(self, store: StoreView, pieces: Backend) -> None:
        self._store = store
        #: Which packs the snapshots use, and their collection.
        self.packs = Packs(pieces, self.read_packs)
        # The packs of indexes read before, by their digest: the same index names the same
        # packs, so a retention pass reads each snapshot's manifest, not its whole index.
        self._packs_by_digest: dict[str, frozenset[str]] = {}
        # The newest folder snapshot by content this store knows (number and index): the next
        # folder save stores only what it lacks. ``_looked``: whether the store was asked for
        # it (once: then this process's commits keep it up to date).
        self._base: tuple[int, Index] | None = None
        self._looked = False
        self._fresh = False  # the next save builds on nothing (a pack it would reuse is doomed)

    def save(self, root: Path, *, frozen: bool = False) -> TreeSave:
        """A folder snapshot by content of ``root``, storing what the newest one lacks.

        ``frozen``: the folder is read now (its new pieces spooled), so that later changes
        cannot reach the snapshot.
        """
        return TreeSave(root, self.packs.backend, self.base(), frozen=frozen)

    def base(self) -> tuple[int, Index] | None:
        """The newest folder snapshot by content (number and index) a save can build on.

        Asked of the store once (the newest manifest, and its index when it is one); then
        kept up to date by this store's commits. None when there is none, or it cannot be
        read (the save then stores everything).
        """
        if self._fresh:  # see can_commit
            self._fresh, self._base, self._looked = False, None, True
        if not self._looked:
            self._looked = True
            try:
                m = self._store.newest_manifest()
                if m is not None and m.compression == "pieces":
                    self._store.check_signature(m)
                    self._base = (m.seq, self._index_of(m))
                    self.packs.used(*self._base)
            except CorruptCheckpointError as exc:
                log.info("%s: the newest folder snapshot is unreadable (%s)", self.url, exc)
        return self._base

    @property
    def url(self) -> str:
        """The store's URL."""
        return self._store.backend.url

    def read_index(self, seq: int) -> Index | None:
        """The index of snapshot ``seq``, verified; None when it is not a folder by content."""
        m = self._store.manifest(seq)
        if m.compression != "pieces":
            return None
        self._store.check_signature(m)
        return self._index_of(m)

    def read_packs(self, seq: int) -> frozenset[str]:
        """The packs snapshot ``seq`` uses: its manifest read anew, its index when not read before.

        ``FileNotFoundError`` when it is gone, ``CorruptCheckpointError`` when unreadable.
        """
        m = self._store.manifest(seq)
        if m.compression != "pieces":
            return frozenset()
        self._store.check_signature(m)
        found = self._packs_by_digest.get(m.digest)
        if found is None:
            found = frozenset(self._index_of(m).packs())
            if len(self._packs_by_digest) >= _DIGESTS_KEPT:
                del self._packs_by_digest[next(iter(self._packs_by_digest))]  # the oldest
            self._packs_by_digest[m.digest] = found
        return found

    def _index_of(self, m: Manifest) -> Index:
        if m.size > INDEX_MAX:
            raise CorruptCheckpointError(f"folder index of {m.size} bytes is larger than any")
        return Index.from_json(b"".join(self._store.payload(m)))

    def committed(self, seq: int, index: Index | None) -> None:
        """Snapshot ``seq`` is committed; ``index`` when it is a folder by content."""
        self.packs.used(seq, index)
        if index is not None:
            self._base, self._looked = (seq, index), True

    def can_commit(self, tree: TreeSave) -> bool:
        """Whether every pack ``tree`` uses is there, and cannot be gone once it commits.

        This process's retention gives up the ones it reuses (``Packs.rescue``); another
        writer's deletes the base snapshot before any of its packs, so the base must still
        exist (or have been deleted here, where the packs are rescued). Then one listing
        shows every pack the index names is there: a pack lost since the base was read, or
        deleted by a ``resumable gc`` that outran a long save, fails the check. When it
        fails, the caller gives up the save (:meth:`discard`); the next save stores
        everything.
        """
        reused = tree.reused()
        if reused and tree.base is not None:
            base = tree.base[0]
            if not self.packs.rescue(reused) or not (
                self.packs.dropped_here(base) or self._store.snapshot_exists(base)
            ):
                self._base = None
                return False
        if tree.index is None or not tree.index.pieces:
            return True
        there = {e.name for e in self.packs.backend.entries()}
        if reused & self.packs.foreign_marks(there):
            # Another writer's retention condemned a pack it reuses: gone before long. The
            # next save stores every piece anew instead of building on them.
            self._fresh = True
            return False
        if tree.index.packs() <= there:
            return True
        self._base = None
        return False

    def discard(self, tree: TreeSave | None) -> None:
        """Delete the packs a save made that will never be committed (they are its own)."""
        if tree is not None:
            tree.discard()

    def stale(self) -> None:
        """Another writer committed: build the next save on the newest snapshot, read anew."""
        self._base, self._looked = None, False

    def refused(self, seq: int) -> None:
        """A load refused snapshot ``seq``: no save builds on it, or on a newer one, again."""
        if self._base is None or self._base[0] >= seq:
            self._base, self._looked = None, True  # not read yet: the next save stores all

    def collect(self, seqs: list[int]) -> None:
        """After retention deleted ``seqs``: condemn their packs, delete those due.

        A base among them is forgotten: its packs may be deleted after the grace period,
        and a later folder save must not count on them (one in flight was rescued).
        """
        if self._base is not None and self._base[0] in seqs:
            self._base = None
        self.packs.dropped(seqs)
        self.packs.collect(lambda: manifest_seqs(e.name for e in self._store.backend.entries()))

    def clear(self) -> None:
        """Every snapshot was deleted: delete every pack, and know nothing."""
        self._base, self._looked = None, False
        self.packs.forget()
        remove_all(self.packs.backend)

    def fetch(self, pack: str, pieces: list[Piece]) -> Iterator[tuple[Piece, bytes]]:
        """The pieces of one pack, each verified (``_pieces.fetch``)."""
        return fetch(self.packs.backend, pack, pieces)
