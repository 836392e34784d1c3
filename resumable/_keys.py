"""Pure key derivation: the same call gives the same key in any process, on any machine."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import hashlib
import inspect
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

from ._errors import ConfigurationError, StateError

__all__ = [
    "PINNED",
    "ROOT_KEY",
    "call_arguments",
    "call_key",
    "check_key",
    "key_parts",
    "main_module_name",
    "pin_task_name",
    "task_name",
]

#: The key that names a store's root itself (``resumable`` command): a ``Checkpoint(url)``
#: keeps its snapshots there.
ROOT_KEY = "."
#: Longest path segment most filesystems and object-store tools accept, in bytes.
_MAX_SEGMENT = 255

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KEY = re.compile(r"[A-Za-z0-9._=+@,/-]+")


#: The attribute a decorated function carries its pinned task name in (see pin_task_name).
PINNED = "__resumable_task_name__"


def main_module_name(module: ModuleType) -> str:
    """The name a ``__main__`` module would have when imported, not ``"__main__"``.

    - ``python -m pkg.mod``: ``pkg.mod``, from ``__spec__.name``;
    - ``python path/to/jobs.py``: ``jobs``, the file's stem, preceded by the names of the
      enclosing package folders (those with an ``__init__.py``): ``python pkg/jobs.py``
      gives ``pkg.jobs``. Never the folder the script is in, so the same script gives the
      same name from any folder, on any machine;
    - no file (an interactive session, ``python -c``): ``"__main__"``.
    """
    spec = getattr(module, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name not in ("__main__", "__mp_main__"):
        return name
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return "__main__"
    path = Path(file).absolute()
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def _module_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "unknown"
    if module in ("__main__", "__mp_main__") and module in sys.modules:
        return main_module_name(sys.modules[module])
    return str(module)


def task_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` made safe as a path segment (``<locals>`` becomes ``_locals_``).

    The module of a function defined in the script being run is named as that script would
    be when imported (:func:`main_module_name`), so ``python jobs.py`` and a worker that
    imports ``jobs`` give the same name. A name pinned by :func:`pin_task_name` wins.
    """
    pinned = getattr(fn, PINNED, None)
    if isinstance(pinned, str):
        return pinned
    name = f"{_module_name(fn)}.{fn.__qualname__}"
    return _UNSAFE.sub("_", name).strip(".") or "task"


def pin_task_name(fn: Callable[..., Any]) -> None:
    """Record ``fn``'s task name on it, when it is defined in the script being run.

    A ``__main__`` function shipped by value to another process (cloudpickle keeps its
    attributes) then keeps the name it has in the process that defined it, not one derived
    from the worker's own ``__main__``. Functions of importable modules need nothing.
    """
    if getattr(fn, "__module__", None) not in ("__main__", "__mp_main__"):
        return
    if isinstance(getattr(fn, PINNED, None), str):
        return  # already pinned, in the process that defined it
    with contextlib.suppress(AttributeError, TypeError):  # objects without a __dict__
        setattr(fn, PINNED, task_name(fn))


def check_key(key: str) -> str:
    """The key without outer slashes; ``ConfigurationError`` for one that is not a clean path.

    The one definition of a valid task key: a relative path inside the store whose segments
    use a small safe alphabet, none of them empty, ``.``, ``..`` or over 255 bytes.

    Example:
        >>> check_key("proj/exp/run-1/")
        'proj/exp/run-1'

    """
    if not isinstance(key, str) or not key.strip("/"):
        raise ConfigurationError(f"key must be a non-empty string, got {key!r}")
    parts = key.strip("/").split("/")
    # Anything else may mean something to fsspec or to a store ("::" chains filesystems).
    if any(p in ("", ".", "..") for p in parts) or not _KEY.fullmatch(key):
        raise ConfigurationError(
            f"invalid task key {key!r}: not a clean relative path inside the store; use "
            "letters, digits, '.', '-', '_', '=', '+', '@', ',' and '/' between segments"
        )
    if any(len(p.encode()) > _MAX_SEGMENT for p in parts):
        raise ConfigurationError(
            f"key {key[:60]!r}... has a segment over {_MAX_SEGMENT} bytes, longer than stores "
            "accept as a name: pass a shorter key= (or split it with '/')"
        )
    return key.strip("/")


def key_parts(key: str) -> list[str]:
    """The folder names of ``key`` under its store; none for :data:`ROOT_KEY`.

    Example:
        >>> key_parts("a/b"), key_parts(ROOT_KEY)
        (['a', 'b'], [])

    """
    if key == ROOT_KEY:
        return []
    return check_key(key).split("/")


