"""``Checkpoint``: save and load bytes, a file or a folder at any fsspec URL.

The sync methods hold the logic; each async twin sits next to its sync method and runs it on
an IO thread (``_threads.run_async``), so a running event loop never blocks on I/O, hashing or
compression.

Besides the user's ``save`` / ``load``, a ``Checkpoint`` offers the layer ``@resumable`` is
built on: :meth:`Checkpoint.capture` and :meth:`Checkpoint.commit` (a snapshot made at one
moment and written later: a :class:`Captured`), :meth:`Checkpoint.restore_into`,
:meth:`Checkpoint.read_newest_with` and :meth:`Checkpoint.read_newest_state` (restore without
the workspace), and the failure marks of poison snapshots. Its methods name public types only:
a commit is reported as a :class:`CheckpointInfo`, never as the store's manifest.

It opens its URL's storage (``_stack``: the signing key, the backend with retries and
pipelining) under a ``SnapshotStore``, as its :class:`~resumable.Storage` options say.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from . import _forks, _snapshot
from ._archive import Limits
from ._backend import local_path
from ._background import Background
from ._errors import ResumableError
from ._files import refuse_overlap
from ._loading import poison_tolerant
from ._manifest import Manifest
from ._names import PIECES
from ._options import Storage, storage_from_deprecated
from ._progress import make_progress
from ._retry import retry_call, storage_errors, storage_policy
from ._snapshot import Captured, CheckpointInfo, SaveData, capture
from ._stack import open_stack, resolve_signing_key
from ._statecodec import read_state
from ._store import SnapshotStore
from ._stream import Chunk
from ._threads import EXIT_TIMEOUT, async_twin, close_at_exit, run_async
from ._workspace import create as create_workspace
from ._workspace import let_go, release

__all__ = ["Captured", "Checkpoint", "CheckpointInfo", "SaveData"]

log = logging.getLogger("resumable")

T = TypeVar("T")


class Checkpoint:
    """Atomic, checksummed snapshots of bytes, a file or a folder under one URL.

    Each ``save`` is a new snapshot (a commit); ``load`` restores the newest one that verifies
    into a private workspace folder and returns that folder.

    Sync and async: each method that reads or writes the store comes as a pair, the bare
    name async and the ``_sync`` name blocking (``load`` / ``load_sync``, ``save`` /
    ``save_sync``, ``clear`` / ``clear_sync``, ...). ``close()`` is sync, as a resource's
    ``close`` is (``with`` calls it). The layer ``@resumable`` builds on (``capture``,
    ``commit``, ``restore_into``, ...) is sync only: call it from a worker thread in async code.

    Args:
        uri: a local folder or any fsspec URL (``memory://``, ``s3://``, ``gs://``, ``az://``).
            Every snapshot of one task lives under it.
        storage: how snapshots are stored (:class:`Storage`: ``keep``, ``signing_key``,
            ``storage_options``, ``retry``, ``compression``, ``limits``, ``progress``);
            default ``Storage()``.
        name: the checkpoint's identity, covered by its signatures: a signed snapshot loads
            only under the name it was saved under. Default: the last segment of ``uri``
            (``@resumable`` passes its task key), so moving a whole store keeps its
            snapshots valid while copying one task's files into another's folder does not.
        **deprecated: the fields of :class:`Storage` given directly (``keep=3``, ...), as
            they were spelled before: accepted with a ``DeprecationWarning`` for one release.

    Example:
        >>> import tempfile
        >>> with Checkpoint(tempfile.mkdtemp()) as cp:
        ...     cp.save_sync(b"step 3")
        ...     root = cp.load_sync()
        ...     (root / "payload").read_bytes()
        b'step 3'

    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        *,
        storage: Storage | None = None,
        name: str | None = None,
        **deprecated: Any,
    ) -> None:
        storage = storage_from_deprecated(storage, deprecated, "Checkpoint")
        #: The local folder or fsspec URL it was made with, as a str.
        self.uri = os.fspath(uri)
        #: How its snapshots are stored.
        self.storage = storage
        key = resolve_signing_key(storage.signing_key)
        self._retry = storage_policy(storage.retry)
        self._limits = storage.limits or Limits()
        backend = open_stack(uri, storage.storage_options, retry=storage.retry, policy=self._retry)
        # The folder's housekeeping (removing it once empty, listing sub-folders) goes to the
        # backend, snapshots through the store, packs to a folder beside them (always read).
        self._folder = backend
        self._pieces = backend.child(PIECES)
        self._store = SnapshotStore(
            backend,
            keep=storage.keep,
            signing_key=key,
            progress=make_progress(storage.progress),
            name=name,
            pieces=self._pieces,
        )
        self._lock = threading.RLock()
        _forks.track(self)
        self._bg = Background(self.uri)
        # The workspace is made when first needed (a load, or .path): saves need none.
        self._workspaces: list[Path] = []
        # Whether a load returned it: then it outlives this object (`Checkpoint(url).load_sync()`
        # keeps no reference to it) until exit; else garbage collection removes it (a pending
        # background job holds the Checkpoint, so none is pending then). At exit, close()
        # flushes first.
        self._handed_out = [False]
        self._cleanup = weakref.finalize(self, let_go, self._workspaces, self._handed_out)
        self._cleanup.atexit = False
        close_at_exit(self)

    def _after_fork(self) -> None:
        """A child forked while another thread held the lock gets a new one.

        That thread does not exist in the child, and would hold the lock forever.
        """
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Checkpoint({self.uri!r})"

    @property
    def path(self) -> Path:
        """The private workspace folder that ``load`` restores into (made on first use)."""
        with self._lock:
            if not self._workspaces:
                self._check_open()
                self._workspaces.append(create_workspace())
            return self._workspaces[0]

    # -- load ---------------------------------------------------------------------------

    def load_sync(self) -> Path | None:
        """Restore the newest valid snapshot and return the workspace folder.

        Bytes and files appear as ``<root>/payload``; a folder is extracted at ``<root>``.
        The folder stays until :meth:`close` (or the ``with`` block's end), else until the
        process exits, even if this ``Checkpoint`` is collected before: close checkpoints
        that a long-running loop makes. Returns ``None`` when nothing was ever saved. A
        corrupt newest snapshot is skipped with a warning; ``CorruptCheckpointError`` when
        none verifies; ``ConfigurationError`` when ``uri`` names a file or object, not a
        folder.

        Example:
            >>> import tempfile
            >>> Checkpoint(tempfile.mkdtemp()).load_sync() is None
            True

        """
        # A load must see every snapshot saved before it; the retention behind the last save
        # need not be done (a load never picks a snapshot it deletes: never the newest).
        self._bg.flush()
        self._check_open()
        root = self.path
        if self.restore_into(root) is None:
            self._warn_if_foreign()
            return None
        self._handed_out[0] = True
        return root

    async def load(self) -> Path | None:
        """Async twin of :meth:`load_sync`.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).load()) is None
            True

        """
        return await run_async(self.load_sync)

    def _warn_if_foreign(self) -> None:
        """After a load found nothing: warn, once per location, when it holds other objects."""
        if _snapshot.warned_foreign(self.uri):
            return
        try:
            found = self._store.foreign_objects()
            # The packs of a killed first folder save are ours too, not another tool's.
            folders = [f for f in self._folder.list_children() if f != PIECES]
        except OSError:
            return  # a warning is not worth a storage error
        if found is not None:  # None: snapshots exist (cleared, for one): not foreign
            _snapshot.warn_foreign(self.uri, found + [f"{folder}/" for folder in folders])

    # -- metadata -----------------------------------------------------------------------

    def info_sync(self) -> CheckpointInfo | None:
        """The newest committed snapshot's metadata, without restoring it; None if none.

        One listing and one manifest read: a cheap "is there a snapshot to resume from?"
        (flyte's ``prev_exists()``). The payload and signature are not verified: a load does,
        and may then fall back to an older snapshot. An unreadable newest manifest is
        skipped for the one before it.

        Example:
            >>> import tempfile
            >>> with Checkpoint(tempfile.mkdtemp()) as cp:
            ...     before = cp.info_sync()
            ...     cp.save_sync(b"abc")
            ...     before is None, cp.info_sync().kind
            (True, 'bytes')

        """
        self._bg.flush()  # background saves made before this call count
        return self._retried(
            lambda: _snapshot.info_of(self._store.newest_manifest()),
            f"reading the newest manifest of {self.uri}",
        )

    async def info(self) -> CheckpointInfo | None:
        """Async twin of :meth:`info_sync`.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).info()) is None
            True

        """
        return await run_async(self.info_sync)

    def exists_sync(self) -> bool:
        """Whether a committed snapshot exists: ``info_sync() is not None``.

        Example:
            >>> import tempfile
            >>> Checkpoint(tempfile.mkdtemp()).exists_sync()
            False

        """
        return self.info_sync() is not None

    async def exists(self) -> bool:
        """Async twin of :meth:`exists_sync`.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).exists())
            False

        """
        return await run_async(self.exists_sync)

    # -- save ---------------------------------------------------------------------------

    def save_sync(self, data: SaveData) -> None:
        """Save ``data`` as a new snapshot: bytes, the path of a file or folder, or a file object.

        A binary file object (``open(path, "rb")``, ``io.BytesIO``, a pipe) is saved as a
        ``"file"`` snapshot of what it holds from its current position to its end, streamed a
        chunk at a time, and left at its end, open. A save that meets a transient storage
        error starts over: a seekable file object is read again from that position, any
        other is spooled to a temp file once, as it is read. A text-mode file object is an
        ``UnsupportedDataError``; a ``uri`` that names a file, not a folder, a
        ``ConfigurationError``.

        Example:
            >>> import io, tempfile
            >>> with Checkpoint(tempfile.mkdtemp()) as cp:
            ...     cp.save_sync(b"")
            ...     cp.save_sync(io.BytesIO(b"streamed"))
            ...     (cp.load_sync() / "payload").read_bytes()
            b'streamed'

        """
        captured = self.capture(data)
        self._bg.flush()  # an older background snapshot must not land after this one
        self.commit(captured)

    async def save(self, data: SaveData) -> None:
        """Async twin of :meth:`save_sync`.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).save(b"state"))

        """
        # All of it off the loop, the copy of a large buffer included; the bytes are still
        # copied before this returns, so the caller may reuse its buffer then.
        await run_async(self.save_sync, data)

    def save_background_sync(self, data: SaveData) -> None:
        """Capture ``data`` now and save it on a worker thread; return at once.

        At most one save is in flight; a newer snapshot replaces one still waiting. Call
        :meth:`flush_sync` (or ``await flush()``, or ``close()``) to wait for it; a failed
        background save is raised by the next background save or flush. Capturing a file, a
        folder or a file object copies it (so that later changes cannot reach the snapshot,
        and a file object may be closed once this returns): that copy is the only wait.

        Example:
            >>> import tempfile
            >>> with Checkpoint(tempfile.mkdtemp()) as cp:
            ...     cp.save_background_sync(b"step 1")
            ...     cp.flush_sync()

        """
        self.commit_in_background(self.capture(data, frozen=True))

    def save_background(self, data: SaveData) -> Awaitable[None]:
        """Async twin of :meth:`save_background_sync`: the capture runs off the event loop.

        Called from sync code (no running event loop), as before it became async, it saves
        at once and warns (``DeprecationWarning``): write ``save_background_sync`` there.

        Example:
            >>> import asyncio, tempfile
            >>> async def main(cp):
            ...     await cp.save_background(b"step 1")
            ...     await cp.flush()
            >>> with Checkpoint(tempfile.mkdtemp()) as cp:
            ...     asyncio.run(main(cp))

        """
        return async_twin(self.save_background_sync, "Checkpoint.save_background", data)

    def flush_sync(self) -> None:
        """Wait until background saves are committed and retention is done.

        Raises a failure a background save met. Retention runs behind every save: until it
        is done, the store holds the snapshots of the last few saves beyond ``keep``. A failed
        retention is logged and tried again by the next save.
        """
        self._bg.flush()
        with self._lock:
            self._store.settle()

    async def flush(self) -> None:
        """Async twin of :meth:`flush_sync`."""
        await run_async(self.flush_sync)

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Flush background saves, then remove the workspace. Snapshots in the store stay.

        Sync, as a resource's ``close`` is (``with`` calls it); async code may call it from a
        worker thread (``await asyncio.to_thread(cp.close)``) when saves may be pending.
        """
        try:
            if self._cleanup.alive:
                self._bg.flush(EXIT_TIMEOUT)
                with self._lock:
                    self._store.settle(EXIT_TIMEOUT)
        finally:
            self._bg.close()
            if self._cleanup.alive:
                for root in self._workspaces:
                    release(root)
            self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the layer @resumable builds on (sync: call them from a worker thread in async code) --

    def capture(self, data: SaveData, *, frozen: bool = False) -> Captured:
        """What kind of snapshot ``data`` makes, and a source of its bytes.

        Bytes are copied at once. A file or folder is read when the snapshot is written,
        unless ``frozen``: then it is copied now (to a temp file), so that changes made after
        this call cannot reach the snapshot.

        Example:
            >>> import tempfile
            >>> Checkpoint(tempfile.mkdtemp()).capture(b"abc").kind
            'bytes'

        """
        folders = self._store.tree_save if self.storage.incremental else None
        return capture(
            data,
            compression=self.storage.compression,
            frozen=frozen,
            folders=None if folders is None else lambda root, now: folders(root, frozen=now),
        )

    def commit(self, captured: Captured, *, attempt: int = 0) -> CheckpointInfo:
        """Write a captured snapshot and commit it, retrying it whole on transient errors.

        ``attempt`` is recorded in the manifest. Does not wait for background saves. Returns
        what :meth:`info_sync` would now say.
        """
        compression = self.storage.compression if captured.kind == "dir" else "none"

        def commit() -> Manifest:
            return self._store.commit(
                captured.kind,
                captured.source(),
                compression=compression,
                attempt=attempt,
                facts=captured.facts,
            )

        what = f"saving a snapshot to {self.uri}"
        with self._lock, storage_errors(what):
            return _snapshot.committed_info(retry_call(commit, self._retry, what))

    def commit_in_background(self, captured: Captured, *, attempt: int = 0) -> None:
        """Commit a (frozen) capture on a worker; a newer one replaces one still waiting.

        The capture is released once written or replaced. A failure is raised by the next
        call of this method or of :meth:`flush_sync`.
        """

        def job() -> None:
            try:
                seq = self.commit(captured, attempt=attempt).seq
            finally:
                captured.release()
            log.debug("%s: committed snapshot %d in the background", self.uri, seq)

        self._bg.submit(job, captured.release)

    def restore_into(
        self,
        folder: Path,
        *,
        accept: Callable[[CheckpointInfo], None] | None = None,
        poison_after: int | None = None,
    ) -> CheckpointInfo | None:
        """Make ``folder`` hold the newest valid snapshot; its metadata, or None if none.

        A ``folder`` that is a symbolic link stays one: the folder it points to is restored
        (a link to nothing or to a file is a ``ConfigurationError``). ``folder`` changes only
        once a snapshot verified, and a restore that a killed process left halfway is put
        back first. ``accept`` sees each candidate's metadata first and may refuse it by
        raising; with ``poison_after``, a snapshot from which the task failed that many times
        is skipped. Does not wait for background saves (``load_sync`` does).
        """
        self._check_open()
        if self._folder.local:  # a restore replaces the folder: never the store's own
            refuse_overlap(folder, Path(local_path(self.uri)))
        seen = _snapshot.shown_as_info(accept)
        return _snapshot.info_of(
            self._poison_tolerant(
                lambda after: self._store.restore_into(folder, self._limits, seen, after),
                poison_after,
            )
        )

    def read_newest_with(
        self,
        decode: Callable[[Iterator[Chunk]], T],
        *,
        accept: Callable[[CheckpointInfo], None] | None = None,
        poison_after: int | None = None,
    ) -> tuple[CheckpointInfo, T] | None:
        """The newest valid snapshot's metadata and ``decode(payload)``, streamed, no copy.

        ``decode`` reads the payload's chunks as they arrive, verified as they stream; a
        digest mismatch at the end falls back to the previous snapshot. A signed store
        verifies the whole payload before ``decode`` sees it.

        Example:
            >>> import tempfile
            >>> with Checkpoint(tempfile.mkdtemp()) as cp:
            ...     cp.save_sync(b"abc")
            ...     info, payload = cp.read_newest_with(b"".join)
            >>> info.kind, payload
            ('bytes', b'abc')

        """
        return self._read_newest(lambda m, chunks: decode(chunks), accept, poison_after)

    def read_newest_state(
        self,
        *,
        accept: Callable[[CheckpointInfo], None] | None = None,
        poison_after: int | None = None,
    ) -> tuple[CheckpointInfo, Any, dict[str, Any]] | None:
        """The newest valid state snapshot: its metadata, its state and the extras beside it.

        A state snapshot is what ``@resumable(state=...)`` writes (``kind == "state"``); it is
        unpickled as it streams from the store, no whole-payload copy, its records' lengths
        bounded by the size the manifest records. The extras hold the random generators'
        states of ``rng=True``. ``accept`` and ``poison_after`` as for :meth:`restore_into`.
        None when nothing was saved.
        """
        found = self._read_newest(
            lambda m, chunks: read_state(chunks, size=m.size), accept, poison_after
        )
        if found is None:
            return None
        info, (state, extras) = found
        return info, state, extras

    def _read_newest(
        self,
        decode: Callable[[Manifest, Iterator[Chunk]], T],
        accept: Callable[[CheckpointInfo], None] | None,
        poison_after: int | None,
    ) -> tuple[CheckpointInfo, T] | None:
        seen = _snapshot.shown_as_info(accept)
        found = self._poison_tolerant(
            lambda after: self._store.read_newest_with(decode, seen, after), poison_after
        )
        if found is None:
            return None
        m, made = found
        return _snapshot.committed_info(m), made

    def _poison_tolerant(self, load: Callable[[int | None], T], poison_after: int | None) -> T:
        """``load`` with the poison rule of :func:`_loading.poison_tolerant`, retried."""
        what = f"loading a snapshot from {self.uri}"
        return poison_tolerant(
            lambda after: self._retried(lambda: load(after), what), poison_after, self.uri
        )

    def newest_seq(self) -> int | None:
        """The sequence number of the newest committed snapshot, if any (one listing)."""
        return self._retried(self._store.newest_seq, f"listing {self.uri}")

    def mark_failed(self, seq: int) -> None:
        """Record that the task failed from snapshot ``seq`` before saving a newer one."""
        self._retried(lambda: self._store.mark_failed(seq), f"marking snapshot {seq} failed")

    def clear_marks(self) -> None:
        """Forget the failure marks: the task got past its snapshots."""
        self._retried(self._store.clear_marks, f"clearing failure marks of {self.uri}")

    def clear_sync(self) -> None:
        """Delete every snapshot (oldest first, so an interrupted clear keeps the newest).

        In a signed store a signed "cleared" record is left above them, so that old signed
        files copied back later are never loaded.

        Example:
            >>> import tempfile
            >>> with Checkpoint(tempfile.mkdtemp()) as cp:
            ...     cp.save_sync(b"abc")
            ...     cp.clear_sync()
            ...     cp.exists_sync()
            False

        """
        self.flush_sync()

        def clear() -> None:
            newest = self._store.newest_seq()
            self._store.clear()
            if newest is not None and self._store.signing_key is not None:
                self._store.mark_cleared(newest + 1)
            # Temp files of killed saves (of provably gone writers) go too, and the task's
            # folder with them when nothing is left in it.
            self._pieces.remove_root_if_empty()
            self._folder.remove_root_if_empty()

        self._retried(clear, f"clearing {self.uri}")

    def clear(self) -> Awaitable[None]:
        """Async twin of :meth:`clear_sync`.

        Called from sync code (no running event loop), as before it became async, it clears
        at once and warns (``DeprecationWarning``): write ``clear_sync`` there.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).clear())

        """
        return async_twin(self.clear_sync, "Checkpoint.clear")

    def _retried(self, fn: Callable[[], T], what: str) -> T:
        with self._lock, storage_errors(what):
            return retry_call(fn, self._retry, what)

    def _check_open(self) -> None:
        if not self._cleanup.alive:
            raise ResumableError(f"{self!r} is closed: create a new Checkpoint to load")
