"""Workspaces: the private temp folders ``Checkpoint.load`` restores into.

A workspace is named after the process that owns it, ``resumable-<pid>-<start>-<random>``
in the temp folder, where ``<start>`` is the owner's start time (Linux; ``0`` where unknown),
so that a process id reused by a later process is not mistaken for the owner. A process
killed with SIGKILL cannot remove its workspaces; the first workspace a process creates in a
folder, and ``resumable gc`` (in the temp folder), remove those whose owner is gone.

A restore into a folder unpacks into a hidden workspace beside it,
``.<folder name>.resumable-<pid>-<start>-<random>`` (and, for a moment during the swap, the
same name plus ``.old``): the first restore of a process beside that folder removes those of
processes that are gone.

Example:
    >>> owner(Path("resumable-123-456-abcd1234"))
    (123, 456)
    >>> owner(Path(".data.resumable-123-456-abcd1234.old"))
    (123, 456)
    >>> owner(Path("something-else")) is None
    True

"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

__all__ = ["abandoned", "create", "owner", "remove_abandoned"]

log = logging.getLogger("resumable")

_NAME = re.compile(r"^(?:\..+\.)?resumable-(\d+)-(\d+)-[A-Za-z0-9_]+(?:\.old)?$")
_swept: set[str] = set()
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_new_lock_in_child)


def _start_time(pid: int) -> int:
    """The start time of process ``pid`` in clock ticks since boot (Linux); 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # Field 22; the command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def owner(path: Path) -> tuple[int, int] | None:
    """The owner's pid and start time of a workspace, from its name; None if not one."""
    found = _NAME.match(path.name)
    return None if found is None else (int(found.group(1)), int(found.group(2)))


def _alive(pid: int, start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and not ours to judge
    except OSError:
        return True
    return start == 0 or _start_time(pid) in (0, start)


def abandoned(folder: str | None = None) -> list[Path]:
    """Workspaces in ``folder`` (default: the temp folder) whose owner process is gone."""
    root = Path(folder or tempfile.gettempdir())
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    found = []
    for child in children:
        who = owner(child)
        if who is not None and not _alive(*who) and child.is_dir() and not child.is_symlink():
            found.append(child)
    return sorted(found)


def remove_abandoned(folder: str | None = None) -> list[Path]:
    """Remove the workspaces whose owner process is gone; the ones removed."""
    removed = []
    for path in abandoned(folder):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    if removed:
        log.info("removed %d workspace(s) left by processes that are gone", len(removed))
    return removed


def create(folder: str | os.PathLike[str] | None = None, *, beside: str | None = None) -> Path:
    """A new workspace owned by this process, in ``folder`` (default: the temp folder).

    ``beside`` names the folder it is a hidden staging area for (``.<beside>.resumable-...``).
    The first workspace of this process in ``folder`` sweeps the abandoned ones there first.
    """
    root = os.fspath(folder) if folder is not None else tempfile.gettempdir()
    with _lock:
        first = root not in _swept
        _swept.add(root)
    if first:
        remove_abandoned(root)
    pid = os.getpid()
    hidden = f".{beside}." if beside is not None else ""
    return Path(tempfile.mkdtemp(prefix=f"{hidden}resumable-{pid}-{_start_time(pid)}-", dir=root))
