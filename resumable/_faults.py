"""A fault-injecting fsspec filesystem, for testing how the store survives a flaky backend.

``faulty://<path>`` wraps another filesystem (``target_protocol``) and, at rates you choose,
makes calls raise :class:`InjectedFault`, block until released, or publish written files torn.
Random choices come from ``random.Random(seed)``, so a run is reproducible when its calls come
in the same order.

Importing this module registers the ``faulty`` protocol with fsspec.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from types import TracebackType
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

__all__ = ["FaultyFileSystem", "InjectedFault"]


class InjectedFault(ConnectionError):
    """A transient failure raised on purpose by :class:`FaultyFileSystem`."""


# fsspec ships no type information, so AbstractFileSystem is ``Any`` to mypy.
class FaultyFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Delegates to an inner filesystem, failing, hanging or truncating some calls.

    Faultable calls: ``ls``, ``info``, ``cat_file``, ``pipe_file``, ``open``, ``rm_file``,
    ``exists``, and ``write`` / ``close`` of a file opened for writing. ``invalidate_cache``
    only drops a local cache, so it never faults. A file opened for writing is held in memory
    and published to the inner filesystem in one call on ``close``, as an object store
    publishes an upload: a write or close that faults publishes nothing, and so does leaving a
    ``with`` block on an exception.

    Args:
        target_protocol: the inner filesystem's protocol, e.g. ``"memory"`` or ``"file"``.
        target_options: options for the inner filesystem (``{"auto_mkdir": True}`` for
            ``"file"``, whose folders must exist before a write).
        fs: an inner filesystem instance, instead of ``target_protocol``.
        fail_rate: fraction of faultable calls that raise :class:`InjectedFault`.
        truncate_rate: fraction of written files (``open`` for writing, ``pipe_file``)
            silently published with only a random prefix of their bytes: a torn upload.
        hang_rate: fraction of faultable calls that block first, until :meth:`release` or
            ``hang_seconds`` (then the call goes on and may still fault).
        hang_seconds: the longest a hanging call blocks.
        seed: seed of the random choices.

    Attributes:
        calls: faultable calls made, by method name (file methods as ``"write"``, ``"close"``).
        faults: calls that raised :class:`InjectedFault`, by method name.
        hangs: calls that blocked.
        truncations: files published torn.

    ``cachable`` is off: fsspec would otherwise hand two stores with equal options one shared
    instance, with shared counters and random state.

    Example:
        >>> import fsspec
        >>> fs = fsspec.filesystem("faulty", target_protocol="memory", fail_rate=1.0)
        >>> try:
        ...     fs.cat_file("/nothing")
        ... except InjectedFault:
        ...     print(fs.faults["cat_file"])
        1

    """

    protocol = "faulty"
    cachable = False

    def __init__(
        self,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        fs: AbstractFileSystem | None = None,
        *,
        fail_rate: float = 0.0,
        truncate_rate: float = 0.0,
        hang_rate: float = 0.0,
        hang_seconds: float = 60.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for rate_name, rate in (
            ("fail_rate", fail_rate),
            ("truncate_rate", truncate_rate),
            ("hang_rate", hang_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{rate_name} must be between 0 and 1, got {rate!r}")
        if fs is None:
            if target_protocol is None:
                raise ValueError("faulty:// needs target_protocol= (e.g. 'memory') or fs=")
            fs = fsspec.filesystem(target_protocol, **(target_options or {}))
        self.fs = fs
        self.fail_rate = fail_rate
        self.truncate_rate = truncate_rate
        self.hang_rate = hang_rate
        self.hang_seconds = hang_seconds
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.hangs = 0
        self.truncations = 0
        self._random = random.Random(seed)
        # Calls arrive from retry worker threads: one lock keeps the draws and counters exact.
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._hanging = 0
        self._changed = threading.Condition(self._lock)

    # -- fault machinery ----------------------------------------------------------------

    def enter_call(self, method: str, path: str) -> None:
        """Count a call, maybe block it, maybe fail it."""
        with self._lock:
            self.calls[method] += 1
            # Both draws happen on every call, so adding hangs does not move the failures.
            hang = self._random.random() < self.hang_rate
            fail = self._random.random() < self.fail_rate
            if hang:
                self.hangs += 1
                self._hanging += 1
                self._changed.notify_all()
        if hang:
            try:
                self._released.wait(self.hang_seconds)
            finally:
                with self._lock:
                    self._hanging -= 1
                    self._changed.notify_all()
        if fail:
            with self._lock:
                self.faults[method] += 1
            raise InjectedFault(f"injected fault: {method} {path}")

    def torn(self, data: bytes) -> bytes:
        """``data``, or a random strict prefix of it when this write is chosen to tear."""
        with self._lock:
            if self._random.random() >= self.truncate_rate:
                return data
            self.truncations += 1
            return data[: self._random.randrange(len(data))] if data else data

    def release(self) -> None:
        """Unblock every hanging call, and let later hangs pass at once."""
        self._released.set()

    def wait_hanging(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` calls are blocked at once; ``False`` if ``timeout`` ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: self._hanging >= count, timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no call is blocked; ``False`` if ``timeout`` ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: self._hanging == 0, timeout)

    # -- delegated methods ----------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        """List ``path`` on the inner filesystem."""
        self.enter_call("ls", path)
        return self.fs.ls(path, detail=detail, **kwargs)

    def info(self, path: str, **kwargs: Any) -> Any:
        """Details of ``path`` on the inner filesystem."""
        self.enter_call("info", path)
        return self.fs.info(path, **kwargs)

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether ``path`` exists on the inner filesystem."""
        self.enter_call("exists", path)
        return bool(self.fs.exists(path, **kwargs))

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> Any:
        """Bytes of ``path`` on the inner filesystem."""
        self.enter_call("cat_file", path)
        return self.fs.cat_file(path, start=start, end=end, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write ``value`` to ``path`` on the inner filesystem, maybe torn."""
        self.enter_call("pipe_file", path)
        self.fs.pipe_file(path, self.torn(bytes(value)), mode=mode, **kwargs)

    def rm_file(self, path: str) -> None:
        """Remove ``path`` from the inner filesystem."""
        self.enter_call("rm_file", path)
        self.fs.rm_file(path)

    def invalidate_cache(self, path: str | None = None) -> None:
        """Drop cached listings of the inner filesystem (never faults: no I/O)."""
        self.fs.invalidate_cache(path)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self.enter_call("open", path)
        if "w" in mode or "x" in mode:
            return _FaultyFile(self, path, mode, kwargs)
        return self.fs.open(
            path, mode, block_size=block_size, cache_options=cache_options, **kwargs
        )


class _FaultyFile:
    """A file being written: held in memory, published on ``close`` unless something failed."""

    def __init__(
        self, owner: FaultyFileSystem, path: str, mode: str, kwargs: dict[str, Any]
    ) -> None:
        self._owner = owner
        self._path = path
        self._mode = mode
        self._kwargs = kwargs
        self._parts: list[bytes] = []
        self._failed = False
        self.closed = False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        try:
            self._owner.enter_call("write", self._path)
        except InjectedFault:
            # The connection is gone: this upload can never complete.
            self._failed = True
            raise
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the bytes are sent on ``close``."""

    def discard(self) -> None:
        """Drop the written bytes without publishing them (an aborted upload)."""
        self.closed = True
        self._parts = []

    def close(self) -> None:
        if self.closed:
            return
        if self._failed:
            self.discard()
            return
        self.closed = True
        data = b"".join(self._parts)
        self._parts = []
        self._owner.enter_call("close", self._path)
        with self._owner.fs.open(self._path, self._mode, **self._kwargs) as f:
            f.write(self._owner.torn(data))

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # An exception inside the ``with`` block aborts the upload instead of publishing it.
        if exc_type is None:
            self.close()
        else:
            self.discard()


fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
