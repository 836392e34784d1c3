"""Read-only views and housekeeping of a store, for the ``resumable`` command.

A store holds one folder per task key; each task folder holds that task's snapshots (see
``docs/storage-format.md``), and a ``~pieces`` folder with the packs of its folder snapshots
by content (never a task: a key holds no ``~``). Everything here is plain functions over an
:class:`~resumable._backend.AdminBackend` or a :class:`~resumable._store.SnapshotStore` that
return dataclasses; ``_cli`` only parses arguments and prints. Snapshots are verified by the
store itself (``SnapshotStore.verify``), with the signing key a ``Checkpoint`` would use
(``resolve_signing_key``) and the task's packs. ``_gc`` finds and removes garbage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ._backend import AdminBackend, Entry, open_backend
from ._errors import ConfigurationError, CorruptCheckpointError
from ._keys import ROOT_KEY, key_parts
from ._manifest import Manifest, checkpoint_name
from ._names import (
    PIECES,
    condemned_pack,
    is_pack,
    is_temp,
    manifest_name,
    manifest_seqs,
    parse,
)
from ._stack import SIGNING_KEY_ENV, resolve_signing_key
from ._store import SnapshotStore, names_of

__all__ = [
    "PIECES",
    "ROOT_KEY",
    "Removal",
    "SnapshotInfo",
    "Status",
    "TaskFolder",
    "TaskSummary",
    "clear_failures",
    "find_task_folders",
    "is_ours",
    "list_folders",
    "listed_size",
    "open_existing_task",
    "open_store",
    "open_task",
    "reader",
    "remove_task",
    "snapshot_count",
    "snapshot_infos",
    "summarize",
    "task_entries",
    "task_folder",
    "task_packs",
    "task_store",
    "verify_snapshot",
]

Status = Literal["ok", "bad", "unchecked", "gone"]


def is_ours(name: str) -> bool:
    """Whether ``name`` is a snapshot object of a task's folder: a manifest, payload or temp."""
    found = parse(name)
    return (found is not None and found.kind != "mark") or is_temp(name)


def reader(backend: AdminBackend, **options: Any) -> SnapshotStore:
    """A store over task folder ``backend`` that reads (and deletes) as a ``Checkpoint`` does.

    Its packs are in the task's ``~pieces`` folder, so that folder snapshots by content load.
    ``options``: the signing key and name, as for ``SnapshotStore``.
    """
    return SnapshotStore(backend, keep=1, pieces=backend.child(PIECES), **options)


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
    """The objects of task ``key``'s folder and of its ``~pieces`` (named ``~pieces/<name>``).

    None when the folder does not exist (or is a link); a ``~pieces`` that is a link is not
    listed.
    """
    backend = open_existing_task(store, key)
    if backend is None:
        return []
    return _with_pieces(backend.entries(), _own_pieces(backend))


def task_packs(backend: AdminBackend) -> list[Entry]:
    """The packs in task folder ``backend``'s ``~pieces`` (one listing; none if it has none)."""
    return [e for e in backend.child(PIECES).entries() if is_pack(e.name)]


def _own_pieces(backend: AdminBackend) -> AdminBackend | None:
    """Task folder ``backend``'s ``~pieces`` folder, if it has one that is not a link."""
    return backend.child(PIECES) if PIECES in backend.list_children() else None


def _in_pieces(name: str) -> str:
    """How an object of a task's ``~pieces`` is named in reports: relative to the task."""
    return f"{PIECES}/{name}"


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
    #: Whether it has a ``~pieces`` folder (the packs of its folder snapshots by content).
    has_pieces: bool = False

    @property
    def seqs(self) -> list[int]:
        """Sequence numbers of its committed snapshots, newest first."""
        return manifest_seqs(names_of(self.entries))

    def manifest_size(self, seq: int) -> int | None:
        """The listed size of snapshot ``seq``'s manifest (a manifest too large is not read)."""
        return listed_size(self.entries, seq)

    def pieces(self) -> list[Entry]:
        """The objects of its ``~pieces`` folder, listed now (none when it has none)."""
        return self.backend.child(PIECES).entries() if self.has_pieces else []


def task_folder(store: AdminBackend, key: str) -> TaskFolder:
    """Task ``key``'s folder, listed once (it may hold nothing)."""
    backend = open_task(store, key)
    return TaskFolder(key, backend, backend.entries())


