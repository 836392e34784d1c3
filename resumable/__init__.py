"""resumable: long Python tasks that resume from their last snapshot.

Example:
    >>> import tempfile
    >>> from resumable import Checkpoint
    >>> with Checkpoint(tempfile.mkdtemp()) as cp:
    ...     cp.save_sync(b"42")
    ...     (cp.load_sync() / "payload").read_bytes()
    b'42'

"""

from __future__ import annotations

from ._checkpoint import Checkpoint
from ._codec import Limits
from ._context import TaskContext, ctx
from ._decorator import Dir, resumable
from ._errors import (
    ConcurrentWriterError,
    ConfigurationError,
    CorruptCheckpointError,
    NoTaskContextError,
    Preempted,
    ResumableError,
    SignatureError,
    SourceNotFoundError,
    StateError,
    StorageError,
    UnsafeArchiveError,
    UnsafeSymlinkError,
    UnsupportedDataError,
)
from ._latest import latest_checkpoint
from ._retry import RetryPolicy
from ._version import VERSION as __version__

__all__ = [
    "Checkpoint",
    "ConcurrentWriterError",
    "ConfigurationError",
    "CorruptCheckpointError",
    "Dir",
    "Limits",
    "NoTaskContextError",
    "Preempted",
    "ResumableError",
    "RetryPolicy",
    "SignatureError",
    "SourceNotFoundError",
    "StateError",
    "StorageError",
    "TaskContext",
    "UnsafeArchiveError",
    "UnsafeSymlinkError",
    "UnsupportedDataError",
    "__version__",
    "ctx",
    "latest_checkpoint",
    "resumable",
]
