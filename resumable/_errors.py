"""The exceptions of resumable.

Every error the library raises on purpose derives from :class:`ResumableError`, and each
subclass also derives from the builtin a caller would already catch::

    ResumableError (Exception)
    ├── CorruptCheckpointError (ValueError)    snapshots exist, none verifies
    │   ├── SignatureError                     unsigned or wrongly signed, with a key set
    │   └── UnsafeArchiveError                 a directory snapshot would escape its folder
    ├── UnsafeSymlinkError (ValueError)        a folder to save links outside itself
    ├── UnsupportedDataError (TypeError)       save() got something it cannot store
    ├── SourceNotFoundError (FileNotFoundError) save() got a path that does not exist
    ├── ConcurrentWriterError (FileExistsError) another writer committed the same snapshot
    ├── StorageError (OSError)                 the store kept failing, or timed out
    ├── ConfigurationError (ValueError)        a bad argument to resumable() or Checkpoint()
    ├── StateError (TypeError)                 state that cannot be pickled or injected
    ├── NoTaskContextError (RuntimeError)      ctx() called outside a resumable task
    └── Preempted (RuntimeError)               the process was asked to stop (SIGTERM)

Example:
    >>> from resumable import ResumableError, CorruptCheckpointError
    >>> issubclass(CorruptCheckpointError, ValueError)
    True

"""

from __future__ import annotations

__all__ = [
    "ConcurrentWriterError",
    "ConfigurationError",
    "CorruptCheckpointError",
    "NoTaskContextError",
    "Preempted",
    "ResumableError",
    "SignatureError",
    "SourceNotFoundError",
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
    """


class UnsafeArchiveError(CorruptCheckpointError):
    """A directory snapshot holds a member that would land outside its folder.

    Absolute paths, ``..``, links pointing outside, devices and fifos, and archives over the
    size or entry limits are refused before anything is written.
    """


class SignatureError(CorruptCheckpointError):
    """A signing key is set and a snapshot is unsigned or signed with another key.

    The snapshot is refused before anything in it is unpickled or extracted.
    """


class UnsafeSymlinkError(ResumableError, ValueError):
    """A folder given to ``save`` holds a symbolic link that points outside it."""


class UnsupportedDataError(ResumableError, TypeError):
    """``save`` was given a value that is neither bytes nor a path."""


class SourceNotFoundError(ResumableError, FileNotFoundError):
    """``save`` was given a path that does not exist."""


class ConcurrentWriterError(ResumableError, FileExistsError):
    """Another writer committed the same snapshot sequence number first.

    Two processes are running the same task against the same key. The loser's snapshot is
    discarded; the winner's stays intact.
    """


class StorageError(ResumableError, OSError):
    """The store failed, kept failing after retries, or did not answer in time."""


class ConfigurationError(ResumableError, ValueError):
    """An argument given to ``resumable()`` or ``Checkpoint()`` is not valid."""


class StateError(ResumableError, TypeError):
    """Task state could not be pickled, unpickled or injected."""


class NoTaskContextError(ResumableError, RuntimeError):
    """``ctx()`` was called outside a function decorated with ``@resumable``."""


class Preempted(ResumableError, RuntimeError):
    """The process was asked to stop; the last snapshot is saved, and a new process resumes."""
