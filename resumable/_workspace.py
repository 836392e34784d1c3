"""Workspaces and restore stagings: the folders this library makes, their lifetime and clean-up.

A *workspace* is the private folder ``Checkpoint.load`` restores into. It is the ``root``
subfolder of a folder ``resumable-<stamp>-<random>`` in the temp folder, which holds the
owner marker (see ``_owner``) beside it: the user sees only ``root``, and a restore that
replaces ``root`` keeps the marker. A workspace stays until :func:`release` (``Checkpoint``'s
``close()``) or the end of the process that made it (an exit hook here removes those not
released; a forked child leaves its parent's alone).

A *staging* folder is where a restore into a user's folder unpacks, beside that folder so
that renames stay on one filesystem: ``.<name>.resumable-<stamp>-<random>``, marked, holding
the new tree in ``new``. :func:`swap` moves the user's folder to ``old`` inside the staging,
then ``new`` into its place, then the staging goes. A process killed between the two renames
leaves the folder missing and its staging holding ``old``: :func:`recover` puts it back, and
it runs before every restore, so a restore that then fails loses nothing.

Clean-up deletes only folders that carry a regular marker file whose owner is provably gone
(``_owner.gone``: this machine, boot and PID namespace, and the process is no more). Names
prove nothing; a folder made elsewhere is never deleted (``resumable gc`` lists it). The first
workspace a process makes in a temp folder, and ``resumable gc``, sweep that folder; stagings
of gone owners beside a folder go once a restore into it has succeeded.

Example:
    >>> root = create()
    >>> read_marker(root.parent) == me(), root.name
    (True, 'root')
    >>> release(root)
    >>> root.parent.exists()
    False

"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._errors import ConfigurationError
from ._forks import at_fork
from ._owner import MARKER, Owner, gone, me, read_marker, stamp, write_marker

__all__ = [
    "NEW",
    "OLD",
    "ROOT",
    "Leftovers",
    "create",
    "destination",
    "discard",
    "empty_folder",
    "empty_folder_slow",
    "holds_at_most_payload",
    "keep_until_exit",
    "leftovers",
    "let_go",
    "recover",
    "release",
    "remove_abandoned",
    "stage",
    "swap",
    "sweep_beside",
]

log = logging.getLogger("resumable")

#: The folder of a workspace that its user sees (``Checkpoint.path``).
ROOT = "root"
#: In a staging folder: the restored tree, before it takes the user's folder's place.
NEW = "new"
#: In a staging folder: the user's folder, moved aside during the swap.
OLD = "old"
#: Each time this many more workspaces are kept for collected Checkpoints, a warning says how
#: to free them.
_KEPT_WARNING = 100

# Names tell where to look, never what to delete (the marker does).
_WORKSPACE = re.compile(r"^resumable-[^./]+$")
_STAGING = re.compile(r"^\.(.+)\.resumable-[^./]+$")

_swept: set[str] = set()
_lock = threading.Lock()
#: Workspace folders (the marked parents) this process made and has not released.
_mine: set[Path] = set()
#: A workspace's ``root`` -> an emptied staging of this process beside it, for its next
#: restore. Making and removing a marked staging is several file creations and deletions,
#: each costlier than the rest of a small load on some filesystems (ext4 here: ~0.15 ms).
_spare: dict[Path, Path] = {}
_kept = 0  # of them, how many belong to Checkpoints that were collected
_hooked = False


@at_fork
def _new_state_in_child() -> None:
    global _lock, _kept
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork
    # The parent's workspaces are the parent's: the child's exit must not remove them.
    _mine.clear()
    _spare.clear()  # the parent's stagings are the parent's too
    _kept = 0


def _remove_mine_at_exit() -> None:
    with _lock:
        folders = list(_mine)
        _mine.clear()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def create() -> Path:
    """A new workspace of this process in the temp folder: its ``root`` folder (empty).

    The first workspace of this process in a temp folder sweeps that folder first.
    """
    global _hooked
    parent = tempfile.gettempdir()
    with _lock:
        first = parent not in _swept
        _swept.add(parent)
        if not _hooked:
            # Registered after _threads' exit hook, so it runs before it; nothing that hook
            # finishes reads a workspace (background saves hold frozen copies).
            atexit.register(_remove_mine_at_exit)
            _hooked = True
    if first:
        remove_abandoned(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"resumable-{stamp()}-", dir=parent))
    with _lock:
        _mine.add(folder)
    try:
        write_marker(folder)
        (folder / ROOT).mkdir(mode=0o700)
    except BaseException:
        release(folder / ROOT)
        raise
    return folder / ROOT


def release(root: Path) -> None:
    """Remove a workspace of this process now (``root`` as :func:`create` returned it)."""
    folder = root.parent
    with _lock:
        _spare.pop(root, None)  # it lives in ``folder``
        if folder not in _mine:
            return  # released already, or made by the parent of this forked process
        _mine.discard(folder)
    shutil.rmtree(folder, ignore_errors=True)


def let_go(workspaces: list[Path], handed_out: list[bool]) -> None:
    """A Checkpoint closed or collected: its workspace goes, unless a load returned it.

    The folder a load returned may be in use after its Checkpoint is collected, so only
    ``close()`` (which releases it first) or the end of the process removes it.
    """
    if handed_out[0]:
        keep_until_exit(workspaces)
        return
    for root in workspaces:
        release(root)


def keep_until_exit(roots: list[Path]) -> None:
    """Workspaces whose Checkpoint was collected: they stay until exit (a load returned them).

    The folder a load returned may still be in use after its Checkpoint is gone
    (``Checkpoint(url).load_sync()``); nothing can tell when it no longer is, so it stays
    until ``close()`` or exit. A loop that makes many such Checkpoints piles them up: each
    time their number passes a multiple of :data:`_KEPT_WARNING`, a warning says to close them.
    """
    global _kept
    with _lock:
        before = _kept
        _kept += sum(1 for root in roots if root.parent in _mine)
        warn = before // _KEPT_WARNING < _kept // _KEPT_WARNING
    if warn:
        log.warning(
            "%d workspaces of Checkpoints that were not closed are kept until this process "
            "exits (the folders their loads returned may still be in use): close each "
            "Checkpoint (`with Checkpoint(...) as cp:`) to remove its workspace sooner",
            _kept,
        )


# -- restoring into a user's folder ------------------------------------------------------------


def destination(folder: Path) -> Path:
    """Where a restore into ``folder`` writes: ``folder``, or the folder its link points to.

    A link stays a link: the restore replaces what it points to (staged beside that, on its
    filesystem). A link to nothing or to a non-folder, and a non-folder, are refused.
    """
    try:
        mode = folder.lstat().st_mode
    except FileNotFoundError:
        return folder
    if stat.S_ISDIR(mode):
        return folder
    if not stat.S_ISLNK(mode):
        raise ConfigurationError(
            f"cannot restore into {str(folder)!r}: it exists and is not a folder"
        )
    real = Path(os.path.realpath(folder))
    if not real.is_dir():
        what = "a missing path" if not os.path.lexists(real) else "something that is not a folder"
        raise ConfigurationError(
            f"cannot restore into {str(folder)!r}: it is a symbolic link to {what} ({real}); "
            "make it point to a folder, or remove the link"
        )
    return real


def stage(target: Path) -> Path:
    """A marked staging folder of this process beside ``target`` (the tree goes in NEW).

    For a workspace, the staging its previous restore emptied (see :func:`discard`), when it
    is still as that left it; else a new one.
    """
    with _lock:
        spare = _spare.pop(target, None)
    if spare is not None and _is_spare(spare):
        return spare
    prefix = f".{target.name}.resumable-{stamp()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        write_marker(staging)
        (staging / NEW).mkdir(mode=0o700)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def swap(staging: Path, target: Path) -> None:
    """Put the tree in ``staging``'s NEW in place of ``target``; the old tree goes to OLD.

    Between the two renames a kill leaves ``target`` missing and the user's tree in OLD,
    which :func:`recover` puts back.
    """
    new = staging / NEW
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        os.rename(new, target)
        return
    new.chmod(stat.S_IMODE(mode))
    old = staging / OLD
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise


def discard(staging: Path, target: Path) -> None:
    """Remove this process's staging after a restore, unless it holds the only user tree.

    A workspace's staging is emptied and kept instead, for the next restore into it.
    """
    if _holds_old(staging) and not os.path.lexists(target):
        # The swap failed and so did putting the user's tree back: keep it for recover().
        log.error(
            "restoring into %s failed halfway; its content is kept in %s", target, staging / OLD
        )
        return
    with _lock:
        reuse = target.parent in _mine and target not in _spare
    # A workspace's staging is emptied and kept for its next restore; it goes with the
    # workspace (both are in its marked folder). One beside a user's folder goes now.
    if reuse and _empty_staging(staging):
        with _lock:
            if target.parent in _mine and target not in _spare:
                _spare[target] = staging
                return
    shutil.rmtree(staging, ignore_errors=True)


def _empty_staging(staging: Path) -> bool:
    """Leave ``staging`` holding its marker and an empty NEW; False if it cannot be done.

    The replaced tree (OLD) is emptied and renamed NEW: one folder deletion and creation
    fewer than removing it and making NEW again.
    """
    try:
        if _is_dir(staging / OLD):
            if os.path.lexists(staging / NEW):
                remove_tree(staging / NEW)
            empty_folder(staging / OLD)
            os.rename(staging / OLD, staging / NEW)
        elif _is_dir(staging / NEW):
            empty_folder(staging / NEW)
        else:
            return False
    except OSError:
        return False
    return True  # stage() checks it again before it takes it


def _is_spare(staging: Path) -> bool:
    """Whether ``staging`` holds exactly its marker (a regular file) and an empty NEW."""
    try:
        names = sorted(os.listdir(staging))
        if names != sorted([MARKER, NEW]) or not _is_dir(staging / NEW):
            return False
        return not os.listdir(staging / NEW) and read_marker(staging) == _myself()
    except OSError:
        return False


def empty_folder(folder: Path) -> None:
    """Delete everything inside ``folder`` and keep the folder (links are removed, not followed).

    The fast twin of :func:`empty_folder_slow` (``tests/store/test_perf_paths.py`` holds them
    to the same result): the entries a scan finds are unlinked directly, and only subfolders
    go through ``shutil.rmtree``.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def empty_folder_slow(folder: Path) -> None:
    """:func:`empty_folder` the obvious way: remove the whole tree, make the folder again."""
    mode = stat.S_IMODE(folder.lstat().st_mode)
    shutil.rmtree(folder)
    folder.mkdir(mode=mode)
    folder.chmod(mode)  # mkdir's mode passes through the umask


