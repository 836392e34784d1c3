"""``Checkpoint``: save and load bytes, a file or a folder at any fsspec URL.

The sync methods hold the logic; each async twin sits next to its sync method and runs it on a
worker thread, so a running event loop never blocks on I/O, hashing or compression.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._backend import open_backend
from ._background import Background
from ._codec import Compression, Limits, check_source, gzip_members, iter_file, iter_tar
from ._errors import ConfigurationError, ResumableError, UnsupportedDataError
from ._progress import Progress, make_progress
from ._store import Kind, Manifest, SnapshotStore
from ._stream import Chunk, discard, spool

__all__ = ["SIGNING_KEY_ENV", "Checkpoint", "SaveData"]

#: The environment variable that holds the default signing key.
SIGNING_KEY_ENV = "RESUMABLE_SIGNING_KEY"

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
            a callable ``(what, done, total, finished)``. Transfers of 16 MiB or more also
            log their size and rate at INFO level either way.

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
        progress: bool | Progress = False,
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
        self._store = SnapshotStore(
            open_backend(uri, storage_options),
            keep=keep,
            signing_key=key,
            progress=make_progress(progress),
        )
        self._lock = threading.RLock()
        self._bg: Background | None = None
        self._workspace = Path(tempfile.mkdtemp(prefix="resumable-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workspace, True)

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
        kind, chunks = self._encode(data)
        self._commit(kind, chunks)

    async def save(self, data: SaveData) -> None:
        """Async twin of :meth:`save_sync`.

        Example:
            >>> import asyncio, tempfile
            >>> asyncio.run(Checkpoint(tempfile.mkdtemp()).save(b"state"))

        """
        kind, chunks = self._encode(data)
        await asyncio.to_thread(self._commit, kind, chunks)

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
        kind, chunks = self._encode(data)
        if kind != "bytes":
            chunks = spool(chunks)  # the file or folder may change once we return
        if self._bg is None:
            self._bg = Background(self.uri)

        def job() -> None:
            try:
                self._commit(kind, chunks)
            finally:
                discard(chunks)

        self._bg.submit(job, lambda: discard(chunks))

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

    def _encode(self, data: SaveData) -> tuple[Kind, Iterable[Chunk]]:
        """What kind of snapshot ``data`` makes, and its bytes as a (lazy) stream."""
        if isinstance(data, bytes | bytearray | memoryview):
            # Copied now: the caller may reuse its buffer as soon as save() returns.
            return "bytes", (bytes(data),)
        if isinstance(data, str | os.PathLike):
            path = Path(data)
            if check_source(path) == "file":
                return "file", iter_file(path)
            tar = iter_tar(path)
            return "dir", gzip_members(tar) if self.compression == "gzip" else tar
        raise UnsupportedDataError(
            f"save() takes bytes, or the path of a file or folder (str or os.PathLike); got "
            f"{type(data).__name__}. To save a Python object, pickle it first or use "
            "@resumable(state=...)."
        )

    def _commit(self, kind: Kind, chunks: Iterable[Chunk], attempt: int = 0) -> Manifest:
        compression = self.compression if kind == "dir" else "none"
        with self._lock:
            return self._store.commit(kind, chunks, compression=compression, attempt=attempt)

    def _restore(
        self,
        into: Path | None = None,
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> Manifest | None:
        with self._lock:
            if not self._cleanup.alive:
                raise ResumableError(f"{self!r} is closed: create a new Checkpoint to load")
            return self._store.restore(into or self._workspace, self.limits, accept, poison_after)