#: The one rule for what may be part of a derived key, in :func:`_canonical`'s order:
#: plain values, NumPy scalars (by their Python value), a few library types by their
#: documented string form, and lists, tuples, sets, dicts and dataclasses of these. Anything
#: else (an array, a tensor, a model, a lock) has no value that is equal across processes
#: exactly when it is equal here, and is refused with a ``StateError`` that says to pass
#: ``key=``. The forms of values accepted before must never change: they are in stored keys.
_ALLOWED = (
    "None, bool, int, float, str, bytes, enums, paths, dates, times, timedeltas, Decimal, "
    "UUID, NumPy scalars and dtypes, torch.device and torch.dtype, and lists, tuples, sets, "
    "dicts and dataclasses of these"
)

#: Types whose ``str()`` is stable and documented, keyed by ``module.qualname`` (so that
#: checking them imports nothing), tagged so that ``torch.device("cpu")`` is not ``"cpu"``.
_BY_STRING = frozenset({"torch.device", "torch.dtype"})


def _plain(value: Any, where: str) -> Any:
    return value


def _sequence(value: list[Any] | tuple[Any, ...], where: str) -> Any:
    return {type(value).__name__: [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]}


def _set(value: set[Any] | frozenset[Any], where: str) -> Any:
    items = [_canonical(v, f"{where} item") for v in value]
    # Sets iterate in hash order, which differs between processes (PYTHONHASHSEED).
    return {"set": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}


def _mapping(value: Mapping[Any, Any], where: str) -> Any:
    pairs = [
        [_canonical(k, f"{where} key"), _canonical(v, f"{where}[{k!r}]")] for k, v in value.items()
    ]
    # Sorted by key: equal dicts built in any insertion order get one form.
    return {"map": sorted(pairs, key=lambda kv: json.dumps(kv[0], sort_keys=True))}


#: (types, canonical form), first match wins: ``bool`` before ``int``, and ``int`` before
#: ``enum.Enum`` (an ``IntEnum`` member has always been keyed as its int).
_RULES: tuple[tuple[type | tuple[type, ...], Callable[[Any, str], Any]], ...] = (
    ((type(None), bool, str), _plain),
    (int, lambda v, _: {"int": str(v)}),
    (float, lambda v, _: {"float": v.hex()}),
    ((bytes, bytearray), lambda v, _: {"bytes": bytes(v).hex()}),
    (enum.Enum, lambda v, _: {"enum": f"{type(v).__qualname__}.{v.name}"}),
    (PurePath, lambda v, _: {"path": os.fspath(v)}),
    (
        (datetime.date, datetime.time, datetime.timedelta, Decimal, uuid.UUID),
        lambda v, _: {type(v).__name__: str(v)},
    ),
    ((list, tuple), _sequence),
    ((set, frozenset), _set),
    (Mapping, _mapping),
)


def _canonical(value: Any, where: str) -> Any:
    """A JSON-able form of ``value`` that is equal across processes exactly when values are.

    Example:
        >>> _canonical([3, "a", None], "arguments")
        {'list': [{'int': '3'}, 'a', None]}

    """
    for types, form in _RULES:
        if isinstance(value, types):
            return form(value, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {type(value).__qualname__: _canonical(fields, where)}
    return _library_value(value, where)


def _library_value(value: Any, where: str) -> Any:
    """The form of a NumPy or torch value the key rule accepts; ``StateError`` for others.

    A NumPy scalar is keyed as its Python value (``.item()``), so ``np.int64(3)`` and ``3``
    give one key, as ``np.float64(0.5)`` (a ``float``) and ``0.5`` always have. Neither
    library is imported here: a value of theirs means the caller has imported them.
    """
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        item = value.item()
        # np.longdouble's item is itself; a complex is no key: refused as the NumPy type.
        if not isinstance(item, numpy.generic):
            with contextlib.suppress(StateError):
                return _canonical(item, where)
    if numpy is not None and isinstance(value, numpy.dtype):
        return {"numpy.dtype": str(value)}
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    if name in _BY_STRING:
        return {name: str(value)}
    raise StateError(
        f"cannot derive a checkpoint key from {where}, of type {name}: keys are "
        f'derived from {_ALLOWED}. Pass key= to @resumable: a string such as key="train/v2", '
        "or a callable of the arguments that returns one."
    )


def call_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], skip: str
) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults included, leaving out ``skip``.

    Example:
        >>> call_arguments(lambda a, b=2, state=None: None, (1,), {}, "state")
        {'a': 1, 'b': 2}

    """
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{fn.__qualname__}(): {exc}") from exc
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != skip}


def call_key(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], skip: str
) -> str:
    """``<module.qualname>-<digest of the arguments>``, leaving out the parameter ``skip``."""
    arguments = call_arguments(fn, args, kwargs, skip)
    text = json.dumps(_canonical(arguments, "arguments"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{task_name(fn)}-{digest}"
