"""Copies of a state's buffers, taken while it is pickled, so a later write sees them unchanged.

A background save must let the task run on while its snapshot is written, so the state's
arrays and tensors are copied first (``_statecodec.capture_state``). This module holds the
copying, apart from the format:

- :class:`BufferPool`: the last written capture's buffers, reused by the next one (memory
  already touched copies several times faster than fresh memory);
- :class:`CapturedState`: one captured payload, its chunks and the buffers it took;
- :class:`Copies`: the copies of one capture, run on the CPU pool and waited for together.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterable
from concurrent.futures import Future, wait

from ._stream import Chunk
from ._threads import submit

__all__ = ["BufferPool", "CapturedState", "Copies"]

#: Buffers are copied in pieces of at most this size, on the CPU pool.
_COPY_PIECE = 8 << 20
#: Below this a buffer is copied on the caller's thread: a hand-off would cost more.
_COPY_INLINE = 1 << 20


class BufferPool:
    """The buffers of the last capture that was written, for the next capture to reuse.

    Copying into memory already touched costs a ``memcpy``; into fresh memory, the kernel
    also maps and zeroes every page first, which takes several times longer. A training loop
    yields state of the same shapes again and again, so the buffers fit. Only one capture's
    buffers are kept.

    Example:
        >>> pool = BufferPool()
        >>> first = pool.take(4)
        >>> pool.give([first])
        >>> pool.take(4) is first, len(pool.take(4))
        (True, 4)

    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[int, list[bytearray]] = {}

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes: a kept one if one fits, else a new one."""
        with self._lock:
            fits = self._free.get(size)
            if fits:
                return fits.pop()
        return bytearray(size)

    def give(self, buffers: Iterable[bytearray]) -> None:
        """Keep ``buffers`` (no longer read by anyone) for later captures, instead of others."""
        free: dict[int, list[bytearray]] = {}
        for buf in buffers:
            free.setdefault(len(buf), []).append(buf)
        with self._lock:
            self._free = free


class CapturedState:
    """A captured state payload: its chunks (copies), replayable, and the buffers it took."""

    def __init__(self, pool: BufferPool | None) -> None:
        self.chunks: list[Chunk] = []
        self._pool = pool
        self._taken: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes for this payload (from the pool when one fits)."""
        buf = bytearray(size) if self._pool is None else self._pool.take(size)
        self._taken.append(buf)
        return buf

    def __call__(self) -> list[Chunk]:
        return self.chunks

    def close(self) -> None:
        """The payload is written (or dropped): its buffers go back to the pool."""
        taken, self._taken, self.chunks = self._taken, [], []
        if self._pool is not None and taken:
            self._pool.give(taken)


class Copies:
    """The buffer copies of one capture, run on the CPU pool and waited for together.

    ``ctypes.memmove`` releases the GIL, so the buffers of a state (and the pieces of a large
    one) are copied at once while the pickler goes on: closer to the memory's bandwidth than
    one ``memcpy`` after another, and that copy is what a background yield waits for. Each
    piece holds the ctypes views of both buffers, so neither can be freed or resized while it
    runs; :meth:`wait` returns or raises only once no piece runs. A copy is made while the
    state is pickled, not at the instant its buffer is met: an object whose ``__reduce__``
    changes another array of the same state in place could reach the snapshot.

    Example:
        >>> dst = bytearray(3)
        >>> copies = Copies()
        >>> copies.copy(dst, memoryview(b"abc"))
        >>> copies.wait()
        >>> bytes(dst)
        b'abc'

    """

    def __init__(self) -> None:
        self._pending: list[Future[None]] = []

    def copy(self, dst: bytearray, src: memoryview) -> None:
        """Start copying ``src`` into ``dst`` (small, read-only or strided ones: done now)."""
        size = len(dst)
        if size < _COPY_INLINE or src.readonly or not src.c_contiguous:
            memoryview(dst)[:] = src
            return
        to_view = (ctypes.c_char * size).from_buffer(dst)
        from_view = (ctypes.c_char * size).from_buffer(src.cast("B"))

        def piece(offset: int, n: int) -> None:
            to, start = ctypes.addressof(to_view), ctypes.addressof(from_view)
            ctypes.memmove(to + offset, start + offset, n)

        for offset in range(0, size, _COPY_PIECE):
            self._pending.append(submit(piece, offset, min(_COPY_PIECE, size - offset)))

    def wait(self) -> None:
        """Wait for every copy; raise the first failure, or an interruption, after all ended."""
        pending, self._pending = self._pending, []
        try:
            for done in pending:
                done.result()
        except BaseException:
            # Pieces not started never run; a running one writes into a buffer the caller
            # may free once this raises: wait for those (a second Ctrl-C included).
            started = [done for done in pending if not done.cancel()]
            while not all(done.done() for done in started):
                with contextlib.suppress(BaseException):
                    wait(started)
            raise