def remove_tree(path: Path) -> None:
    """Remove ``path``, a folder tree or anything else (a link is removed, not followed)."""
    if _is_dir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _holds_old(staging: Path) -> bool:
    try:
        return stat.S_ISDIR((staging / OLD).lstat().st_mode)
    except OSError:
        return False


def _stagings(target: Path) -> list[Path]:
    """The staging folders beside ``target`` that are marked as this library's."""
    try:
        children = list(target.parent.iterdir())
    except OSError:
        return []
    return sorted(
        p
        for p in children
        if (found := _STAGING.match(p.name)) is not None
        and found.group(1) == target.name
        and _is_dir(p)
    )


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _abandoned(folder: Path) -> bool:
    who = read_marker(folder)
    # This process is not gone: no need to ask /proc (a read there costs more than a load).
    return who is not None and who != _myself() and gone(who)


_me: tuple[int, Owner] | None = None


def _myself() -> Owner:
    """:func:`_owner.me`, read once per process: its start time does not change."""
    global _me
    pid, cached = os.getpid(), _me
    if cached is not None and cached[0] == pid:
        return cached[1]
    who = me()
    _me = (pid, who)
    return who


def _put_back(staging: Path, target: Path) -> bool:
    """Put the user's tree an interrupted swap left in ``staging`` back at ``target``."""
    if not _holds_old(staging) or os.path.lexists(target):
        return False
    try:
        os.rename(staging / OLD, target)
    except OSError as exc:
        log.warning("cannot put %s back at %s yet: %r", staging / OLD, target, exc)
        return False
    log.warning("put %s back: a restore into it was killed halfway", target)
    return True


