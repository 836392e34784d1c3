"""``Dir`` state's folder: the checks a call starts with, and the restore before each attempt.

A restore makes the folder identical to a snapshot, deleting whatever else it holds: a
``Dir`` that overlaps its store or the temp folder, that is ``/``, or that is a file is
refused when the call starts (:func:`check_dir`), as a ``ConfigurationError`` that is never
retried. :func:`restore_dir` swaps a verified snapshot in, or makes the folder when there is
none.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ._backend import is_local, local_path
from ._checkpoint import Checkpoint, CheckpointInfo
from ._errors import ConfigurationError
from ._files import within

__all__ = ["check_dir", "restore_dir"]


def check_dir(folder: Path, store: str) -> None:
    """Refuse a ``Dir`` that overlaps the store, the temp folder of workspaces, or is ``/``.

    Restoring makes the folder identical to a snapshot, deleting whatever else it holds; a
    folder that contains the store would delete the store, and snapshot it into itself.
    """
    _check_folder_path(folder)
    real = Path(os.path.realpath(folder))
    fix = 'use a Dir of its own (e.g. Dir("outputs")), or a store outside it (store=...)'
    if real == Path(real.anchor):
        raise ConfigurationError(
            f"Dir({str(folder)!r}) is the root folder: restoring a snapshot would delete "
            f"everything else in it; {fix}"
        )
    places = [("the store", local_path(store))] if is_local(store) else []
    places.append(("the temp folder that holds workspaces", tempfile.gettempdir()))
    for what, where in places:
        other = Path(os.path.realpath(where))
        if within(other, real):
            raise ConfigurationError(
                f"Dir({str(folder)!r}) contains {what} ({other}): restoring a snapshot "
                f"into it would delete {what}; {fix}"
            )
        if what == "the store" and within(real, other):
            raise ConfigurationError(
                f"Dir({str(folder)!r}) is inside the store ({other}): snapshots would be "
                f"mixed with the folder they restore; {fix}"
            )


def _check_folder_path(folder: Path) -> None:
    """Refuse a ``Dir`` that is a file, or lies under one: no attempt could ever restore it.

    Found when the call starts, as a ``ConfigurationError`` (never retried), instead of the
    ``FileExistsError`` of every attempt's restore, which the task's policy would retry.
    """
    for place in (folder, *folder.parents):
        if place.is_dir() or place.is_symlink():
            return  # a link to a non-folder: the restore names where it points
        if os.path.lexists(place):
            where = "" if place == folder else f" is inside {str(place)!r}, which"
            raise ConfigurationError(
                f"Dir({str(folder)!r}){where} is a file, not a folder: give Dir() a folder's "
                "path (it is made if missing), or move the file away"
            )


def restore_dir(
    cp: Checkpoint,
    folder: Path,
    accept: Callable[[CheckpointInfo], None],
    poison_after: int | None,
) -> CheckpointInfo | None:
    """Make ``folder`` hold the newest valid snapshot, touching it only once one verified.

    ``Checkpoint.restore_into`` restores beside the folder and swaps it in only after the
    snapshot verified, so a failed restore (a corrupt snapshot, a full disk) leaves ``folder``
    as it was. With nothing to restore, the folder is made if missing.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    m = cp.restore_into(folder, accept=accept, poison_after=poison_after)
    if m is None:
        folder.mkdir(exist_ok=True)
    return m
