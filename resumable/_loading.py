"""A load: the newest snapshot that verifies, falling back past corrupt and poison ones.

:func:`load` lists a store, and hands the newest valid snapshot's manifest and verified
payload to a consumer (``_restore``: unpack it into a folder, or decode it). A snapshot that
fails (an unreadable manifest, a signature, a payload that does not verify, a consumer that
refuses it) is skipped with a warning for the one before it; one deleted while it was read
(another writer's retention) sends the load to a fresh listing. The store is read through
:class:`LoadView`, the public methods of ``SnapshotStore`` a load needs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ._backend import Backend, Entry
from ._errors import CorruptCheckpointError
from ._manifest import Manifest
from ._names import manifest_name, manifest_seqs, seq_prefix
from ._restore import Consume
from ._stream import Chunk

__all__ = ["LoadView", "load", "poison_tolerant", "rate"]

T = TypeVar("T")

log = logging.getLogger("resumable")

#: How many fresh listings a load tries when other writers delete what it listed.
_RELIST = 5
#: Loads at least this large log their size and rate.
_LOG_SIZE = 16 << 20


class LoadView(Protocol):
    """What a load reads of its store."""

    backend: Backend

    def manifest(self, seq: int, size: int | None = None) -> Manifest:
        """Snapshot ``seq``'s parsed manifest."""
        ...

    def check_signature(self, m: Manifest) -> None:
        """Refuse a manifest this store's key did not sign."""
        ...

    def payload(self, m: Manifest) -> Iterator[Chunk]:
        """The payload's bytes, verified as they stream."""
        ...

    def failures(self, entries: list[Entry]) -> Counter[int]:
        """How many failure marks each snapshot has among ``entries``."""
        ...

    def snapshot_exists(self, seq: int) -> bool:
        """Whether snapshot ``seq``'s manifest is there."""
        ...

    def refused(self, seq: int) -> None:
        """Snapshot ``seq`` did not verify: nothing may build on it."""
        ...


def rate(size: int, seconds: float) -> str:
    """``size`` bytes moved in ``seconds``, as a log line says it."""
    mib = size / 2**20
    return f"{mib:.1f} MiB in {seconds:.2f} s ({mib / max(seconds, 1e-9):.0f} MiB/s)"


@dataclass
class _Load:
    """One pass of a load over one listing."""

    entries: list[Entry]
    refused: list[str] = field(default_factory=list)
    raced: bool = False

    def deleted(self, seq: int) -> None:
        self.refused.append(f"snapshot {seq}: deleted while loading")
        self.raced = True


def _skip(store: LoadView, seq: int, exc: CorruptCheckpointError) -> str:
    log.warning(
        "skipping snapshot %d of %s: %s; trying the previous one", seq, store.backend.url, exc
    )
    store.refused(seq)
    return f"snapshot {seq}: {exc}"


def load(
    store: LoadView,
    consume: Consume[T],
    accept: Callable[[Manifest], None] | None,
    poison_after: int | None,
    only: int | None = None,
) -> tuple[Manifest, T] | None:
    """Hand the newest valid snapshot's verified payload to ``consume``.

    Returns the manifest and what ``consume`` made, ``None`` when there is no snapshot,
    and raises ``CorruptCheckpointError`` when snapshots exist but none verifies.
    ``consume`` reads the stream to its end (the digest is checked there) and raises
    ``CorruptCheckpointError`` to refuse a snapshot, undoing what it did. ``accept``
    sees each manifest before ``consume`` does and may refuse it by raising. With
    ``poison_after``, a snapshot from which tasks failed that many times without
    committing a newer one is skipped (see ``SnapshotStore.mark_failed``). With ``only``, the
    listing holds that snapshot's objects only.
    """
    started = time.perf_counter()
    # Another writer's retention may delete every snapshot we listed before we read it;
    # newer ones exist then, and a fresh listing finds them.
    for _ in range(_RELIST):
        attempt = _Load(_listing(store, only))
        found = _load_listed(store, attempt, consume, accept, poison_after)
        if found is not None:
            m = found[0]
            if m.size >= _LOG_SIZE:
                log.info(
                    "loaded snapshot %d from %s: %s",
                    m.seq,
                    store.backend.url,
                    rate(m.size, time.perf_counter() - started),
                )
            return found
        if not attempt.raced:
            break
    if attempt.refused:
        raise CorruptCheckpointError(
            f"no valid snapshot in {store.backend.url}: "
            + "; ".join(attempt.refused)
            + ". Inspect it with `resumable show`, or delete it with `resumable rm` to "
            "start over."
        )
    return None


def _listing(store: LoadView, only: int | None) -> list[Entry]:
    entries = store.backend.entries()
    if only is None:
        return entries
    prefix = seq_prefix(only)
    return [e for e in entries if e.name.startswith(prefix)]


def _load_listed(
    store: LoadView,
    attempt: _Load,
    consume: Consume[T],
    accept: Callable[[Manifest], None] | None,
    poison_after: int | None,
) -> tuple[Manifest, T] | None:
    """Try the listed snapshots newest first; the first that verifies is consumed."""
    poisoned = _poison(store, attempt, poison_after)
    sizes = {e.name: e.size for e in attempt.entries}
    for seq in manifest_seqs(e.name for e in attempt.entries):
        if poisoned(seq):
            continue
        try:
            m = store.manifest(seq, sizes.get(manifest_name(seq)))
            store.check_signature(m)
        except FileNotFoundError:
            attempt.deleted(seq)
            return None  # pruned by another writer: newer ones exist, list again
        except CorruptCheckpointError as exc:
            attempt.refused.append(_skip(store, seq, exc))
            continue
        if m.kind == "cleared":
            return None  # the task was cleared: nothing older counts
        if accept is not None:
            accept(m)
        try:
            return m, _consume(store, m, consume)
        except CorruptCheckpointError as exc:
            if not store.snapshot_exists(seq):  # pruned while we read its payload
                attempt.deleted(seq)
                return None
            attempt.refused.append(_skip(store, seq, exc))
    return None


def _consume(store: LoadView, m: Manifest, consume: Consume[T]) -> T:
    payload = store.payload(m)
    with contextlib.closing(payload):  # type: ignore[type-var]
        return consume(m, payload)


def _poison(store: LoadView, attempt: _Load, poison_after: int | None) -> Callable[[int], bool]:
    """Whether a listed snapshot is poison: skipped (and said so) by this load."""
    if poison_after is None:
        return lambda seq: False
    marks = store.failures(attempt.entries)

    def poisoned(seq: int) -> bool:
        if marks[seq] < poison_after:
            return False
        attempt.refused.append(f"snapshot {seq}: poison ({marks[seq]} failures from it)")
        log.warning(
            "the task failed %d times from snapshot %d of %s before saving a newer one; "
            "treating it as poison and falling back to the previous snapshot",
            marks[seq],
            seq,
            store.backend.url,
        )
        return True

    return poisoned


def poison_tolerant(load: Callable[[int | None], T], poison_after: int | None, url: str) -> T:
    """``load(poison_after)``; when that leaves nothing valid, ``load(None)``.

    Skipping a poison snapshot is a fallback to an older one: when no older one verifies
    (the only snapshot, or all of them failed), the newest valid one is used anyway. A
    streak of failures then ends in the task's own exception, never in a locked task.
    """
    if poison_after is None:
        return load(None)
    try:
        return load(poison_after)
    except CorruptCheckpointError:
        pass
    log.warning(
        "%s: no snapshot older than the failing one is valid; resuming from the newest "
        "valid snapshot anyway (`resumable show` lists the recorded failures)",
        url,
    )
    return load(None)
