"""Garbage of a store, for ``resumable gc``: what no snapshot needs, found and removed.

In each task folder (found by ``_inspect``): temp files of saves, payloads that no manifest
refers to, and the packs of its ``~pieces`` that no snapshot uses; in the store, unfinished
uploads; on this machine, the workspaces of killed processes. A save in progress has written
some of these before its manifest, so only what is older than a grace period goes, and
anything a snapshot that cannot be read might use is kept: it may be the only copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._backend import AdminBackend
from ._inspect import PIECES, TaskFolder, find_task_folders, reader
from ._names import is_pack, is_temp, parse, temp_maker
from ._owner import gone, machine
from ._workspace import leftovers, remove_abandoned

__all__ = [
    "Garbage",
    "GcReport",
    "Workspaces",
    "collect_garbage",
    "collect_workspaces",
    "find_garbage",
]

GarbageReason = Literal["orphan payload", "orphan pack", "temp file", "unfinished upload"]


@dataclass(frozen=True, slots=True)
class Garbage:
    """An object that is not part of any snapshot.

    ``name`` is relative to the task's folder (``~pieces/<name>`` for what is in its
    ``~pieces``). ``mtime``: when it was last modified or, for an orphan pack, when a
    snapshot may last have used it (see :func:`find_garbage`); None when unknown.
    """

    key: str
    name: str
    size: int
    mtime: float | None
    reason: GarbageReason


@dataclass(frozen=True, slots=True)
class GcReport:
    """What ``collect_garbage`` removed (or would remove) and what it left for later."""

    removed: list[Garbage]
    #: Garbage younger than the grace period, or of unknown age: perhaps a save in progress.
    kept: list[Garbage]


@dataclass(slots=True)
class _Uses:
    """What the snapshots of one task folder use, as far as their manifests can be read."""

    #: Payload names the manifests point to.
    blobs: set[str] = field(default_factory=set)
    #: Seqs whose manifest cannot be read: their payload is kept.
    unreadable: set[int] = field(default_factory=set)
    #: Packs the snapshots' indexes name; None when some snapshot's cannot be known.
    packs: set[str] | None = field(default_factory=set)


def _uses(folder: TaskFolder, *, packs: bool) -> _Uses:
    """Read every manifest of ``folder`` and, if ``packs``, every index of a folder by content.

    Without a signing key: what a snapshot uses is only ever kept, so a planted manifest can
    keep objects but never get one removed.
    """
    store = reader(folder.backend)
    uses = _Uses()
    for seq in folder.seqs:
        try:
            m = store.manifest(seq, folder.manifest_size(seq))
        except FileNotFoundError:
            # Pruned since the listing, its payload with it; but the newer snapshots that
            # exist then are not listed here, and they may use any pack.
            uses.packs = None
            continue
        except Exception:  # any malformed manifest: keep its payload, it may be the only copy
            uses.unreadable.add(seq)
            uses.packs = None
            continue
        if m.blob is not None:
            uses.blobs.add(m.blob)
        if packs and uses.packs is not None and m.compression == "pieces":
            try:
                index = store.read_index(seq)
            except Exception:  # unreadable, corrupt or pruned: any pack may be its
                uses.packs = None
                continue
            if index is not None:
                uses.packs.update(index.packs())
    return uses


def _newest_commit(folder: TaskFolder) -> float | None:
    """When the newest listed manifest was written (0 when none is; None when unknown)."""
    times = [
        e.mtime for e in folder.entries if (found := parse(e.name)) and found.kind == "manifest"
    ]
    if any(t is None for t in times):
        return None
    return max((t for t in times if t is not None), default=0.0)


def find_garbage(folder: TaskFolder) -> Iterator[Garbage]:
    """Temp files, payloads no manifest refers to, and packs no snapshot uses, of one task.

    A payload whose seq has a manifest that cannot be read is kept: it may be the only copy
    of that snapshot's data. Packs are orphans only when every manifest of the task, and
    the index of every folder snapshot by content, was read: else each one is kept.

    An orphan pack's age counts from the task's newest commit when that is later than the
    pack: retention drops a snapshot right after a commit, and the task's next folder save
    may still reuse that snapshot's packs for a while (``_pieces.PACK_GRACE``).
    """
    pieces = folder.pieces()
    packs = sorted((e for e in pieces if is_pack(e.name)), key=lambda e: e.name)
    uses = _uses(folder, packs=bool(packs))
    yield from _task_garbage(folder, uses)
    for e in sorted(pieces, key=lambda e: e.name):
        if is_temp(e.name):
            yield Garbage(folder.key, f"{PIECES}/{e.name}", e.size, e.mtime, "temp file")
    if uses.packs is None:
        return
    commit = _newest_commit(folder)
    for e in packs:
        if e.name not in uses.packs:
            used = None if e.mtime is None or commit is None else max(e.mtime, commit)
            yield Garbage(folder.key, f"{PIECES}/{e.name}", e.size, used, "orphan pack")


def _task_garbage(folder: TaskFolder, uses: _Uses) -> Iterator[Garbage]:
    """Temp files and orphan payloads directly in the task's folder."""
    for e in sorted(folder.entries, key=lambda e: e.name):
        if is_temp(e.name):
            yield Garbage(folder.key, e.name, e.size, e.mtime, "temp file")
            continue
        found = parse(e.name)
        if found is None or found.kind != "blob" or found.seq in uses.unreadable:
            continue
        if e.name not in uses.blobs:
            yield Garbage(folder.key, e.name, e.size, e.mtime, "orphan payload")


