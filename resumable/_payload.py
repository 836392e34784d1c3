"""A payload on its way to and from a backend: written inline or as its own object, read verified.

A snapshot's payload up to ``INLINE_MAX`` bytes lives inside its manifest (one object, one
fsync); a larger one is its own object, the blob, streamed as it is produced
(:class:`PayloadWriter`). Reading it back (:func:`read_payload`) checks its size and digest
against the manifest on the way: a payload that is missing, larger, truncated or different
raises ``CorruptCheckpointError`` (its digest is checked at its end).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._backend import Backend, BlobWriter, iter_read
from ._errors import CorruptCheckpointError
from ._manifest import Manifest
from ._progress import Progress, loading
from ._stream import Chunk, Digest

__all__ = ["INLINE_MAX", "PayloadWriter", "Producer", "read_payload"]

#: Payloads up to this size live inside the manifest: one object, one fsync.
INLINE_MAX = 64 * 1024

#: Hands a payload's chunks, in order, to the ``write`` function it is given.
Producer = Callable[[Callable[[Chunk], None]], None]


class PayloadWriter:
    """A payload being written: held for the manifest while it is small, else uploaded.

    The first ``INLINE_MAX`` bytes are held; the chunk that would pass that opens the
    payload's own object (the blob) and writes what was held, and every chunk after.
    """

    def __init__(self, backend: Backend, blob: str, progress: Any) -> None:
        self._backend = backend
        self.blob = blob
        self.digest = Digest()
        self._held: list[Chunk] | None = []
        self._held_size = 0
        self._out: BlobWriter | None = None
        self._progress = progress

    def put(self, chunk: Chunk) -> None:
        """Append ``chunk`` to the payload."""
        if not chunk:
            return
        self.digest.update(chunk)
        self._progress.relative_update(len(chunk))
        if self._held is not None and self._held_size + len(chunk) <= INLINE_MAX:
            self._held.append(chunk)
            self._held_size += len(chunk)
            return
        if self._out is None:
            self._out = self._backend.writer(self.blob)
            for held in self._held or ():
                self._out.write(held)
            self._held = None
        self._out.write(chunk)

    def write_all(self, chunks: Iterable[Chunk] | Producer) -> None:
        """Write every chunk of ``chunks`` (or of a producer), then make the blob durable."""
        if callable(chunks):
            chunks(self.put)
        else:
            for chunk in chunks:
                self.put(chunk)
        if self._out is not None:
            self._out.commit()

    def abort(self) -> None:
        """Throw away the blob written so far, if any."""
        if self._out is not None:
            self._out.abort()

    @property
    def inline(self) -> bytes | None:
        """The whole payload, when it is small enough for the manifest; else None."""
        return None if self._held is None else b"".join(self._held)


def _missing_as_corrupt(chunks: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Object stores report a payload deleted mid-read on a later ranged read."""
    try:
        yield from chunks
    except FileNotFoundError:
        raise CorruptCheckpointError(f"payload {name} disappeared while it was read") from None


def read_payload(backend: Backend, m: Manifest, progress: Progress | None) -> Iterator[Chunk]:
    """The payload's bytes, checked against the manifest's size and digest on the way."""
    digest = Digest(m.algorithm)
    with contextlib.ExitStack() as stack:
        callback = loading(progress, m.seq, backend.url, m.size)
        stack.enter_context(callback)  # closed when the transfer ends, however it ends
        if m.inline is not None:
            source: Iterable[Chunk] = (m.inline,)
        else:
            assert m.blob is not None
            try:
                stream = stack.enter_context(backend.open_read(m.blob))
            except FileNotFoundError:
                raise CorruptCheckpointError(f"payload {m.blob} is missing") from None
            source = _missing_as_corrupt(iter_read(stream), m.blob)
        for chunk in source:
            digest.update(chunk)
            callback.relative_update(len(chunk))
            if digest.size > m.size:
                raise CorruptCheckpointError(
                    f"payload is larger than the {m.size} bytes its manifest records"
                )
            yield chunk
    if digest.size != m.size:
        raise CorruptCheckpointError(f"payload is truncated: {digest.size} of {m.size} bytes")
    if digest.hexdigest() != m.digest:
        raise CorruptCheckpointError(f"payload does not match its {m.algorithm}")