def _in_workspace(target: Path) -> bool:
    """Whether ``target`` is the ``root`` of a workspace this process made."""
    with _lock:
        return target.parent in _mine


def holds_at_most_payload(target: Path) -> bool:
    """Whether ``target`` is a workspace's ``root`` holding nothing but a ``payload`` file.

    Then a load of bytes or a file may replace that one file in place: nobody else writes
    there, and nothing else is in it to remove.
    """
    if not _in_workspace(target):
        return False
    try:
        with os.scandir(target) as it:
            found = [(e.name, e.is_file(follow_symlinks=False)) for e in it]
    except OSError:
        return False
    return found in ([], [("payload", True)])


def recover(target: Path) -> None:
    """Undo a swap into ``target`` that a process killed between its renames left halfway.

    Only renames, never deletes: a restore runs this first, and whatever it then does
    (succeed or fail) the user's tree is back in place. Nothing to do for a workspace's
    ``root``: only this process restores beside it (its folder is private, and goes at exit).
    """
    if _in_workspace(target):
        return
    for staging in _stagings(target):
        if _abandoned(staging):
            _put_back(staging, target)


def sweep_beside(target: Path) -> None:
    """After a restore into ``target`` succeeded: remove the stagings gone owners left there.

    What such a staging still holds is superseded: a new tree that never took the folder's
    place, or an old one that the restore just replaced anyway. None can be beside a
    workspace's ``root`` (see :func:`recover`).
    """
    if _in_workspace(target):
        return
    for staging in _stagings(target):
        if _abandoned(staging) and not (_holds_old(staging) and not os.path.lexists(target)):
            shutil.rmtree(staging, ignore_errors=True)


