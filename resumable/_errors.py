"""The exceptions of resumable.

Every error the library raises on purpose derives from :class:`ResumableError`, and each
subclass also derives from the builtin a caller would already catch. They come in two kinds:
the ones a correct program still meets and *catches* (the store, another writer, the
process), and the ones that point at a mistake the caller *fixes* (the message says how)::

    ResumableError (Exception)
    │   (to catch: conditions a correct program meets)
    ├── CorruptCheckpointError (ValueError)     snapshots exist, none verifies
    │   ├── SignatureError                      unsigned or wrongly signed, with a key set
    │   └── UnsafeArchiveError                  a folder snapshot would escape its folder
    ├── StorageError (OSError)                  the store kept failing
    │   └── DeadlineExceeded (TimeoutError)     a storage call did not answer in time
    ├── ConcurrentWriterError (FileExistsError) another writer committed the same snapshot
    ├── Preempted (RuntimeError)                the process was asked to stop (SIGTERM)
    ├── NonRetryableError                       raised by a task: fail now, never retry
    │   (to fix: a mistake in the calling code or its data)
    ├── ConfigurationError (ValueError)         a bad argument to resumable() or Checkpoint()
    ├── StateError (TypeError)                  state that cannot be pickled, unpickled or
    │                                           injected, or arguments without a stable key
    ├── UnsupportedDataError (TypeError)        save() got something it cannot store
    ├── SourceNotFoundError (FileNotFoundError) save() got a path that does not exist
    ├── SourceUnreadableError (OSError)         a file or folder to save could not be read
    │   └── SourcePermissionError (PermissionError)
    │                                           ... as this process may not read it
    ├── UnsafeSymlinkError (ValueError)         a folder to save links outside itself
    └── NoTaskContextError (RuntimeError)       ctx() called outside a resumable task

The errors to fix stay separate classes rather than being folded into fewer. Each has the
builtin base that existing ``except`` clauses expect, and the pairs that share one differ in
what to fix: ``StateError`` is about the task's state and arguments, ``UnsupportedDataError``
about a value handed to ``save()`` (both ``TypeError``); ``ConfigurationError`` about an
option, ``UnsafeSymlinkError`` about a folder's content (both ``ValueError``). Folding them
would save a name but make the one left vaguer, and a caller who wants them all already
catches ``ResumableError``.

``NonRetryableError`` is the one a task raises itself: a marker with no builtin base besides
``Exception``, since what it marks can be any kind of failure (subclass it together with the
builtin that fits, as ``class BadInput(NonRetryableError, ValueError)``).

Example:
    >>> from resumable import ResumableError, CorruptCheckpointError
    >>> issubclass(CorruptCheckpointError, ValueError)
    True

"""

from __future__ import annotations

import re

__all__ = [
    "ConcurrentWriterError",
    "ConfigurationError",
    "CorruptCheckpointError",
    "DeadlineExceeded",
    "NoTaskContextError",
    "NonRetryableError",
    "Preempted",
    "ResumableError",
    "SignatureError",
    "SourceNotFoundError",
    "SourcePermissionError",
    "SourceUnreadableError",
    "StateError",
    "StorageError",
    "UnsafeArchiveError",
    "UnsafeSymlinkError",
    "UnsupportedDataError",
]


class ResumableError(Exception):
    """Base class of every error raised by resumable.

    Example:
        >>> try:
        ...     raise StateError("cannot pickle a socket")
        ... except ResumableError as exc:
        ...     print(type(exc).__name__)
        StateError

    """


class CorruptCheckpointError(ResumableError, ValueError):
    """Snapshots exist under a checkpoint, but none of them verifies.

    Raised by ``load`` instead of silently starting from scratch. The message lists each
    snapshot and why it was refused.

    Example:
        >>> from resumable import Checkpoint, CorruptCheckpointError
        >>> def restore(cp: Checkpoint):
        ...     try:
        ...         return cp.load_sync()
        ...     except CorruptCheckpointError:
        ...         return None  # every snapshot is damaged: start over, knowingly

    """


class UnsafeArchiveError(CorruptCheckpointError):
    """A directory snapshot holds a member that would land outside its folder.

    Absolute paths, ``..``, links pointing outside, devices and fifos, and archives over the
    size or entry limits are refused before anything is written.

    Example:
        >>> issubclass(UnsafeArchiveError, CorruptCheckpointError)  # skipped like corrupt ones
        True

    """


class SignatureError(CorruptCheckpointError):
    """A signing key is set and a snapshot is unsigned or signed with another key.

    The snapshot is refused before anything in it is unpickled or extracted.

    Example:
        >>> issubclass(SignatureError, CorruptCheckpointError)  # skipped like corrupt ones
        True

    """


class UnsafeSymlinkError(ResumableError, ValueError):
    """A folder given to ``save`` holds a symbolic link that points outside it.

    Example:
        >>> import os, tempfile
        >>> from resumable import Checkpoint
        >>> folder = tempfile.mkdtemp()
        >>> os.symlink("/etc/hostname", os.path.join(folder, "link"))
        >>> with Checkpoint("memory://doc-symlink") as cp:
        ...     try:
        ...         cp.save_sync(folder)
        ...     except UnsafeSymlinkError:
        ...         print("refused")
        refused

    """


