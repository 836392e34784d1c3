"""The public surface: __all__, names that report as resumable.X, errors that pickle."""

from __future__ import annotations

import inspect
import pickle
import traceback
import typing
from collections.abc import Callable, Iterator

import pytest

import resumable
from resumable import _errors

EXPECTED = [
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


def test_all_is_pinned_and_sorted() -> None:
    """__all__ lists exactly the public names, sorted."""
    assert resumable.__all__ == EXPECTED
    assert sorted(resumable.__all__) == resumable.__all__
    for name in resumable.__all__:
        assert hasattr(resumable, name)


def test_every_error_is_a_resumable_error_and_a_builtin() -> None:
    """Each exception derives from ResumableError and from a builtin users already catch.

    NonRetryableError is the exception: a marker a task raises for any kind of failure.
    """
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        assert issubclass(cls, resumable.ResumableError)
        if cls not in (resumable.ResumableError, resumable.NonRetryableError):
            bases = [b for b in cls.__mro__[1:] if b.__module__ == "builtins"]
            assert set(bases) - {Exception, BaseException, object}, name


def test_public_objects_have_docstrings() -> None:
    """Every public object is documented."""
    for name in resumable.__all__:
        if name != "__version__":
            assert getattr(resumable, name).__doc__, name


PUBLIC_OBJECTS = [name for name in EXPECTED if name != "__version__"]


@pytest.mark.parametrize("name", PUBLIC_OBJECTS)
def test_public_names_report_as_resumable(name: str) -> None:
    """Every public class and function says it is resumable.X, and pickles by that name."""
    obj = getattr(resumable, name)
    assert obj.__module__ == "resumable"
    assert pickle.loads(pickle.dumps(obj)) is obj


@pytest.mark.parametrize(
    "name", [n for n in PUBLIC_OBJECTS if isinstance(getattr(resumable, n), type)]
)
def test_type_hints_of_public_classes_still_resolve(name: str) -> None:
    """typing.get_type_hints works on public classes although __module__ was changed."""
    cls = getattr(resumable, name)
    hints = typing.get_type_hints(cls)
    assert all(not isinstance(h, str) for h in hints.values())


def test_dataclass_values_pickle_round_trip() -> None:
    """Public value types pickle by their public name and come back equal."""
    for value in [
        resumable.Dir("out"),
        resumable.Limits(max_entries=3),
        resumable.Storage(keep=3, compression="none"),
    ]:
        assert pickle.loads(pickle.dumps(value)) == value
    policy = pickle.loads(pickle.dumps(resumable.RetryPolicy(attempts=3, timeout=5.0)))
    assert type(policy) is resumable.RetryPolicy
    assert (policy.attempts, policy.timeout) == (3, 5.0)


#: Names only type checkers know (imported under TYPE_CHECKING from typeshed's stub-only
#: ``_typeshed``, the standard library's own protocols): stand-ins that say where they live.
_STUB_ONLY = {
    "SupportsRichComparison": type("SupportsRichComparison", (), {"__module__": "_typeshed"})
}
_PUBLIC_STUB_MODULES = {"_typeshed", "builtins"}


def _classes_in(hint: object) -> Iterator[type]:
    """Every class a type hint names, through unions, generics and ``Callable``."""
    if isinstance(hint, type):
        yield hint
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin
    for arg in typing.get_args(hint):
        for item in arg if isinstance(arg, list) else [arg]:
            yield from _classes_in(item)


def _public_callables() -> Iterator[tuple[str, Callable[..., object]]]:
    """The public functions, and the public methods (constructors included) of public classes."""
    for name in resumable.__all__:
        obj = getattr(resumable, name)
        if not isinstance(obj, type):
            if callable(obj):
                yield name, obj
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if isinstance(member, property):
                member = member.fget
            if isinstance(member, staticmethod | classmethod):
                member = member.__func__
            if callable(member):
                yield f"{name}.{attr}", member


def test_public_signatures_name_only_public_types() -> None:
    """Every class a public signature names is importable from a public module.

    Its ``__module__`` is ``resumable``, a public submodule, or another package's public
    module (``pathlib``, ``fsspec.callbacks``, ``tenacity.wait``), never a private one.
    """
    private = [f"{where}: {n}" for where, fn in _public_callables() for n in _private_types(fn)]
    assert private == []


def _private_types(fn: Callable[..., object]) -> list[str]:
    """The classes of private modules that ``fn``'s signature names."""
    hints = typing.get_type_hints(fn, localns={**vars(resumable), **_STUB_ONLY})
    found = []
    for cls in {c for hint in hints.values() for c in _classes_in(hint)}:
        module = cls.__module__
        if module not in _PUBLIC_STUB_MODULES and any(p.startswith("_") for p in module.split(".")):
            found.append(f"{module}.{cls.__qualname__}")
    return sorted(found)


def test_the_walk_catches_a_private_type() -> None:
    """A signature naming a class of a private module is reported, however deeply nested."""
    from resumable._options import Spec

    def leaky(spec: dict[str, list[Spec | None]]) -> resumable.Storage:
        return resumable.Storage()

    leaky.__annotations__ = {"spec": dict[str, list[Spec | None]], "return": resumable.Storage}
    assert _private_types(leaky) == ["resumable._options.Spec"]


def test_the_walk_sees_methods_and_constructors() -> None:
    """The signature walk covers what it claims: constructors, methods and properties."""
    seen = dict(_public_callables())
    assert {"Checkpoint.__init__", "Checkpoint.read_newest_state", "resumable"} <= set(seen)
    assert {"Storage.__init__", "TaskContext.attempt_number"} <= set(seen)
    assert inspect.signature(seen["Checkpoint.commit"]).return_annotation is not None


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, OSError):
        return cls(2, f"{cls.__name__} message", "some/path")
    return cls(f"{cls.__name__} message")


@pytest.mark.parametrize("name", _errors.__all__)
def test_errors_pickle_round_trip(name: str) -> None:
    """Each error pickles and unpickles to the same type, message and OSError fields."""
    error = _instance(getattr(resumable, name))
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert back.args == error.args
    assert str(back) == str(error)
    if isinstance(error, OSError):
        assert isinstance(back, OSError)
        assert (back.errno, back.filename) == (error.errno, error.filename)


def test_traceback_names_the_public_module() -> None:
    """A raised error is printed as resumable.X, the name to import and catch."""
    line = traceback.format_exception_only(resumable.StorageError("disk gone"))[-1]
    assert line == "resumable.StorageError: disk gone\n"
