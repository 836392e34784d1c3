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

from typing import get_type_hints as _get_type_hints

from ._archive import Limits
from ._checkpoint import Captured, Checkpoint, CheckpointInfo
from ._context import AttemptNumber, TaskContext, ctx
from ._decorator import TaskDecorator, resumable
from ._errors import (
    ConcurrentWriterError,
    ConfigurationError,
    CorruptCheckpointError,
    DeadlineExceeded,
    NonRetryableError,
    NoTaskContextError,
    Preempted,
    ResumableError,
    SignatureError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceUnreadableError,
    StateError,
    StorageError,
    UnsafeArchiveError,
    UnsafeSymlinkError,
    UnsupportedDataError,
)
from ._latest import latest_checkpoint
from ._options import Dir, Storage
from ._preempt import request_stop
from ._retry import RetryPolicy
from ._version import VERSION as __version__

__all__ = [
    "AttemptNumber",
    "Captured",
    "Checkpoint",
    "CheckpointInfo",
    "ConcurrentWriterError",
    "ConfigurationError",
    "CorruptCheckpointError",
    "DeadlineExceeded",
    "Dir",
    "Limits",
    "NoTaskContextError",
    "NonRetryableError",
    "Preempted",
    "ResumableError",
    "RetryPolicy",
    "SignatureError",
    "SourceNotFoundError",
    "SourcePermissionError",
    "SourceUnreadableError",
    "StateError",
    "Storage",
    "StorageError",
    "TaskContext",
    "TaskDecorator",
    "UnsafeArchiveError",
    "UnsafeSymlinkError",
    "UnsupportedDataError",
    "__version__",
    "ctx",
    "latest_checkpoint",
    "request_stop",
    "resumable",
]


def _report_as_public(name: str) -> None:
    # Public names say where users import them from (``resumable.Checkpoint``, not
    # ``resumable._checkpoint.Checkpoint``): in reprs, tracebacks and docs, and in pickles,
    # which then do not depend on the private module layout.
    obj = globals()[name]
    if not callable(obj):
        return
    if isinstance(obj, type) and "__annotations__" in vars(obj):
        # typing.get_type_hints() evaluates a class's string annotations in the namespace of
        # its __module__; evaluate them now, where they were written, so that it still can.
        hints = _get_type_hints(obj, include_extras=True)
        obj.__annotations__ = {key: hints[key] for key in vars(obj)["__annotations__"]}
    obj.__module__ = __name__


for _name in __all__:
    _report_as_public(_name)
del _name, _report_as_public
