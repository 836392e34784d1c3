"""Snapshots as commits: sequence numbers, the commit protocol, loads, fallback and failure marks.

Layout of one task's prefix::

    00000000000000000042.1f0c9a7e3b2d4c5a.blob   payload (absent when it is inlined)
    00000000000000000042.json                    manifest: the commit marker, written last

A snapshot exists once its manifest exists. The payload's name carries a random writer token,
so two writers never overwrite each other's payload; the manifest's name is the bare sequence
number and is created exclusively, so only one writer can commit a given number.

The manifest's format, checks and signatures are ``_manifest`` (pure); deleting the snapshots
beyond ``keep`` behind the saves is ``_retention``; what a load does with a payload (unpack it
into a folder, decode it) is ``_restore``. A store talks to its objects through a
:class:`~resumable._backend.Backend` only.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from . import _forks, _loading, _restore
from ._archive import Limits
from ._backend import Backend, Entry
from ._errors import ConcurrentWriterError, ConfigurationError, CorruptCheckpointError
from ._folders import Folders
from ._index import Index
from ._loading import rate
from ._manifest import (
    MANIFEST_MAX,
    PIECES_FORMAT,
    WRITTEN_FORMAT,
    Kind,
    Manifest,
    check_signature,
    checkpoint_name,
    sign,
    too_large,
)
from ._marks import FailureMarks
from ._names import blob_name, is_temp, manifest_name, manifest_seqs, parse
from ._payload import INLINE_MAX, PayloadWriter, Producer, read_payload
from ._pieces import Packs, TreeSave
from ._progress import Progress, saving
from ._retention import Retention
from ._stream import Chunk, Digest, read_at_most

__all__ = [
    "INLINE_MAX",
    "Kind",
    "Manifest",
    "Producer",
    "SnapshotStore",
    "names_of",
]

T = TypeVar("T")

log = logging.getLogger("resumable")

#: Saves and loads at least this large log their size and rate.
_LOG_SIZE = 16 << 20
#: After this process saw a competing writer on a store, its saves there list first (and
#: retention works from that listing) for this many seconds: see ``SnapshotStore.commit``.
_CONTESTED_FOR = 60.0
#: Store URL -> until when (``time.monotonic()``) saves there list first.
_contested: dict[str, float] = {}


def names_of(entries: Iterable[Entry]) -> list[str]:
    """The names of listed objects."""
    return [e.name for e in entries]


class SnapshotStore:
    """Commits, restores and prunes the snapshots under one backend root.

    Args:
        backend: where the objects are.
        keep: how many committed snapshots to keep (the caller validated it: >= 1).
        signing_key: signs every manifest and mark, and refuses unsigned ones.
        progress: reports each transfer.
        name: the identity signatures cover (default: :func:`checkpoint_name` of the URL).
        pieces: where the packs of folder snapshots by content go (the ``~pieces`` folder
            beside the snapshots); without, folders are saved as archives only.

    """

    def __init__(
        self,
        backend: Backend,
        *,
        keep: int,
        signing_key: bytes | None = None,
        progress: Progress | None = None,
        name: str | None = None,
        pieces: Backend | None = None,
    ) -> None:
        self.backend = backend
        self.signing_key = signing_key
        self.progress = progress
        #: The checkpoint's identity that signatures cover (see :func:`checkpoint_name`).
        self.name = checkpoint_name(backend.url) if name is None else name
        # The number to commit next, known without asking the store. ``None``: not known
        # (first save, or after a failure that may or may not have committed), so the next
        # commit lists first. The objects of each snapshot are known by ``_retention``.
        self._next: int | None = None
        #: Its folder snapshots by content (their base, their packs), if it keeps pieces.
        self.folders = None if pieces is None else Folders(self, pieces)
        self._retention = Retention(
            backend,
            keep,
            before=None if self.folders is None else self.folders.packs.dropping,
            after=None if self.folders is None else self.folders.collect,
        )
        self._marks = FailureMarks(backend, signing_key, self.name)
        _forks.track(self)

    def _after_fork(self) -> None:
        """In a forked child what the parent knew may be stale: the next commit lists."""
        self._next = None

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the retention that runs behind the last commit, if any; it never raises.

        After ``timeout`` seconds it stops waiting with a warning: the retention goes on
        behind, and the snapshots it has not deleted yet stay until it is done.

        Example:
            >>> from resumable._backend import open_backend
            >>> store = SnapshotStore(open_backend("memory://doc/settle", None), keep=1)
            >>> for step in range(3):
            ...     _ = store.commit("bytes", [b"step %d" % step])
            >>> store.settle()
            >>> sorted(e.name for e in store.backend.entries())
            ['00000000000000000002.json']

        """
        self._retention.settle(timeout)

    def _learn(self, entries: list[Entry]) -> list[int]:
        """Take a listing as the truth; its manifests' sequence numbers, newest first."""
        seqs = self._retention.learn(entries)
        self._next = seqs[0] + 1 if seqs else 0
        return seqs

    def _forget(self) -> None:
        self._retention.forget()
        self._next = None

    def check_signature(self, m: Manifest) -> None:
        """Refuse (``SignatureError``) a manifest this store's key did not sign for its name.

        Nothing to check without a signing key.
        """
        if check_signature(m, self.signing_key, self.name) == 1:
            log.warning(
                "snapshot %d of %s carries an old signature that does not name its checkpoint: "
                "it is loaded, but a copy of another task's old files would be too; the next "
                "save signs anew",
                m.seq,
                self.backend.url,
            )

    # -- writing ------------------------------------------------------------------------

    def commit(
        self,
        kind: Kind,
        chunks: Iterable[Chunk] | Producer,
        *,
        compression: str = "none",
        attempt: int = 0,
        facts: Callable[[], dict[str, Any]] | None = None,
    ) -> Manifest:
        """Store ``chunks`` as a new snapshot, commit it, then apply retention.

        In steady state this is one request (the manifest, payload inlined) plus, when
        retention drops a snapshot, one batched delete: the number to commit is the last
        one committed plus one, with no listing, and the exclusive create of the manifest
        detects a competing writer. Only the first commit of this store lists.

        A refused create means another writer committed that number: the store lists, and
        raises ``ConcurrentWriterError``. A writer that fell more than ``keep`` snapshots
        behind another one can find its next number pruned, and commit below the newest
        (nothing is overwritten; that snapshot is never the newest); it meets the other
        writer's numbers soon after and is refused then. So that what is left stays within
        ``keep``, saves to a store where a competing writer was seen list first for a while.

        ``chunks`` may also be a producer: a callable that is handed a ``write`` function and
        calls it with the payload's chunks in order (a pickler streaming into the payload).
        """
        started = time.perf_counter()
        tree = chunks if isinstance(chunks, TreeSave) else None
        if tree is not None:
            self._refuse_foreign(tree)
        if self._next is None or _contested.get(self.backend.url, 0.0) > time.monotonic():
            self._learn(self.backend.entries())
        assert self._next is not None
        seq = self._next
        token = secrets.token_hex(8)
        payload = self._write_payload(seq, token, chunks)
        if tree is not None:
            compression = "pieces"
            self._check_base(tree, payload.blob if payload.inline is None else None)
        manifest = Manifest(
            seq=seq,
            kind=kind,
            size=payload.digest.size,
            digest=payload.digest.hexdigest(),
            compression=compression,
            blob=None if payload.inline is not None else payload.blob,
            inline=payload.inline,
            created=time.time(),
            attempt=attempt,
            writer=token,
            format=PIECES_FORMAT if compression == "pieces" else WRITTEN_FORMAT,
        )
        if facts is not None:  # what the stream held, known once it is written
            manifest.extra.update(facts())
        sign(manifest, self.signing_key, self.name)
        self._publish(manifest, tree)
        self._committed(manifest, tree)
        if manifest.size >= _LOG_SIZE:
            log.info(
                "saved snapshot %d to %s: %s",
                seq,
                self.backend.url,
                rate(manifest.size, time.perf_counter() - started),
            )
        return manifest

    def _committed(self, m: Manifest, tree: TreeSave | None) -> None:
        """What the store knows once ``m`` is committed: the next number, packs, retention."""
        self._next = m.seq + 1
        if tree is not None:
            tree.done()
        if self.folders is not None:
            self.folders.committed(m.seq, None if tree is None else tree.index)
        self._retention.committed(m.seq, [manifest_name(m.seq), *filter(None, [m.blob])])

    def _write_payload(
        self, seq: int, token: str, chunks: Iterable[Chunk] | Producer
    ) -> PayloadWriter:
        """Write the payload of snapshot ``seq``: inlined, or durable as its own object."""
        callback = saving(self.progress, seq, self.backend.url)
        payload = PayloadWriter(self.backend, blob_name(seq, token), callback)
        try:
            payload.write_all(chunks)
            callback.set_size(payload.digest.size)  # a save knows its size once it is written
            callback.close()
        except BaseException:
            self._forget()  # a failed save lists again: another writer may be why it failed
            payload.abort()
            callback.close()
            raise
        return payload

    def _publish(self, manifest: Manifest, tree: TreeSave | None = None) -> None:
        """Create the manifest: the commit. Refused when another writer took the number."""
        seq = manifest.seq
        try:
            self.backend.create_exclusive(manifest_name(seq), manifest.to_json())
        except FileExistsError:
            self._forget()
            _contested[self.backend.url] = time.monotonic() + _CONTESTED_FOR
            if manifest.blob is not None:
                self.backend.delete(manifest.blob)
            if self.folders is not None:
                self.folders.discard(tree)
                self.folders.stale()
            with contextlib.suppress(Exception):  # else the next commit lists
                self._learn(self.backend.entries())  # what the other writer committed
            raise ConcurrentWriterError(
                17,
                f"another writer committed snapshot {seq} of {self.backend.url} first; this "
                "snapshot was discarded. Is the same task running twice with the same key?",
            ) from None
        except BaseException:
            self._forget()  # the manifest may or may not exist now: the next commit lists
            raise

    @property
    def packs(self) -> Packs | None:
        """The packs of its folder snapshots by content, if it keeps pieces."""
        return None if self.folders is None else self.folders.packs

    def tree_save(self, root: Path, *, frozen: bool = False) -> TreeSave:
        """A folder snapshot by content of ``root`` (see ``Folders.save``)."""
        if self.folders is None:
            raise ValueError("this store keeps no pieces: folders are saved as archives")
        return self.folders.save(root, frozen=frozen)

    def read_index(self, seq: int) -> Index | None:
        """The index of snapshot ``seq``, verified; None when it is not a folder by content."""
        if self.folders is None:
            return None
        return self.folders.read_index(seq)

    def _refuse_foreign(self, tree: TreeSave) -> None:
        """A folder captured for another store (its packs go there), or committed already."""
        if self.folders is None or tree.pieces is not self.folders.packs.backend:
            raise ConfigurationError(
                f"this folder was captured for another store (its pieces go to "
                f"{tree.pieces.url}): commit it through the Checkpoint that captured it"
            )
        if tree.committed:
            raise ConfigurationError(
                "this folder capture is committed already: capture the folder again to "
                "save it again"
            )

    def _check_base(self, tree: TreeSave, blob: str | None) -> None:
        """Give the save up when the packs it reuses may be gone (``Folders.can_commit``)."""
        assert self.folders is not None
        if self.folders.can_commit(tree):
            return
        self._forget()
        if blob is not None:
            self.backend.delete(blob)
        self.folders.discard(tree)
        self.folders.stale()
        base = tree.base[0] if tree.base is not None else None
        raise ConcurrentWriterError(
            17,
            f"snapshot {base} of {self.backend.url}, whose pieces this folder snapshot reuses, "
            "was deleted (or its packs condemned) by another writer while it was saved; this "
            "snapshot was discarded and the next one stores every piece. Is the same task "
            "running twice?",
        )

    def clear(self) -> None:
        """Delete every snapshot, oldest first, so that an interrupted clear keeps the newest.

        Then every pack of its folder snapshots by content.
        """
        self._forget()
        entries = self.backend.entries()
        seqs = self._learn(entries)
        self._retention.drop(seqs[::-1], told=False)
        dropped = set(seqs)
        orphans = []  # payloads and marks of snapshots without a manifest
        for e in entries:
            kind = parse(e.name)
            if kind is not None and kind.kind != "manifest" and kind.seq not in dropped:
                orphans.append(e.name)
        self.backend.delete_many(orphans)
        if self.folders is not None:
            self.folders.clear()
        self._forget()  # the next commit starts over at 0, as on an empty store

    # -- failure marks (poison snapshots, see ``_marks``) -------------------------------

    def mark_failed(self, seq: int) -> None:
        """Record that a task started from snapshot ``seq`` failed before saving a newer one."""
        self._marks.add(seq)

    def failures(self, entries: list[Entry]) -> Counter[int]:
        """How many failure marks each snapshot has among ``entries`` (signed ones if signed)."""
        return self._marks.count(entries)

    def clear_marks(self) -> None:
        """Forget failure records: the task got past its snapshots."""
        self._marks.clear()

    def mark_cleared(self, seq: int) -> None:
        """Commit a signed "cleared" record as snapshot ``seq``, above every one cleared.

        A load stops at it, as at an empty store: snapshots at or below it (old files copied
        back after a clear) are never loaded. Newer snapshots supersede it as usual.
        """
        m = Manifest(
            seq=seq,
            kind="cleared",
            size=0,
            digest=Digest().hexdigest(),
            compression="none",
            blob=None,
            inline=b"",
            created=time.time(),
            attempt=0,
            writer=secrets.token_hex(8),
        )
        sign(m, self.signing_key, self.name)
        with contextlib.suppress(FileExistsError):  # a newer snapshot took the number: fine
            self.backend.create_exclusive(manifest_name(seq), m.to_json())

    # -- reading ------------------------------------------------------------------------

    def manifest(self, seq: int, size: int | None = None) -> Manifest:
        """The parsed manifest of snapshot ``seq``; ``size``: its size, if a listing told.

        A manifest larger than ``MANIFEST_MAX`` is corrupt. With the listed size that costs
        no read; without, at most ``MANIFEST_MAX + 1`` bytes are read.
        """
        name = manifest_name(seq)
        if size is not None and size > MANIFEST_MAX:
            raise too_large()
        if size is None:
            with self.backend.open_read(name) as stream:
                data = read_at_most(stream, MANIFEST_MAX + 1)
        else:
            data = self.backend.read(name)  # one request (it may have grown since listed)
        return Manifest.from_json(data, seq)

    def payload(self, m: Manifest) -> Iterator[Chunk]:
        """The payload's bytes, checked against the manifest's size and digest on the way."""
        return read_payload(self.backend, m, self.progress)

    def restore_into(
        self,
        folder: Path,
        limits: Limits,
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> Manifest | None:
        """Make ``folder`` hold the newest valid snapshot; its manifest, or None if none.

        See :func:`resumable._restore.restore_into`: staged beside ``folder``, verified,
        then swapped in; in a signed store verified before a byte is unpacked.
        """
        return _restore.restore_into(
            folder,
            limits,
            signed=self.signing_key is not None,
            load=lambda consume: self._load(consume, accept, poison_after),
            fetch=None if self.folders is None else self.folders.fetch,
        )

    def read_newest_with(
        self,
        decode: Callable[[Manifest, Iterator[Chunk]], T],
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> tuple[Manifest, T] | None:
        """The newest valid snapshot's manifest and ``decode(manifest, payload chunks)``.

        ``decode`` gets the manifest with the chunks: its size bounds what the payload's
        records may claim.

        Unsigned stores: ``decode`` reads the payload as it arrives, verified as it reads;
        the digest is checked at its end, and a mismatch (or a failure of ``decode`` on a
        payload that turns out corrupt) falls back to the previous snapshot like any corrupt
        one. Signed stores verify the whole payload (held in memory or a temp file) before
        ``decode`` sees a byte of it.
        """
        consume = _restore.decoder(decode, signed=self.signing_key is not None)
        return self._load(consume, accept, poison_after)

    def verify(self, seq: int, limits: Limits | None = None) -> Manifest | None:
        """Load snapshot ``seq`` exactly as a load would, never falling back to another one.

        Every check a load runs (signature, size and digest, archive safety and format),
        into a temp folder that is then removed. Raises ``CorruptCheckpointError`` when a
        load would refuse it; returns its manifest, or None when it is gone (or a cleared
        record). Writes nothing to the store.
        """
        with tempfile.TemporaryDirectory(prefix="resumable-verify-") as scratch:
            restored = Path(scratch) / "restored"
            restored.mkdir()
            return _restore.restore_into(
                restored,
                limits or Limits(),
                signed=self.signing_key is not None,
                load=lambda consume: self._load(consume, None, None, only=seq),
                fetch=None if self.folders is None else self.folders.fetch,
                have=False,
            )

    def _load(
        self,
        consume: _restore.Consume[T],
        accept: Callable[[Manifest], None] | None,
        poison_after: int | None,
        only: int | None = None,
    ) -> tuple[Manifest, T] | None:
        """The newest valid snapshot through ``consume`` (see :func:`_loading.load`)."""
        return _loading.load(self, consume, accept, poison_after, only)

    def refused(self, seq: int) -> None:
        """A load refused snapshot ``seq``: no folder save builds on it, or on a newer one."""
        if self.folders is not None:
            self.folders.refused(seq)

    def snapshot_exists(self, seq: int) -> bool:
        """Whether snapshot ``seq``'s manifest is there (one read)."""
        return self._exists(manifest_name(seq))

    def _exists(self, name: str) -> bool:
        try:
            self.backend.read(name)
        except FileNotFoundError:
            return False
        return True

    # -- metadata -----------------------------------------------------------------------

    def newest_seq(self) -> int | None:
        """The newest committed sequence number, if any (one listing, no manifest read)."""
        self.settle()  # a listing taken while our own retention deletes would be stale
        seqs = self._learn(self.backend.entries())  # a fresher view for the next commit too
        return seqs[0] if seqs else None

    def newest_manifest(self) -> Manifest | None:
        """The newest committed snapshot's manifest, unverified; None if none, or cleared.

        One listing and one manifest read: neither the payload nor the signature is
        checked. An unreadable newest manifest is skipped for the one before it.
        """
        for _ in range(3):  # a manifest pruned since the listing: newer ones exist, list again
            entries = self.backend.entries()
            sizes = {e.name: e.size for e in entries}
            for seq in manifest_seqs(names_of(entries)):
                try:
                    m = self.manifest(seq, sizes.get(manifest_name(seq)))
                except FileNotFoundError:
                    break
                except CorruptCheckpointError as exc:
                    log.debug("%s: manifest %d is unreadable (%s)", self.backend.url, seq, exc)
                    continue
                return None if m.kind == "cleared" else m  # a clear: nothing older counts
            else:
                return None
        return None

    def foreign_objects(self) -> list[str] | None:
        """The objects here that are not a snapshot's, sorted; None when a snapshot is here.

        (Temp files of saves are ours too.) A location with objects but no snapshot is
        often one another tool wrote, which a load cannot read.
        """
        names = names_of(self.backend.entries())
        if manifest_seqs(names):
            return None
        return sorted(n for n in names if parse(n) is None and not is_temp(n))
