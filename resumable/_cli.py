"""The ``resumable`` command: list, show, verify, remove and clean up the tasks of a store.

Argument parsing and printing only; what is listed, checked and removed lives in
``_inspect``, and garbage in ``_gc``. Every subcommand prints an aligned table, or one JSON
document with ``--json``.

Exit codes: 0 ok, 1 a snapshot failed verification, 2 usage or store error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import _version
from ._errors import ConfigurationError, CorruptCheckpointError, ResumableError
from ._gc import Garbage, collect_garbage, collect_workspaces
from ._inspect import (
    PIECES,
    ROOT_KEY,
    SnapshotInfo,
    TaskFolder,
    clear_failures,
    find_task_folders,
    open_store,
    open_task,
    remove_task,
    snapshot_count,
    snapshot_infos,
    summarize,
    task_entries,
    task_folder,
    task_packs,
    task_store,
)
from ._options import STORE_ENV, resolve_store

__all__ = ["main"]

EXIT_OK = 0
EXIT_BAD = 1
EXIT_ERROR = 2

_EPILOG = f"""\
A store is a local folder or any fsspec URL holding one folder per task key. The key
{ROOT_KEY!r} names the store's own folder (where a bare Checkpoint(url) keeps its snapshots).
Without STORE, the store is the one @resumable uses by default: ${STORE_ENV}, else
./.resumable. A folder that holds other files and no snapshot is not walked as a store.

exit codes:
  0  ok
  1  a snapshot failed verification (show, verify)
  2  usage error, or the store cannot be opened or read