def listed_size(entries: list[Entry], seq: int) -> int | None:
    """The size a listing gives for snapshot ``seq``'s manifest, if it lists it."""
    name = manifest_name(seq)
    return next((e.size for e in entries if e.name == name), None)


def _join(prefix: str, name: str) -> str:
    return name if prefix == ROOT_KEY else f"{prefix}/{name}"


def _foreign(entries: list[Entry]) -> list[str]:
    """Names of files that are not a store's: neither snapshot objects nor hidden files."""
    return sorted(e.name for e in entries if not is_ours(e.name) and not e.name.startswith("."))


def _not_a_store(url: str, foreign: list[str]) -> ConfigurationError:
    shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    return ConfigurationError(
        f"{url} is not a store: it holds files that are not snapshots ({shown}), and no "
        "snapshot. Give the store itself (a task's store=, by default ./.resumable), or a "
        "Checkpoint's own folder; walking a folder such as the temp folder or a home folder "
        "would go through everything under it"
    )


def find_task_folders(store: AdminBackend) -> list[TaskFolder]:
    """Folders holding snapshot objects (manifests, payloads, temp files or a ``~pieces``).

    Every folder of the store, at any depth (``proj/exp/run1``, and ``a/b`` under a task
    ``a``), sorted by key. Links are not followed: a local store lists no folder that is a
    symlink. A task's ``~pieces`` folder is part of that task, never a task of its own.

    A store holds task folders, and folders of nested keys that hold only folders. A folder
    that holds other files (hidden ones aside) and no snapshot object is not part of the
    store and is not walked; when that is the store's own folder, ``ConfigurationError``:
    the walk would go through everything under a folder such as the temp folder.
    """
    found: list[TaskFolder] = []

    def visit(key: str, backend: AdminBackend, depth: int) -> None:
        entries = backend.entries()
        ours = any(is_ours(e.name) for e in entries)
        if not ours and (foreign := _foreign(entries)):
            if key == ROOT_KEY:
                raise _not_a_store(backend.url, foreign)
            return
        children = backend.list_children()
        if ours or PIECES in children:
            found.append(TaskFolder(key, backend, entries, has_pieces=PIECES in children))
        if depth < MAX_DEPTH:
            for name in children:
                if name != PIECES:
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
    #: Bytes of every object in the task's folder and its ``~pieces``: what ``rm`` would free.
    size: int


def summarize(folder: TaskFolder) -> TaskSummary:
    """Count, newest commit time and total size of one task folder (its packs included)."""
    seqs = folder.seqs
    store = reader(folder.backend)
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
        size=sum(e.size for e in [*folder.entries, *folder.pieces()]),
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
    #: A folder's bytes (for an archive: its tar stream's) and entries, as its manifest says.
    raw_size: int | None = None
    members: int | None = None
    #: The bytes a folder snapshot by content stored anew (the rest it shares with others).
    added: int | None = None

    @property
    def incremental(self) -> bool:
        """Whether it is a folder snapshot by content: an index of pieces in the task's packs."""
        return self.compression == "pieces"