class UnsupportedDataError(ResumableError, TypeError):
    """``save`` was given a value that is neither bytes nor a path, or a special file.

    Example:
        >>> from resumable import Checkpoint
        >>> with Checkpoint("memory://doc-unsupported") as cp:
        ...     try:
        ...         cp.save_sync(42)  # type: ignore[arg-type]
        ...     except UnsupportedDataError:
        ...         print("pickle it first")
        pickle it first

    """


class SourceNotFoundError(ResumableError, FileNotFoundError):
    """``save`` was given a path that does not exist.

    Example:
        >>> from resumable import Checkpoint
        >>> with Checkpoint("memory://doc-missing") as cp:
        ...     try:
        ...         cp.save_sync("no/such/model.pt")
        ...     except FileNotFoundError as exc:  # a SourceNotFoundError
        ...         print(exc.filename)
        no/such/model.pt

    """


class SourceUnreadableError(ResumableError, OSError):
    """A file or folder given to ``save``, or inside a folder given to it, could not be read.

    The message says what to do; ``errno`` and ``strerror`` say why, ``filename`` names the
    file or folder. A fault of the source, not of the store: never retried as one, and never
    reported as a ``StorageError``. A read refused for want of permission is the subclass
    :class:`SourcePermissionError`.

    Example:
        >>> from resumable import Checkpoint
        >>> def save_or_report(cp: Checkpoint, folder: str) -> None:
        ...     try:
        ...         cp.save_sync(folder)
        ...     except SourceUnreadableError as exc:  # the previous snapshot is intact
        ...         print(f"cannot read {exc.filename}: {exc.strerror}")

    """


class SourcePermissionError(SourceUnreadableError, PermissionError):
    """``save`` met a file or folder that this process may not read.

    Make it readable by the user the process runs as, or move it out of the folder.

    Example:
        >>> from resumable import Checkpoint
        >>> def save_readable(cp: Checkpoint, folder: str) -> None:
        ...     try:
        ...         cp.save_sync(folder)
        ...     except PermissionError as exc:  # a SourcePermissionError
        ...         raise SystemExit(f"{exc.filename}: make it readable, or move it out") from exc
        >>> issubclass(SourcePermissionError, SourceUnreadableError)
        True

    """


class ConcurrentWriterError(ResumableError, FileExistsError):
    """Another writer committed the same snapshot sequence number first.

    Two processes are running the same task against the same key. The loser's snapshot is
    discarded; the winner's stays intact.

    Example:
        >>> issubclass(ConcurrentWriterError, FileExistsError)
        True

    """


class StorageError(ResumableError, OSError):
    """The store failed, kept failing after retries, or did not answer in time.

    Example:
        >>> from resumable import Checkpoint
        >>> def save_or_skip(cp: Checkpoint, data: bytes) -> bool:
        ...     try:
        ...         cp.save_sync(data)
        ...     except StorageError:
        ...         return False  # the previous snapshot is intact; try again later
        ...     return True

    """


class DeadlineExceeded(StorageError, TimeoutError):
    """A storage call did not answer within its ``RetryPolicy.timeout``.

    The call may still be running on a daemon thread; the snapshot being written is never
    committed, and the previous one stays loadable.

    Example:
        >>> from resumable import Checkpoint, DeadlineExceeded, RetryPolicy, Storage
        >>> patient = Storage(retry=RetryPolicy(timeout=30.0))
        >>> cp = Checkpoint("memory://doc-deadline", storage=patient)
        >>> try:
        ...     cp.save_sync(b"state")
        ... except DeadlineExceeded:  # also a StorageError and a TimeoutError
        ...     pass  # the store hung: the previous snapshot is intact
        >>> cp.close()

    """


class ConfigurationError(ResumableError, ValueError):
    """An argument given to ``resumable()``, ``Checkpoint()`` or an options value is not valid.

    Example:
        >>> from resumable import Storage
        >>> try:
        ...     Storage(keep=0)
        ... except ConfigurationError as exc:
        ...     print(exc)
        keep must be a whole number >= 1, got 0

    """


class StateError(ResumableError, TypeError):
    """Task state could not be pickled, unpickled or injected.

    Also raised when a call's arguments have no stable digest for the default key.

    Example:
        >>> import threading
        >>> from resumable import resumable
        >>> try:
        ...     resumable(state=threading.Lock())
        ... except StateError:
        ...     print("state must be picklable")
        state must be picklable

    """


class NoTaskContextError(ResumableError, RuntimeError):
    """``ctx()`` was called outside a function decorated with ``@resumable``.

    Example:
        >>> from resumable import ctx
        >>> try:
        ...     ctx()
        ... except NoTaskContextError:
        ...     print("not in a task")
        not in a task

    """