def _delete(folder: TaskFolder, name: str) -> None:
    """Delete object ``name`` of ``folder`` (``~pieces/<name>``: one of its ``~pieces``)."""
    if name.startswith(f"{PIECES}/"):
        folder.backend.child(PIECES).delete(name.removeprefix(f"{PIECES}/"))
    else:
        folder.backend.delete(name)


def collect_garbage(store: AdminBackend, *, grace: float, now: float, dry_run: bool) -> GcReport:
    """Remove, in every task folder, garbage last modified more than ``grace`` seconds ago.

    The grace period protects saves in progress: their payload, packs and temp files exist
    before their manifest does. Objects of unknown age are kept unless ``grace`` is 0.
    """
    removed: list[Garbage] = []
    kept: list[Garbage] = []

    def old(g: Garbage) -> bool:
        return grace <= 0 or (g.mtime is not None and now - g.mtime > grace)

    def removable(g: Garbage) -> bool:
        # A temp file names its writer: on this machine whether it still runs is known, so
        # a live save's file is never removed and a dead one's need not age first.
        bare = g.name.rpartition("/")[2]
        maker = temp_maker(bare) if g.reason == "temp file" else None
        if maker is not None and maker.machine == machine():
            return gone(maker)
        return old(g)

    for folder in find_task_folders(store):
        for g in find_garbage(folder):
            if not removable(g):
                kept.append(g)
                continue
            if not dry_run:
                _delete(folder, g.name)
            removed.append(g)
    for upload in store.unfinished_uploads():
        key, _, name = upload.name.rpartition("/")
        task, _, last = key.rpartition("/")
        if last == PIECES:  # a pack's upload: named as the packs of a task are
            key, name = task, f"{PIECES}/{name}"
        g = Garbage(key or ".", name, 0, upload.initiated, "unfinished upload")
        if not old(g):
            kept.append(g)
            continue
        if not dry_run:
            store.abort_upload(upload)
        removed.append(g)
    return GcReport(removed, kept)


@dataclass(frozen=True, slots=True)
class Workspaces:
    """Workspace folders of this machine's processes that were killed (they could not clean up)."""

    #: Removed (or, in a dry run, to remove): their owner is provably gone.
    removed: list[Path]
    #: Kept: marked by an owner nothing here can judge (another host, boot or container).
    unprovable: list[Path]


def collect_workspaces(*, dry_run: bool) -> Workspaces:
    """Remove (unless ``dry_run``) the workspaces that killed processes of this machine left."""
    found = leftovers()
    return Workspaces(found.abandoned if dry_run else remove_abandoned(), found.unprovable)
