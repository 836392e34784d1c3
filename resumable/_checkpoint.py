"""``Checkpoint``: save and load bytes, a file or a folder at any fsspec URL.

The sync methods hold the logic; each async twin sits next to its sync method and runs it on a
worker thread, so a running event loop never blocks on I/O, hashing or compression.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._backend import LocalBackend, open_backend
from ._background import EXIT_TIMEOUT, Background
from ._codec import Compression, Limits, check_source, gzip_members, iter_file, iter_tar
from ._errors import ConfigurationError, ResumableError, StorageError, UnsupportedDataError
from ._pipe import PipelinedBackend
from ._progress import ProgressArg, make_progress
from ._retry import RetryingBackend, RetryPolicy, retry_call
from ._store import Kind, Manifest, SnapshotStore
from ._stream import Chunk, Spool, discard

__all__ = ["SIGNING_KEY_ENV", "Checkpoint", "SaveData"]

log = logging.getLogger("resumable")

#: The environment variable that holds the default signing key.
SIGNING_KEY_ENV = "RESUMABLE_SIGNING_KEY"

#: A callable that produces a snapshot's bytes, again on every call.
Source = Callable[[], Iterable[Chunk]]

#: What ``save`` accepts: bytes, or the path of a file or folder (a ``str`` is a path).
SaveData = bytes | bytearray | memoryview | str | os.PathLike[str]


class Checkpoint:
    """Atomic, checksummed snapshots of bytes, a file or a folder under one URL.

    Each ``save`` is a new snapshot (a commit); ``load`` restores the newest one that verifies
    into a private workspace folder and returns that folder.

    Args:
        uri: a local folder or any fsspec URL (``memory://``, ``s3://``, ``gs://``, ``az://``).
            Every snapshot of one task lives under it.
        keep: how many committed snapshots to keep (at least 1).
        compression: ``"gzip"`` (default: a fast, adaptive ``.tar.gz``) or ``"none"``, for
            folders; bytes and files are stored as they are.
        storage_options: passed to the fsspec filesystem (credentials, endpoint, ...).
        limits: caps on what restoring a folder may write (tar bombs).
        signing_key: a secret; manifests then carry an HMAC, and loads refuse unsigned or
            wrongly signed snapshots before reading them. Default: ``$RESUMABLE_SIGNING_KEY``.
        progress: ``True`` for a tqdm progress bar per transfer (the ``progress`` extra), or
            an ``fsspec.callbacks.Callback``: each save and load is reported to
            ``callback.branched(source, destination)``, or to the callback itself when it
            does not branch (``set_size``, ``relative_update``, ``close``). Transfers of
            16 MiB or more also log their size and rate at INFO level either way.
        retry: how storage calls are retried and how long each may take
            (:class:`RetryPolicy`; by default 5 tries with backoff, 60 s per call; on a
            local disk only whole saves and loads are retried unless a policy is given). A save
            that meets a transient error is retried whole; when tries run out, or a call
            hangs past its timeout, a ``StorageError`` says so and the previous snapshot
            stays intact.

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
        keep: int = 2,
        compression: Compression = "gzip",
        storage_options: dict[str, Any] | None = None,
        limits: Limits | None = None,
        signing_key: bytes | str | None = None,
        progress: ProgressArg = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ConfigurationError(f"keep must be a whole number >= 1, got {keep!r}")
        if compression not in ("gzip", "none"):
            raise ConfigurationError(f"compression must be 'gzip' or 'none', got {compression!r}")
        self.uri = os.fspath(uri)
        self.keep = keep
        self.compression: Compression = compression
        self.limits = limits or Limits()
        key = signing_key if signing_key is not None else os.environ.get(SIGNING_KEY_ENV)
        if isinstance(key, str):
            key = key.encode()
        if key is not None and not key:
            raise ConfigurationError("signing_key is empty: pass a secret, or None")
        self.retry = retry or RetryPolicy()
        backend = open_backend(uri, storage_options)
        if retry is not None or not isinstance(backend, LocalBackend):
            # Per-call retries and deadlines cost a thread hop per call: worth it for
            # networks, not for a local disk unless asked for (NFS mounts can hang).
            backend = RetryingBackend(backend, self.retry)
        if not isinstance(backend, LocalBackend):
            backend = PipelinedBackend(backend)  # uploads and downloads overlap our work
        self._store = SnapshotStore(
            backend,
            keep=keep,
            signing_key=key,
            progress=make_progress(progress),
        )
        self._lock = threading.RLock()
        self._bg: Background | None = None
        self._workspace = Path(tempfile.mkdtemp(prefix="resumable-"))
        self._workers: list[Background] = []  # shared with the finalizer, which stops them
        self._cleanup = weakref.finalize(self, _release, self._workspace, self._workers)

    def __repr__(self) -> str:
        return f"Checkpoint({self.uri!r})"

    @property
    def path(self) -> Path:
        """The private workspace folder that ``load`` restores into."""
        return self._workspace

    # -- load ---------------------------------------------------------------------------

    def load_sync(self) -> Path | None:
        """Restore the newest valid snapshot and return the workspace folder.

        Bytes and files appear as ``<root>/payload``; a folder is extracted at ``<root>``.
        Returns ``None`` when nothing was ever saved. A corrupt newest snapshot is skipped
        with a warning; ``CorruptCheckpointError`` when none verifies.

        Example:
            >>> import tempfile
            >>> Checkpoint(tempfile.mkdtemp()).load_sync() is None
            True

        """
        return None if self._restore() is None else self._workspace

    async def load(self) -> Path | None:
        """Async twin of :meth:`load_sync`.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).load()) is None
            True

        """
        return await asyncio.to_thread(self.load_sync)

    # -- save ---------------------------------------------------------------------------

    def save_sync(self, data: SaveData) -> None:
        """Save ``data`` as a new snapshot: bytes, or the path of a file or folder.

        Example:
            >>> import tempfile
            >>> Checkpoint(tempfile.mkdtemp()).save_sync(b"")

        """
        self.flush_sync()  # an older background snapshot must not land after this one
        self._commit(*self._encode(data))

    async def save(self, data: SaveData) -> None:
        """Async twin of :meth:`save_sync`.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).save(b"state"))

        """
        kind, source = self._encode(data)
        await self.flush()  # an older background snapshot must not land after this one
        await asyncio.to_thread(self._commit, kind, source)

    def save_background(self, data: SaveData) -> None:
        """Capture ``data`` now and save it on a worker thread; return at once.

        At most one save is in flight; a newer snapshot replaces one still waiting. Call
        :meth:`flush_sync` (or ``await flush()``, or ``close()``) to wait for it; a failed
        background save is raised by the next ``save_background`` or flush.

        Example:
            >>> import tempfile
            >>> with Checkpoint(tempfile.mkdtemp()) as cp:
            ...     cp.save_background(b"step 1")
            ...     cp.flush_sync()

        """
        kind, source = self._encode(data)
        # The file or folder may change once we return: capture it now.
        if kind == "file":
            source = Spool.of_file(Path(data))  # type: ignore[arg-type]
        elif kind == "dir":
            source = Spool(source())
        if self._bg is None:
            self._bg = Background(self.uri)
            self._workers.append(self._bg)

        def job() -> None:
            try:
                self._commit(kind, source)
            finally:
                discard(source)

        self._bg.submit(job, lambda: discard(source))

    def flush_sync(self) -> None:
        """Wait until background saves are committed; raise a failure one of them met."""
        if self._bg is not None:
            self._bg.flush()

    async def flush(self) -> None:
        """Async twin of :meth:`flush_sync`."""
        await asyncio.to_thread(self.flush_sync)

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Flush background saves, then remove the workspace. Snapshots in the store stay."""
        try:
            self.flush_sync()
        finally:
            if self._bg is not None:
                self._bg.close()
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

    # -- shared by the twins and by @resumable ------------------------------------------

    def _encode(self, data: SaveData) -> tuple[Kind, Source]:
        """What kind of snapshot ``data`` makes, and a source of its bytes.

        The source can be called again to produce the bytes again: a save that meets a
        transient storage error is retried from the start.
        """
        if isinstance(data, bytes | bytearray | memoryview):
            # Copied now: the caller may reuse its buffer as soon as save() returns.
            frozen = bytes(data)
            return "bytes", lambda: (frozen,)
        if isinstance(data, str | os.PathLike):
            path = Path(data)
            if check_source(path) == "file":
                return "file", lambda: iter_file(path)
            if self.compression == "gzip":
                return "dir", lambda: gzip_members(iter_tar(path))
            return "dir", lambda: iter_tar(path)
        raise UnsupportedDataError(
            f"save() takes bytes, or the path of a file or folder (str or os.PathLike); got "
            f"{type(data).__name__}. To save a Python object, pickle it first or use "
            "@resumable(state=...)."
        )

    def _commit(self, kind: Kind, source: Source | Iterable[Chunk], attempt: int = 0) -> Manifest:
        """Commit a snapshot, retrying it whole on transient storage errors.

        ``source`` is a callable that produces the bytes (again on each try), or chunks that
        are tried once unless they are a list or tuple.
        """
        policy = self.retry
        if callable(source):
            make: Source = source
        else:
            chunks = source
            make = lambda: chunks  # noqa: E731 - tiny adapter
            if not isinstance(chunks, list | tuple):
                policy = dataclasses.replace(policy, attempts=1)
        compression = self.compression if kind == "dir" else "none"

        def commit() -> Manifest:
            return self._store.commit(kind, make(), compression=compression, attempt=attempt)

        with self._lock, _storage_errors(f"saving a snapshot to {self.uri}"):
            return retry_call(commit, policy, f"saving a snapshot to {self.uri}")

    def _restore(
        self,
        into: Path | None = None,
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> Manifest | None:
        self.flush_sync()  # a load must see every snapshot saved before it
        with self._lock:
            if not self._cleanup.alive:
                raise ResumableError(f"{self!r} is closed: create a new Checkpoint to load")

            def restore() -> Manifest | None:
                return self._store.restore(
                    into or self._workspace, self.limits, accept, poison_after
                )

            what = f"loading a snapshot from {self.uri}"
            with _storage_errors(what):
                return retry_call(restore, self.retry, what)


def _release(workspace: Path, workers: list[Background]) -> None:
    # Also runs at interpreter exit (weakref.finalize's own atexit hook, which runs before
    # the background module's): pending saves are committed first, never dropped.
    for worker in workers:
        try:
            worker.flush(EXIT_TIMEOUT)
        except BaseException:
            log.exception("a background save was lost")
        worker.close()
    shutil.rmtree(workspace, ignore_errors=True)


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """Report the store's own errors as StorageError: a library error, never a task's.

    A ``StorageError`` is not retried by ``@resumable`` and never counts against a snapshot
    as a crash of the task. The library's own errors and a vanished source pass unchanged.
    """
    try:
        yield
    except ResumableError:
        raise
    except OSError as exc:
        raise StorageError(f"{what} failed: {exc!r}; the previous snapshot is intact") from exc
