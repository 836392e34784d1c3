"""The public surface: __all__ is pinned and sorted, and every error subclasses a builtin."""

from __future__ import annotations

import resumable
from resumable import _errors

EXPECTED = [
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


def test_all_is_pinned_and_sorted() -> None:
    """__all__ lists exactly the public names, sorted."""
    assert resumable.__all__ == EXPECTED
    assert sorted(resumable.__all__) == resumable.__all__
    for name in resumable.__all__:
        assert hasattr(resumable, name)


def test_every_error_is_a_resumable_error_and_a_builtin() -> None:
    """Each exception derives from ResumableError and from a builtin users already catch."""
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        assert issubclass(cls, resumable.ResumableError)
        if cls is not resumable.ResumableError:
            bases = [b for b in cls.__mro__[1:] if b.__module__ == "builtins"]
            assert set(bases) - {Exception, BaseException, object}, name


def test_public_objects_have_docstrings() -> None:
    """Every public object is documented."""
    for name in resumable.__all__:
        if name != "__version__":
            assert getattr(resumable, name).__doc__, name
