"""What a load does with a snapshot's payload: unpack it into a folder, or decode it in memory.

A load (``SnapshotStore``) hands a consumer each candidate's manifest and its payload's chunks,
verified as they stream (size and digest: the digest is checked at their end). A consumer
reads them to their end and raises ``CorruptCheckpointError`` to refuse the snapshot, undoing
what it did; the load then falls back to the previous snapshot.

- :func:`restore_into` unpacks into a staging folder beside the destination and swaps it in
  only once the snapshot verified (``_workspace``: staging, swap, recovery of killed swaps);
- :func:`decoder` hands the chunks to a decoding function as they arrive.

In a signed store nothing is unpacked or decoded before the whole payload verified (its
digest, hence its signature): the chunks are spooled first (to memory or a temp file).
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from ._archive import Limits, TarFacts, extract_tar, gunzip_members
from ._errors import CorruptCheckpointError
from ._files import replace_file, write_file
from ._index import Index
from ._manifest import Manifest
from ._rebuild import Fetch, write_tree
from ._stream import Chunk, Spool
from ._workspace import (
    NEW,
    destination,
    discard,
    holds_at_most_payload,
    recover,
    stage,
    swap,
    sweep_beside,
)

__all__ = ["Consume", "Load", "decoder", "restore_into", "unpack"]

T = TypeVar("T")

#: What a load hands each candidate snapshot to: its manifest and verified-as-read chunks.
Consume = Callable[[Manifest, Iterator[Chunk]], T]
#: A load of the newest valid snapshot through a consumer: its manifest and what the
#: consumer made, or None when there is no snapshot.
Load = Callable[[Consume[T]], tuple[Manifest, T] | None]

#: Signed payloads up to this size are verified in memory; larger ones in a temp file.
_IN_MEMORY = 16 << 20


def unpack(
    m: Manifest,
    chunks: Iterator[Chunk],
    folder: Path,
    limits: Limits,
    fetch: Fetch | None = None,
    have: Path | None = None,
) -> None:
    """Write a verified-as-it-streams payload into ``folder``: a tree, or ``payload``.

    A folder by content (compression ``pieces``) takes its pieces from ``fetch``, or from
    ``have`` (the folder it replaces) where that holds the same bytes.
    """
    if m.compression == "pieces":
        _unpack_tree(m, chunks, folder, limits, fetch, have)
    elif m.kind == "dir":
        data = gunzip_members(chunks) if m.compression == "gzip" else chunks
        expected = None
        if "raw_size" in m.extra:  # recorded since 0.x; older manifests are bounded by Limits
            expected = TarFacts(m.extra["raw_size"], m.extra["members"])
        try:
            extract_tar(data, folder, limits, expected)
        except (tarfile.TarError, zlib.error, EOFError) as exc:
            raise CorruptCheckpointError(f"payload is not a readable archive ({exc})") from exc
    else:
        write_file(folder / "payload", chunks)


def _unpack_tree(
    m: Manifest,
    chunks: Iterator[Chunk],
    folder: Path,
    limits: Limits,
    fetch: Fetch | None,
    have: Path | None,
) -> None:
    index = Index.from_json(b"".join(chunks))  # verified once read to its end
    if (index.logical_size(), len(index.nodes)) != (m.extra["raw_size"], m.extra["members"]):
        raise CorruptCheckpointError("folder index does not hold what its manifest records")
    if fetch is None:
        raise CorruptCheckpointError("a folder snapshot by content, where no pieces are kept")
    write_tree(index, folder, limits, fetch, have)


def restore_into(
    folder: Path,
    limits: Limits,
    *,
    signed: bool,
    load: Load[None],
    fetch: Fetch | None = None,
    have: bool = True,
) -> Manifest | None:
    """Make ``folder`` hold the snapshot ``load`` finds; its manifest, or None if none.

    A folder snapshot is extracted at ``folder``; bytes and files become
    ``folder/payload``. The snapshot is unpacked into a staging folder beside ``folder``
    and verified there; only then does it replace ``folder`` (whatever that held is
    removed). A snapshot that fails leaves ``folder`` as it was. ``signed``: the payload is
    verified before a single byte is unpacked; else the unpacking stops as soon as the
    archive exceeds what its manifest records.

    A ``folder`` that is a symbolic link stays one: the folder it points to is restored.
    A link to nothing or to a non-folder raises ``ConfigurationError`` before anything
    is read. A swap that a killed process left halfway is put back first (see
    ``_workspace``), and the stagings of gone processes beside the folder are removed
    only once this restore has succeeded.

    A folder snapshot by content takes its pieces from ``fetch``; with ``have``, those that
    the folder being replaced already holds are copied from it instead.
    """
    target = destination(folder)
    recover(target)

    def into_target(m: Manifest, chunks: Iterator[Chunk]) -> None:
        if m.kind != "dir" and holds_at_most_payload(target):
            # A workspace's payload is replaced by a temp file renamed over it once every
            # byte verified: the outcome of a swap for a fraction of its calls. Never
            # rewritten in place: a caller may still read (or map) the previous one.
            replace_file(target / "payload", chunks)
            return
        staging = stage(target)
        old = target if have and target.is_dir() else None
        try:
            if signed:
                spool = Spool(chunks)  # read to its end: the digest is checked there
                try:
                    unpack(m, iter(spool()), staging / NEW, limits, fetch, old)
                finally:
                    spool.close()
            else:
                unpack(m, chunks, staging / NEW, limits, fetch, old)
            swap(staging, target)
        finally:
            discard(staging, target)  # the failed or the replaced tree

    found = load(into_target)
    if found is None:
        return None
    sweep_beside(target)
    return found[0]


class _Watched(Iterator[Chunk]):
    """A payload's chunks, remembering the ``CorruptCheckpointError`` they ended with, if any."""

    def __init__(self, chunks: Iterator[Chunk]) -> None:
        self._chunks = chunks
        self.corrupt: CorruptCheckpointError | None = None

    def __next__(self) -> Chunk:
        try:
            return next(self._chunks)
        except CorruptCheckpointError as exc:
            self.corrupt = exc
            raise


def decoder(decode: Consume[T], *, signed: bool) -> Consume[T]:
    """A consumer that returns ``decode(manifest, chunks)``, read to their end.

    Unsigned: ``decode`` reads the payload as it arrives; a failure of ``decode`` on a
    payload that turns out corrupt is the payload's corruption (the load falls back).
    Signed: ``decode`` sees the payload only once all of it verified.
    """

    def signed_consume(m: Manifest, chunks: Iterator[Chunk]) -> T:
        if m.size <= _IN_MEMORY:
            return decode(m, iter((b"".join(chunks),)))  # verified: read to its end
        spool = Spool(chunks)
        try:
            return decode(m, iter(spool()))
        finally:
            spool.close()

    def streamed_consume(m: Manifest, chunks: Iterator[Chunk]) -> T:
        watched = _Watched(chunks)
        try:
            made = decode(m, watched)
        except CorruptCheckpointError:
            raise
        except Exception:
            # A corrupt payload may be why it failed, however decode reported it: the
            # payload's own verdict, met inside decode or at the end, wins.
            if watched.corrupt is not None:
                raise watched.corrupt from None
            for _ in chunks:
                pass
            raise
        for _ in chunks:  # the digest is checked at the end
            pass
        return made

    return signed_consume if signed else streamed_consume