"""


class _UsageError(Exception):
    """A request that cannot be carried out as asked; exit code 2."""


# -- formatting ---------------------------------------------------------------------------


def _finite(t: float | None) -> float | None:
    # A hand-edited manifest may hold NaN or infinity, which JSON cannot carry.
    return t if t is not None and math.isfinite(t) else None


def _utc(t: float | None) -> str | None:
    t = _finite(t)
    if t is None:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    units = ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; the columns in ``right`` are numbers."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _print_json(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, indent=2, allow_nan=False))


def _snapshot_doc(info: SnapshotInfo) -> dict[str, Any]:
    return {
        "seq": info.seq,
        "status": info.status,
        "verified": {"ok": True, "bad": False}.get(info.status),
        "problem": info.problem,
        "kind": info.kind,
        "size": info.size,
        "compression": info.compression,
        "created": _finite(info.created),
        "created_utc": _utc(info.created),
        "attempt": info.attempt,
        "blob": info.blob,
        "failures": info.failures,
        "raw_size": info.raw_size,
        "members": info.members,
        "added": info.added,
    }


def _status_text(info: SnapshotInfo) -> str:
    if info.status == "bad":
        return f"BAD: {info.problem}"
    if info.status == "gone":
        return "gone (deleted while checking)"
    return {"ok": "ok", "unchecked": "not checked"}[info.status]


# -- subcommands --------------------------------------------------------------------------


def _ls(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    tasks = [summarize(f) for f in find_task_folders(store) if f.seqs]
    if args.json:
        _print_json(
            {
                "store": args.store,
                "tasks": [
                    {
                        "key": t.key,
                        "snapshots": t.snapshots,
                        "newest_seq": t.newest_seq,
                        "newest_created": _finite(t.newest_created),
                        "newest_created_utc": _utc(t.newest_created),
                        "size": t.size,
                    }
                    for t in tasks
                ],
            }
        )
    elif not tasks:
        print(f"no tasks in {args.store}")
    else:
        rows = [
            [t.key, str(t.snapshots), _utc(t.newest_created) or "-", _size(t.size)] for t in tasks
        ]
        print(_table(["KEY", "SNAPSHOTS", "NEWEST (UTC)", "SIZE"], rows, right={1, 3}))
    return EXIT_OK


def _no_snapshots(store: str, key: str) -> _UsageError:
    return _UsageError(
        f"no snapshots of task {key!r} in {store}: `resumable ls {store}` lists the tasks"
    )


def _show(args: argparse.Namespace) -> int:
    backend = open_task(open_store(args.store), args.key)
    infos = snapshot_infos(task_store(backend, args.key), verify=not args.no_verify)
    if not infos:
        raise _no_snapshots(args.store, args.key)
    packs = task_packs(backend)
    packed = (len(packs), sum(e.size for e in packs))
    if args.json:
        _print_json(
            {
                "store": args.store,
                "key": args.key,
                "snapshots": [_snapshot_doc(i) for i in infos],
                "packs": {"count": packed[0], "size": packed[1]},
            }
        )
    else:
        _print_snapshots(args.store, args.key, infos, packed)
    return EXIT_BAD if any(i.status == "bad" for i in infos) else EXIT_OK


def _snapshot_row(i: SnapshotInfo, incremental: bool) -> list[str]:
    attempt = "-" if i.attempt is None else str(i.attempt)
    created = _utc(i.created) or "-"
    tail = [created, attempt, str(i.failures), _status_text(i)]
    if not incremental:
        return [str(i.seq), i.kind or "?", _size(i.size), *tail]
    members = "-" if i.members is None else str(i.members)
    stored = [i.compression or "?", _size(i.size), _size(i.raw_size), members, _size(i.added)]
    return [str(i.seq), i.kind or "?", *stored, *tail]


def _print_snapshots(
    store: str, key: str, infos: list[SnapshotInfo], packs: tuple[int, int]
) -> None:
    # Tasks that save folders by content get the columns that say what each save stored.
    incremental = any(i.incremental for i in infos)
    rows = [_snapshot_row(i, incremental) for i in infos]
    tail = ["CREATED (UTC)", "ATTEMPT", "FAILURES", "VERIFIED"]
    if incremental:
        headers = ["SEQ", "KIND", "STORED", "SIZE", "FOLDER", "ENTRIES", "ADDED", *tail]
        print(_table(headers, rows, right={0, 3, 4, 5, 6, 8, 9}))
        print(
            "STORED pieces: an incremental folder snapshot: SIZE is its index, FOLDER its "
            "files' bytes, ADDED what its save stored anew (the rest it shares with other "
            "snapshots, in the task's packs)"
        )
    else:
        print(_table(["SEQ", "KIND", "SIZE", *tail], rows, right={0, 2, 4, 5}))
    if incremental or packs[0]:
        print(f"{PIECES}: {_count(packs[0], 'pack')}, {_size(packs[1])}")
    if any(i.failures for i in infos):
        print(
            f"FAILURES: failures of the task recorded against a snapshot (poison_after); "
            f"`resumable clear-marks {store} {key}` forgets them"
        )


def _folders(args: argparse.Namespace) -> list[TaskFolder]:
    """The task folders ``verify`` checks: every one with snapshots, or the one of KEY."""
    store = open_store(args.store)
    if args.key is None:
        return [f for f in find_task_folders(store) if f.seqs]
    folder = task_folder(store, args.key)
    if not folder.seqs:
        raise _no_snapshots(args.store, args.key)
    return [folder]


def _verify(args: argparse.Namespace) -> int:
    folders = _folders(args)
    results = [
        (f.key, info) for f in folders for info in snapshot_infos(task_store(f.backend, f.key))
    ]
    bad = [(key, info) for key, info in results if info.status == "bad"]
    checked = sum(1 for _, info in results if info.status != "gone")
    if args.json:
        _print_json(
            {
                "store": args.store,
                "ok": not bad,
                "tasks": len(folders),
                "checked": checked,
                "bad": [{"key": key, "seq": i.seq, "problem": i.problem} for key, i in bad],
            }
        )
    else:
        _print_verdict(args.store, bad, checked, len(folders))
    return EXIT_BAD if bad else EXIT_OK


def _print_verdict(
    store: str, bad: list[tuple[str, SnapshotInfo]], checked: int, tasks: int
) -> None:
    for key, info in bad:
        print(f"BAD  {key}  snapshot {info.seq}: {info.problem}")
    verdict = f"{len(bad)} bad" if bad else "all verify"
    checked_text = f"{_count(checked, 'snapshot')} of {_count(tasks, 'task')}"
    print(f"checked {checked_text} in {store}: {verdict}")


def _rm(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    entries = task_entries(store, args.key)
    snapshots = snapshot_count(entries)
    if not entries:
        raise _UsageError(f"no task {args.key!r} in {args.store}: nothing to remove")
    if not args.yes:
        raise _UsageError(
            f"not removing task {args.key!r} ({_count(snapshots, 'snapshot')}) from {args.store}: "
            "this cannot be undone; add --yes to remove it"
        )
    removal = remove_task(store, args.key)
    removed = removal.removed
    if args.json:
        _print_json(
            {
                "store": args.store,
                "key": args.key,
                "snapshots": snapshots,
                "removed": [{"name": e.name, "size": e.size} for e in removed],
                "cleared_record": removal.cleared,
            }
        )
    else:
        size = _size(sum(e.size for e in removed))
        print(
            f"removed task {args.key} from {args.store}: {_count(snapshots, 'snapshot')}, "
            f"{_count(len(removed), 'object')}, {size}"
        )
        if removal.cleared is not None:
            print(
                f"left a signed 'cleared' record ({removal.cleared}): copies of the task's old "
                "files never load again"
            )
    return EXIT_OK


def _clear_marks(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    if not task_entries(store, args.key):
        raise _no_snapshots(args.store, args.key)
    count = clear_failures(store, args.key)
    if args.json:
        _print_json({"store": args.store, "key": args.key, "cleared": count})
    else:
        print(f"cleared {_count(count, 'failure mark')} of task {args.key} in {args.store}")
    return EXIT_OK


def _gc(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    now = time.time()
    report = collect_garbage(store, grace=args.grace, now=now, dry_run=args.dry_run)
    # Workspaces of this machine's processes that were killed (they could not clean up);
    # marked ones that nothing here can judge (another host, boot or container) are listed.
    workspaces = collect_workspaces(dry_run=args.dry_run)

    def doc(g: Garbage) -> dict[str, Any]:
        age = None if g.mtime is None else now - g.mtime
        return {"key": g.key, "name": g.name, "reason": g.reason, "size": g.size, "age": age}

    if args.json:
        _print_json(
            {
                "store": args.store,
                "grace": args.grace,
                "dry_run": args.dry_run,
                "removed": [doc(g) for g in report.removed],
                "kept": [doc(g) for g in report.kept],
                "workspaces": [str(w) for w in workspaces.removed],
                "workspaces_kept": [str(w) for w in workspaces.unprovable],
            }
        )
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    if report.removed:
        rows = [
            [g.key, g.name, g.reason, _size(g.size), _age(doc(g)["age"])] for g in report.removed
        ]
        print(_table(["KEY", "NAME", "REASON", "SIZE", "AGE"], rows, right={3, 4}))
    size = _size(sum(g.size for g in report.removed))
    summary = f"{verb} {_count(len(report.removed), 'object')} ({size}) from {args.store}"
    if report.kept:
        summary += (
            f"; kept {_count(len(report.kept), 'object')} newer than the grace period "
            f"({args.grace:g} s) or of unknown age"
        )
    print(summary)
    _print_workspaces(verb, workspaces.removed, workspaces.unprovable)
    return EXIT_OK


def _print_workspaces(verb: str, removed: list[Path], unprovable: list[Path]) -> None:
    if removed:
        print(
            f"{verb} {_count(len(removed), 'workspace')} left in {removed[0].parent} "
            "by processes that are gone"
        )
    if unprovable:
        print(
            f"kept {_count(len(unprovable), 'workspace')} in {unprovable[0].parent} "
            "whose owner cannot be proven gone (another host, boot or container)"
        )


# -- parsing ------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument(
        "store",
        metavar="STORE",
        nargs="?",
        help=f"a local folder or an fsspec URL (default: ${STORE_ENV}, else ./.resumable)",
    )

    parser = argparse.ArgumentParser(
        prog="resumable",
        description="Inspect, verify and clean up the snapshots of a resumable store.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"resumable {_version.VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(run=run)
        return p

    command("ls", _ls, "list the tasks: snapshot count, newest snapshot, total size")

    show = command("show", _show, "list the snapshots of one task and verify each")
    show.add_argument("key", metavar="KEY", help="the task's key (its folder in the store)")
    show.add_argument(
        "--no-verify", action="store_true", help="read the manifests only, not the payloads"
    )

    verify = command("verify", _verify, "verify every snapshot (of every task, or of KEY)")
    verify.add_argument("key", metavar="KEY", nargs="?", help="only this task")

    rm = command("rm", _rm, "delete a task: its snapshots, packs, orphan payloads and temp files")
    rm.add_argument("key", metavar="KEY", help="the task's key")
    rm.add_argument("--yes", action="store_true", help="really delete (required)")

    marks = command(
        "clear-marks", _clear_marks, "forget the failures recorded against a task's snapshots"
    )
    marks.add_argument("key", metavar="KEY", help="the task's key")

    gc = command(
        "gc", _gc, "remove orphan payloads, orphan packs and temp files older than a grace period"
    )
    gc.add_argument(
        "--grace",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="keep garbage younger than this: a save may still be running (default: 3600)",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resumable`` command with ``argv`` (default: the process's arguments).

    Returns the exit code: 0 ok, 1 a snapshot failed verification, 2 usage or store error.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    defaulted = args.store is None
    # The library's warnings (a snapshot skipped while checking) would repeat what the
    # report says; without logging configured they are not printed.
    quiet = logging.NullHandler()
    log = logging.getLogger("resumable")
    if not log.handlers and not logging.getLogger().handlers:
        log.addHandler(quiet)
    try:
        if defaulted:  # the rule of @resumable's default store, in this folder
            args.store = resolve_store(None)
        code: int = args.run(args)
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error worth a message. Point stdout at
        # devnull so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except CorruptCheckpointError as exc:  # a snapshot that cannot be read: a bad snapshot
        _error(args.command, exc)
        return EXIT_BAD
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # any store problem (a raw client error, ...)
        _error(args.command, exc)
        if defaulted and isinstance(exc, ConfigurationError):
            print(
                f"resumable {args.command}: that is the default store (${STORE_ENV}, else "
                "./.resumable): give STORE to use another one",
                file=sys.stderr,
            )
        return EXIT_ERROR
    finally:
        log.removeHandler(quiet)
    return code


def _error(command: str, exc: BaseException) -> None:
    """One line on stderr: never a traceback for a store or snapshot problem."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, _UsageError | ResumableError | OSError | ValueError):
        text = f"{type(exc).__name__}: {text}"
    print(f"resumable {command}: error: {text}", file=sys.stderr)