class Preempted(ResumableError, RuntimeError):
    """The process was asked to stop; the last snapshot is saved, and a new process resumes.

    Raised by a task decorated with ``@resumable(preemptible=True)`` after SIGTERM.

    Example:
        >>> import sys
        >>> from resumable import resumable
        >>> @resumable(state=0, preemptible=True, store="memory://doc-preempted")
        ... def train(state: int = 0):
        ...     yield state + 1
        >>> def main() -> None:
        ...     try:
        ...         train()
        ...     except Preempted:
        ...         sys.exit(143)  # the scheduler restarts the job, which resumes

    """


class NonRetryableError(ResumableError):
    """Raised by a task's own code: the call fails at once, whatever its retry policy says.

    Code deep inside a task can stop the retries of every ``@resumable`` task that calls it
    without each decorator listing the error in ``no_retry_on`` (flyte's
    ``NonRecoverableError``). Raise it ``from`` the error that caused it, or subclass it
    together with the builtin that fits. The failure still counts against the snapshot the
    attempt started from (``poison_after``), as the task's other exceptions do.

    Example:
        >>> from resumable import RetryPolicy, resumable
        >>> class BadInput(NonRetryableError, ValueError):
        ...     pass
        >>> tries = []
        >>> @resumable(state=0, retry=RetryPolicy(attempts=5, wait=0), store="memory://doc-nr")
        ... def ingest(path: str, state: int = 0):
        ...     tries.append(state)
        ...     if not path.endswith(".csv"):
        ...         raise BadInput(f"{path} is not a CSV file: retrying cannot fix that")
        ...     yield state + 1
        >>> try:
        ...     ingest("data.json")
        ... except BadInput as exc:
        ...     print(exc, len(tries))
        data.json is not a CSV file: retrying cannot fix that 1

    """


def source_error(
    exc: OSError, path: str, *, in_folder: bool
) -> SourceNotFoundError | SourceUnreadableError:
    """The error for ``exc``, met reading ``path`` to save it: naming it, saying what to do.

    ``in_folder``: ``path`` is inside a folder being saved (else it is what ``save`` was given).
    A path that cannot be read must be made readable (or, in a folder, moved out of it). Not
    in ``__all__``: a helper of the readers of a save, not an error class.

    Example:
        >>> denied = PermissionError(13, "Permission denied", "/data/run/secret.txt")
        >>> error = source_error(denied, "/data/run/secret.txt", in_folder=True)
        >>> type(error).__name__, error.filename
        ('SourcePermissionError', '/data/run/secret.txt')

    """
    reason = exc.strerror or str(exc)
    code = exc.errno or 0
    what = "a file or folder of the folder being saved" if in_folder else "the path given to save"
    if isinstance(exc, FileNotFoundError):
        return SourceNotFoundError(
            code,
            f"{what} was removed while it was being saved ({reason}): save again once the "
            "task has finished changing it",
            path,
        )
    fix = "make it readable, or move it out of the folder" if in_folder else "make it readable"
    if isinstance(exc, PermissionError):
        return SourcePermissionError(
            code, f"this process may not read {what} ({reason}): {fix}", path
        )
    return SourceUnreadableError(code, f"reading {what} failed ({reason}): {fix}", path)


# Python's own messages for a pickle that names what this process cannot find.
_NO_ATTRIBUTE = re.compile(r"Can't get attribute '([^']+)' on <module '([^']+)'")


def unpickle_error(exc: BaseException) -> StateError:
    """The ``StateError`` for state that failed to unpickle with ``exc``, with the advice that fits.

    A module or a name missing from this process is fixed there (the snapshot is fine);
    anything else is probably state written by another version of the code, which only
    starting over fixes. Not in ``__all__``: a helper of the codec, not an error class.

    Example:
        >>> missing = ModuleNotFoundError("No module named 'mymodels'", name="mymodels")
        >>> print(unpickle_error(missing))
        cannot unpickle the saved task state: it needs module 'mymodels', ...

    """
    head = "cannot unpickle the saved task state"
    keep = "the snapshot itself is fine: do not delete it"
    if isinstance(exc, ImportError) and exc.name:
        return StateError(
            f"{head}: it needs module {exc.name!r}, which cannot be imported in this process "
            f"({exc}). Make it importable here (install it, add its folder to PYTHONPATH or "
            f"sys.path, or run from the folder the task ran from); {keep}."
        )
    found = _NO_ATTRIBUTE.search(str(exc)) if isinstance(exc, AttributeError) else None
    if found is not None:
        name, module = found.groups()
        return StateError(
            f"{head}: it needs {name!r} from module {module!r}, which has no such name now "
            f"({exc}). Make it available there under that name (a class that was renamed or "
            f"moved: keep an alias, `{name.rsplit('.', 1)[-1]} = TheNewName`, in {module}); "
            f"{keep}."
        )
    return StateError(
        f"{head}: {exc}. Was it written by another version of the task's code? Delete the "
        "snapshot (resumable rm) to start over."
    )