def _count(value: object) -> int | None:
    """A count a manifest records, or None (the manifest's own checks refuse other values)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        raw_size=_count(m.extra.get("raw_size")),
        members=_count(m.extra.get("members")),
        added=_count(m.extra.get("added")),
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
    return reader(backend, signing_key=resolve_signing_key(), name=None if key == ROOT_KEY else key)


def snapshot_infos(store: SnapshotStore, *, verify: bool = True) -> list[SnapshotInfo]:
    """Every committed snapshot of ``store``, oldest first, verified unless ``verify=False``.

    ``failures`` counts the failure marks a load would count (in a signed store, signed ones).
    """
    entries = store.backend.entries()
    failures = store.failures(entries)
    return [
        dataclasses.replace(
            verify_snapshot(store, seq, verify=verify, size=listed_size(entries, seq)),
            failures=failures[seq],
        )
        for seq in reversed(manifest_seqs(names_of(entries)))
    ]


def clear_failures(store: AdminBackend, key: str) -> int:
    """Remove the failure marks of task ``key`` (signed or not); how many there were."""
    backend = open_task(store, key)
    marks = [n for n in names_of(backend.entries()) if (found := parse(n)) and found.kind == "mark"]
    reader(backend).clear_marks()
    return len(marks)


# -- removal ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Removal:
    """What :func:`remove_task` deleted, and the signed "cleared" record it left, if any."""

    removed: list[Entry]
    cleared: str | None


def remove_task(store: AdminBackend, key: str) -> Removal:
    """Delete every snapshot, orphan payload, temp file and pack of task ``key``; say what went.

    In a signed task a signed "cleared" record is committed above its snapshots first, as
    ``on_success="clear"`` does, so that its old files copied back later are never loaded;
    that needs the task's key (``$RESUMABLE_SIGNING_KEY``), and without it nothing is
    removed. Unsigned snapshots go through ``SnapshotStore.clear`` (oldest first, so that an
    interrupted removal keeps the newest). The packs of its ``~pieces`` go after the
    snapshots, as ``Checkpoint.clear`` removes them, and the emptied folders with them.
    Other files are not ours and stay. A key that passes through a symbolic link (or a
    ``~pieces`` that is one) is refused (not followed): nothing outside the store is ever
    removed.
    """
    backend = open_existing_task(store, key)
    if backend is None:
        raise ConfigurationError(
            f"no task folder {key!r} in {store.url} (a symbolic link is not followed)"
        )
    entries = backend.entries()
    pieces = _own_pieces(backend)
    before = [e for e in _with_pieces(entries, pieces) if _removable(e.name)]
    cleared = _clear(backend, key, entries, pieces)
    _delete_ours(backend, but=cleared)
    if pieces is not None:
        pieces.delete_many([e.name for e in pieces.entries() if _removable(_in_pieces(e.name))])
        pieces.remove_root_if_empty()
    remaining = {e.name for e in _with_pieces(backend.entries(), pieces)}
    if key != ROOT_KEY and not remaining:
        backend.remove_root_if_empty()  # harmless if left, but a tidy store is easier to read
    return Removal([e for e in before if e.name not in remaining], cleared)


def _with_pieces(entries: list[Entry], pieces: AdminBackend | None) -> list[Entry]:
    """``entries`` of a task folder, and the objects of its ``pieces`` as ``~pieces/<name>``."""
    inside = [] if pieces is None else pieces.entries()
    return entries + [dataclasses.replace(e, name=_in_pieces(e.name)) for e in inside]


def _removable(name: str) -> bool:
    """Whether ``rm`` deletes object ``name`` of a task: a snapshot's, a pack or its marker.

    Or a temp file.
    """
    if name.startswith(f"{PIECES}/"):
        inside = name.removeprefix(f"{PIECES}/")
        return is_pack(inside) or is_temp(inside) or condemned_pack(inside) is not None
    return is_ours(name)


def _delete_ours(backend: AdminBackend, *, but: str | None) -> None:
    """Delete, oldest first, every object of ours (failure marks too) except ``but``."""
    for e in sorted(backend.entries(), key=lambda e: e.name):
        if (parse(e.name) is not None or is_temp(e.name)) and e.name != but:
            backend.delete(e.name)  # failure marks too: clear() removes them when unsigned


def _clear(
    backend: AdminBackend, key: str, entries: list[Entry], pieces: AdminBackend | None
) -> str | None:
    """Clear task ``key``'s snapshots; the signed "cleared" record left above them, if any."""
    signer = _cleared_signer(backend, key, entries)
    seqs = manifest_seqs(names_of(entries))
    if signer is None or not seqs:
        # Its packs go after the snapshots; a ``~pieces`` that is a link is never reached.
        SnapshotStore(backend, keep=1, pieces=pieces).clear()
        return None
    # Written before anything is deleted: an interrupted removal still refuses old copies.
    signer.mark_cleared(seqs[0] + 1)
    return manifest_name(seqs[0] + 1)


def _newest_signed(backend: AdminBackend, entries: list[Entry]) -> Manifest | None:
    """The newest readable manifest among ``entries`` if it is signed; else None."""
    store = reader(backend)
    sizes = {e.name: e.size for e in entries}
    for seq in manifest_seqs(names_of(entries)):
        try:
            m = store.manifest(seq, sizes.get(manifest_name(seq)))
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
        signer = reader(backend, signing_key=secret, name=name)
        try:
            signer.check_signature(signed)
        except CorruptCheckpointError:
            continue
        return signer
    raise ConfigurationError(
        f"{SIGNING_KEY_ENV} does not verify the snapshots of task {key!r}: set it to the "
        f"task's signing key ({why})"
    )