# -- sweeping a temp folder --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leftovers:
    """Marked folders in a temp folder: removable ones, and ones that cannot be judged."""

    #: Their owner is provably gone: safe to remove.
    abandoned: list[Path]
    #: Made on another host, boot or PID namespace, or a staging holding the tree it replaced
    #: while that folder exists: never removed here (listed by ``resumable gc``).
    unprovable: list[Path]


def leftovers(folder: str | None = None) -> Leftovers:
    """The marked workspaces and stagings in ``folder`` (default: the temp folder)."""
    root = Path(folder or tempfile.gettempdir())
    try:
        children = sorted(root.iterdir())
    except OSError:
        return Leftovers([], [])
    found: list[Path] = []
    kept: list[Path] = []
    mine = me().machine
    for child in children:
        verdict = _judge(root, child, mine)
        if verdict == "abandoned":
            found.append(child)
        elif verdict == "unprovable":
            kept.append(child)
    return Leftovers(found, kept)


def _judge(root: Path, child: Path, mine: str) -> Literal["abandoned", "unprovable"] | None:
    """What ``child`` of ``root`` is to a sweep: None when it is not a leftover at all."""
    staging = _STAGING.match(child.name)
    if (staging is None and _WORKSPACE.match(child.name) is None) or not _is_dir(child):
        return None
    who = read_marker(child)
    if who is None:
        return None  # not provably ours: a user's folder that looks alike
    if not gone(who):
        return "unprovable" if who.machine != mine else None
    if staging is not None and _holds_old(child) and os.path.lexists(root / staging[1]):
        return "unprovable"  # only a restore into that folder may tell it is superseded
    return "abandoned"


def remove_abandoned(folder: str | None = None) -> list[Path]:
    """Remove the workspaces and stagings in ``folder`` whose owner is gone; those removed.

    A staging that holds a user's tree whose folder is missing puts it back first.
    """
    removed = []
    for path in leftovers(folder).abandoned:
        staging = _STAGING.match(path.name)
        if (
            staging is not None
            and _holds_old(path)
            and not _put_back(path, path.parent / staging[1])
        ):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    if removed:
        log.info("removed %d workspace(s) left by processes that are gone", len(removed))
    return removed
