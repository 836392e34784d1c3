"""Read-only views and housekeeping of a store, for the ``resumable`` command.

A store holds one folder per task key; each task folder holds that task's snapshots (see
``docs/storage-format.md``). Everything here is plain functions over an
:class:`~resumable._backend.AdminBackend` or a :class:`~resumable._store.SnapshotStore` that
return dataclasses; ``_cli`` only parses arguments and prints. Snapshots are verified by the
store itself (``SnapshotStore.verify``), with the signing key a ``Checkpoint`` would use
(``resolve_signing_key``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._backend import AdminBackend, Entry, open_backend
from ._errors import ConfigurationError, CorruptCheckpointError
from ._keys import ROOT_KEY, key_parts
from ._manifest import Manifest, checkpoint_name
from ._names import is_temp, manifest_name, manifest_seqs, parse, temp_maker
from ._owner import gone, machine
from ._stack import SIGNING_KEY_ENV, resolve_signing_key
from ._store import SnapshotStore, names_of
from ._workspace import leftovers, remove_abandoned

__all__ = [
    "ROOT_KEY",
    "Garbage",
    "GcReport",
    "Removal",
    "SnapshotInfo",
    "Status",
    "TaskFolder",
    "TaskSummary",
    "Workspaces",
    "clear_failures",
    "collect_garbage",
    "collect_workspaces",
    "find_garbage",
    "find_task_folders",
    "list_folders",
    "open_existing_task",
    "open_store",
    "open_task",
    "remove_task",
    "snapshot_count",
    "snapshot_infos",
    "summarize",
    "task_entries",
    "task_folder",
    "task_store",
    "verify_snapshot",
]

Status = Literal["ok", "bad", "unchecked", "gone"]
GarbageReason = Literal["orphan payload", "temp file", "unfinished upload"]


def _is_ours(name: str) -> bool:
    found = parse(name)
    return (found is not None and found.kind != "mark") or is_temp(name)


# -- opening ------------------------------------------------------------------------------


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> AdminBackend:
    """The backend of the store at ``url``; ``ConfigurationError`` if it is not a folder.

    A store that does not exist is an error rather than an empty listing: a mistyped path
    would otherwise look like a store with no tasks.
    """
    backend = open_backend(url, storage_options)
    if not backend.exists():
        raise ConfigurationError(f"no store at {url!r}: no such folder")
    return backend


#: How deep ``find_task_folders`` looks for task folders (a key's segments).
MAX_DEPTH = 32


def open_task(store: AdminBackend, key: str) -> AdminBackend:
    """The backend of task ``key`` of ``store`` (``ROOT_KEY`` is the store's own folder)."""
    backend = store
    for part in key_parts(key):
        backend = backend.child(part)
    return backend


def open_existing_task(store: AdminBackend, key: str) -> AdminBackend | None:
    """Like :func:`open_task`, for a key whose every folder exists and is no link; else None.

    A folder that is a symbolic link (perhaps to somewhere outside the store) is not
    followed: what removes or rewrites objects must stay inside the store.
    """
    backend = store
    for part in key_parts(key):
        if part not in backend.list_children():
            return None
        backend = backend.child(part)
    return backend


def list_folders(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Names of the folders directly under ``url``; none when it does not exist."""
    return open_backend(url, storage_options).list_children()


def task_entries(store: AdminBackend, key: str) -> list[Entry]:
    """The objects of task ``key``'s folder; none when it does not exist (or is a link)."""
    backend = open_existing_task(store, key)
    return [] if backend is None else backend.entries()


def snapshot_count(entries: list[Entry]) -> int:
    """How many committed snapshots a folder's objects hold."""
    return len(manifest_seqs(names_of(entries)))


# -- listing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskFolder:
    """A folder of the store holding snapshot objects, listed once."""

    key: str
    backend: AdminBackend
    entries: list[Entry]

    @property
    def seqs(self) -> list[int]:
        """Sequence numbers of its committed snapshots, newest first."""
        return manifest_seqs(names_of(self.entries))

    def manifest_size(self, seq: int) -> int | None:
        """The listed size of snapshot ``seq``'s manifest (a manifest too large is not read)."""
        return _listed_size(self.entries, seq)


def task_folder(store: AdminBackend, key: str) -> TaskFolder:
    """Task ``key``'s folder, listed once (it may hold nothing)."""
    backend = open_task(store, key)
    return TaskFolder(key, backend, backend.entries())


def _listed_size(entries: list[Entry], seq: int) -> int | None:
    name = manifest_name(seq)
    return next((e.size for e in entries if e.name == name), None)


def _join(prefix: str, name: str) -> str:
    return name if prefix == ROOT_KEY else f"{prefix}/{name}"


def _foreign(entries: list[Entry]) -> list[str]:
    """Names of files that are not a store's: neither snapshot objects nor hidden files."""
    return sorted(e.name for e in entries if not _is_ours(e.name) and not e.name.startswith("."))


def _not_a_store(url: str, foreign: list[str]) -> ConfigurationError:
    shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    return ConfigurationError(
        f"{url} is not a store: it holds files that are not snapshots ({shown}), and no "
        "snapshot. Give the store itself (a task's store=, by default ./.resumable), or a "
        "Checkpoint's own folder; walking a folder such as the temp folder or a home folder "
        "would go through everything under it"
    )


def find_task_folders(store: AdminBackend) -> list[TaskFolder]:
    """Folders holding snapshot objects (manifests, payloads or temp files), sorted by key.

    Every folder of the store, at any depth (``proj/exp/run1``, and ``a/b`` under a task
    ``a``). Links are not followed: a local store lists no folder that is a symlink.

    A store holds task folders, and folders of nested keys that hold only folders. A folder
    that holds other files (hidden ones aside) and no snapshot object is not part of the
    store and is not walked; when that is the store's own folder, ``ConfigurationError``:
    the walk would go through everything under a folder such as the temp folder.
    """
    found: list[TaskFolder] = []

    def visit(key: str, backend: AdminBackend, depth: int) -> None:
        entries = backend.entries()
        if any(_is_ours(e.name) for e in entries):
            found.append(TaskFolder(key, backend, entries))
        elif foreign := _foreign(entries):
            if key == ROOT_KEY:
                raise _not_a_store(backend.url, foreign)
            return
        if depth < MAX_DEPTH:
            for name in backend.list_children():
                visit(_join(key, name), backend.child(name), depth + 1)

    visit(ROOT_KEY, store, 0)
    return sorted(found, key=lambda f: f.key)


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One task of a store, as ``resumable ls`` shows it."""

    key: str
    snapshots: int
    newest_seq: int | None
    #: Commit time (Unix seconds) of the newest snapshot whose manifest parses.
    newest_created: float | None
    #: Bytes of every object in the task's folder: what ``resumable rm`` would free.
    size: int


def summarize(folder: TaskFolder) -> TaskSummary:
    """Count, newest commit time and total size of one task folder."""
    seqs = folder.seqs
    store = SnapshotStore(folder.backend, keep=1)
    created = None
    for seq in seqs:
        try:
            created = store.manifest(seq, folder.manifest_size(seq)).created
            break
        except Exception:  # pruned meanwhile, or broken: `show` says which
            continue
    return TaskSummary(
        key=folder.key,
        snapshots=len(seqs),
        newest_seq=seqs[0] if seqs else None,
        newest_created=created,
        size=sum(e.size for e in folder.entries),
    )


# -- verification -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One snapshot of a task and whether it verifies; fields are ``None`` when unknown."""

    seq: int
    status: Status
    problem: str | None = None
    kind: str | None = None
    size: int | None = None
    compression: str | None = None
    created: float | None = None
    attempt: int | None = None
    #: The payload's object name; ``None`` when the payload is inlined in the manifest.
    blob: str | None = None
    #: Failures of the task from this snapshot recorded in the store (``poison_after``).
    failures: int = 0


def _info(seq: int, m: Manifest, status: Status, problem: str | None = None) -> SnapshotInfo:
    return SnapshotInfo(
        seq=seq,
        status=status,
        problem=problem,
        kind=m.kind,
        size=m.size,
        compression=m.compression,
        created=m.created,
        attempt=m.attempt,
        blob=m.blob if m.inline is None else None,
    )


def _gone(store: SnapshotStore, seq: int) -> bool:
    """Whether snapshot ``seq`` was removed (by retention of a running task) since listed."""
    return manifest_name(seq) not in {e.name for e in store.backend.entries()}


def _load_problem(exc: CorruptCheckpointError, seq: int) -> str:
    """The reason a load gave for refusing snapshot ``seq``, without the advice around it."""
    text = str(exc)
    head = f"snapshot {seq}: "
    if head in text:
        text = text.split(head, 1)[1]
    return text.split(". Inspect it with `resumable show`", 1)[0]


def verify_snapshot(
    store: SnapshotStore, seq: int, *, verify: bool = True, size: int | None = None
) -> SnapshotInfo:
    """Parse snapshot ``seq``'s manifest and, if ``verify``, load it as a task would.

    The load runs every check a real load runs (signature when ``store`` has a signing key,
    size and digest, archive safety and format), into a temp folder that is then removed;
    a snapshot is bad exactly when a load would refuse it. ``size``: the manifest's listed
    size, if known (a manifest too large is then not read at all).
    """
    try:
        m = store.manifest(seq, size)
    except FileNotFoundError:
        return SnapshotInfo(seq, "gone", "deleted while checking")
    except OSError as exc:
        return SnapshotInfo(seq, "bad", f"cannot read the manifest ({exc})")
    except Exception as exc:  # any malformed manifest is a bad snapshot, as for a load
        return SnapshotInfo(seq, "bad", str(exc) or type(exc).__name__)
    if not verify:
        return _info(seq, m, "unchecked")
    try:
        store.verify(seq)
    except CorruptCheckpointError as exc:
        if _gone(store, seq):
            return _info(seq, m, "gone", "deleted while checking")
        return _info(seq, m, "bad", _load_problem(exc, seq))
    except OSError as exc:
        # Not proof of corruption, but not verified either: a check must not pass silently.
        return _info(seq, m, "bad", f"cannot read the payload ({exc})")
    return _info(seq, m, "ok")


def task_store(backend: AdminBackend, key: str = ROOT_KEY) -> SnapshotStore:
    """A read-side store over task ``key``'s folder, checked as a load of that task would be.

    The signing key comes from ``$RESUMABLE_SIGNING_KEY``, as for a ``Checkpoint``, and the
    signed name is the task key, as ``@resumable`` signs it (for the store's own folder: the
    ``Checkpoint`` default). A signed store's unsigned, wrongly signed or copied snapshots are
    then reported as bad, as a load refuses them.
    """
    return SnapshotStore(
        backend, keep=1, signing_key=resolve_signing_key(), name=None if key == ROOT_KEY else key
    )


def snapshot_infos(store: SnapshotStore, *, verify: bool = True) -> list[SnapshotInfo]:
    """Every committed snapshot of ``store``, oldest first, verified unless ``verify=False``.

    ``failures`` counts the failure marks a load would count (in a signed store, signed ones).
    """
    entries = store.backend.entries()
    failures = store.failures(entries)
    return [
        dataclasses.replace(
            verify_snapshot(store, seq, verify=verify, size=_listed_size(entries, seq)),
            failures=failures[seq],
        )
        for seq in reversed(manifest_seqs(names_of(entries)))
    ]


def clear_failures(store: AdminBackend, key: str) -> int:
    """Remove the failure marks of task ``key`` (signed or not); how many there were."""
    backend = open_task(store, key)
    marks = [n for n in names_of(backend.entries()) if (found := parse(n)) and found.kind == "mark"]
    SnapshotStore(backend, keep=1).clear_marks()
    return len(marks)


# -- removal ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Removal:
    """What :func:`remove_task` deleted, and the signed "cleared" record it left, if any."""

    removed: list[Entry]
    cleared: str | None


def remove_task(store: AdminBackend, key: str) -> Removal:
    """Delete every snapshot, orphan payload and temp file of task ``key``; say what went.

    In a signed task a signed "cleared" record is committed above its snapshots first, as
    ``on_success="clear"`` does, so that its old files copied back later are never loaded;
    that needs the task's key (``$RESUMABLE_SIGNING_KEY``), and without it nothing is
    removed. Unsigned snapshots go through ``SnapshotStore.clear`` (oldest first, so that an
    interrupted removal keeps the newest). Other files in the folder are not ours and stay.
    A key that passes through a symbolic link is refused: nothing outside the store is ever
    removed.
    """
    backend = open_existing_task(store, key)
    if backend is None:
        raise ConfigurationError(
            f"no task folder {key!r} in {store.url} (a symbolic link is not followed)"
        )
    entries = backend.entries()
    before = [e for e in entries if _is_ours(e.name)]
    cleared = _clear(backend, key, entries)
    _delete_ours(backend, but=cleared)
    remaining = {e.name for e in backend.entries()}
    if key != ROOT_KEY and not remaining:
        backend.remove_root_if_empty()  # harmless if left, but a tidy store is easier to read
    return Removal([e for e in before if e.name not in remaining], cleared)


def _delete_ours(backend: AdminBackend, *, but: str | None) -> None:
    """Delete, oldest first, every object of ours (failure marks too) except ``but``."""
    for e in sorted(backend.entries(), key=lambda e: e.name):
        if (parse(e.name) is not None or is_temp(e.name)) and e.name != but:
            backend.delete(e.name)  # failure marks too: clear() removes them when unsigned


def _clear(backend: AdminBackend, key: str, entries: list[Entry]) -> str | None:
    """Clear task ``key``'s snapshots; the signed "cleared" record left above them, if any."""
    signer = _cleared_signer(backend, key, entries)
    seqs = manifest_seqs(names_of(entries))
    if signer is None or not seqs:
        SnapshotStore(backend, keep=1).clear()
        return None
    # Written before anything is deleted: an interrupted removal still refuses old copies.
    signer.mark_cleared(seqs[0] + 1)
    return manifest_name(seqs[0] + 1)


def _newest_signed(backend: AdminBackend, entries: list[Entry]) -> Manifest | None:
    """The newest readable manifest among ``entries`` if it is signed; else None."""
    reader = SnapshotStore(backend, keep=1)
    sizes = {e.name: e.size for e in entries}
    for seq in manifest_seqs(names_of(entries)):
        try:
            m = reader.manifest(seq, sizes.get(manifest_name(seq)))
        except (OSError, CorruptCheckpointError):
            continue
        if "hmac" in m.extra:
            return m
    return None


def _cleared_signer(backend: AdminBackend, key: str, entries: list[Entry]) -> SnapshotStore | None:
    """A store that signs as task ``key``'s snapshots are signed; None if they are unsigned.

    Its name is the one its newest signed manifest verifies under: the task key
    (``@resumable``) or the folder's name (a bare ``Checkpoint``). ``ConfigurationError``
    when ``$RESUMABLE_SIGNING_KEY`` is unset or verifies neither.
    """
    signed = _newest_signed(backend, entries)
    if signed is None:
        return None
    secret = resolve_signing_key()
    why = (
        "rm leaves a signed 'cleared' record above a signed task's snapshots, so that copies "
        "of its old files never load again; nothing was removed"
    )
    if secret is None:
        raise ConfigurationError(
            f"task {key!r} is signed: set {SIGNING_KEY_ENV} to its signing key ({why})"
        )
    names = dict.fromkeys([*([] if key == ROOT_KEY else [key]), checkpoint_name(backend.url)])
    for name in names:
        signer = SnapshotStore(backend, keep=1, signing_key=secret, name=name)
        try:
            signer.check_signature(signed)
        except CorruptCheckpointError:
            continue
        return signer
    raise ConfigurationError(
        f"{SIGNING_KEY_ENV} does not verify the snapshots of task {key!r}: set it to the "
        f"task's signing key ({why})"
    )


# -- garbage collection -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Garbage:
    """An object that is not part of any snapshot."""

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


def _referenced(folder: TaskFolder) -> tuple[set[str], set[int]]:
    """Payload names the manifests point to, and seqs whose manifest cannot be read."""
    store = SnapshotStore(folder.backend, keep=1)
    names: set[str] = set()
    unreadable: set[int] = set()
    for seq in folder.seqs:
        try:
            m = store.manifest(seq, folder.manifest_size(seq))
        except FileNotFoundError:
            continue  # pruned since the listing, its payload with it
        except Exception:  # any malformed manifest: keep its payload, it may be the only copy
            unreadable.add(seq)
            continue
        if m.blob is not None:
            names.add(m.blob)
    return names, unreadable


def find_garbage(folder: TaskFolder) -> Iterator[Garbage]:
    """Temp files, and payloads that no manifest of the folder refers to.

    A payload whose seq has a manifest that cannot be read is kept: it may be the only copy
    of that snapshot's data.
    """
    referenced, unreadable = _referenced(folder)
    for e in sorted(folder.entries, key=lambda e: e.name):
        if is_temp(e.name):
            yield Garbage(folder.key, e.name, e.size, e.mtime, "temp file")
        elif (
            (found := parse(e.name)) is not None
            and found.kind == "blob"
            and e.name not in referenced
            and found.seq not in unreadable
        ):
            yield Garbage(folder.key, e.name, e.size, e.mtime, "orphan payload")


def collect_garbage(store: AdminBackend, *, grace: float, now: float, dry_run: bool) -> GcReport:
    """Remove, in every task folder, garbage last modified more than ``grace`` seconds ago.

    The grace period protects saves in progress: their payload and temp files exist before
    their manifest does. Objects of unknown age are kept unless ``grace`` is 0.
    """
    removed: list[Garbage] = []
    kept: list[Garbage] = []

    def old(g: Garbage) -> bool:
        return grace <= 0 or (g.mtime is not None and now - g.mtime > grace)

    def removable(g: Garbage) -> bool:
        # A temp file names its writer: on this machine whether it still runs is known, so
        # a live save's file is never removed and a dead one's need not age first.
        maker = temp_maker(g.name) if g.reason == "temp file" else None
        if maker is not None and maker.machine == machine():
            return gone(maker)
        return old(g)

    for folder in find_task_folders(store):
        for g in find_garbage(folder):
            if not removable(g):
                kept.append(g)
                continue
            if not dry_run:
                folder.backend.delete(g.name)
            removed.append(g)
    for upload in store.unfinished_uploads():
        key, _, name = upload.name.rpartition("/")
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
