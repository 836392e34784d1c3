"""Decorated tasks that pickle, so engines and process pools can ship them to workers.

A task pickles the way Dask and Ray ship plain functions:

- **by reference** when it is importable: ``import_module(module)`` followed by the
  attributes of its qualified name finds this very object (module-level functions, and
  methods, classmethods and staticmethods of importable classes);
- **by value** otherwise (functions defined in ``__main__`` or inside another function): its
  options and the undecorated function, pickled with cloudpickle, and decorated again when
  loaded.

A task is a function to ``inspect`` (``inspect.isfunction`` is true, as engines such as Ray
require). cloudpickle ships a function that is not importable by value, from its code,
globals and closure: for a task those are a small trampoline's, whose closure holds the
task's options and undecorated function, so the worker gets a function that rebuilds the
same task (same key, store and options) and calls it.

A bound method (``model.fit``) pickles as its instance, its class and the unbound task. Keys
do not depend on the process: ``__main__`` tasks pin their name when they are decorated
(``_keys.pin_task_name``), and cloudpickle carries it with the function.
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections.abc import Callable
from typing import Any, Protocol

import cloudpickle
import wrapt

__all__ = ["BoundTask", "Task", "bind_task", "load_task", "rebuild_task"]


class Decorates(Protocol):
    """What a task needs of its options to be rebuilt: the ``_Spec`` of ``@resumable``."""

    def decorate(self, fn: Any) -> Any:
        """``fn`` decorated with these options."""
        ...


def load_task(module: str, qualname: str) -> Any:
    """The object named ``qualname`` in ``module``; a class's own entry for the last part.

    Reading the class's ``__dict__`` returns the task itself, not a method bound by the
    attribute access, so a task loaded by reference is the very object that was pickled.
    """
    owner: Any = importlib.import_module(module)
    *path, last = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    if inspect.isclass(owner) and last in vars(owner):
        return vars(owner)[last]
    return getattr(owner, last)


def rebuild_task(pickled: bytes) -> Any:
    """A task pickled by value: its options and the undecorated function, decorated again."""
    spec, fn = cloudpickle.loads(pickled)
    return spec.decorate(fn)


def bind_task(task: Any, instance: Any, owner: Any) -> Any:
    """``task`` bound again to ``instance`` (or to ``owner``, for classmethods)."""
    return task.__get__(instance, owner)


def _importable(task: object, module: str | None, qualname: str | None) -> bool:
    """Whether importing ``module`` and walking ``qualname`` finds ``task`` itself."""
    if not module or not qualname or module in ("__main__", "__mp_main__"):
        return False
    if "<locals>" in qualname:
        return False
    try:
        return load_task(module, qualname) is task
    except Exception:  # not importable here: then not elsewhere either
        return False


class _TaskRef:
    """What a task's trampoline calls: the task, pickled as its options and function."""

    __slots__ = ("source", "spec", "task")

    def __init__(self, spec: Decorates, source: Any, task: Any) -> None:
        self.spec, self.source, self.task = spec, source, task

    def __reduce__(self) -> tuple[Any, ...]:
        # Never the task itself: inside the trampoline's own pickle it would come back as
        # the trampoline, which would then call itself.
        return _rebuild_ref, (cloudpickle.dumps((self.spec, self.source)),)


def _rebuild_ref(pickled: bytes) -> _TaskRef:
    spec, source = cloudpickle.loads(pickled)
    return _TaskRef(spec, source, spec.decorate(source))


def _trampoline(ref: _TaskRef, is_async: bool) -> Callable[..., Any]:
    """A plain function that calls ``ref.task``: what cloudpickle copies for a task."""
    if is_async:

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await ref.task(*args, **kwargs)

        return call_async

    def call(*args: Any, **kwargs: Any) -> Any:
        return ref.task(*args, **kwargs)

    return call


def _own_class(proxy: Any) -> type[Any]:
    """``__class__`` of a task: its own class where wrapt would say ``function``.

    To cloudpickle, a proxy that says it is a function is pickled as that bare function, by
    value, losing the decoration; any other ``__class__`` (``classmethod``, a bound
    ``method``) sends it to the proxy's ``__reduce_ex__``, and is kept, so ``inspect`` still
    finds bound methods' ``__func__``.
    """
    forwarded: type[Any] = proxy.__wrapped__.__class__
    return type(proxy) if issubclass(forwarded, types.FunctionType) else forwarded


class BoundTask(wrapt.BoundFunctionWrapper[..., Any]):
    """A task bound to an instance or a class (``model.fit``, ``Model.make``)."""

    __class__ = property(_own_class)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return bind_task, (self._self_parent, self._self_instance, self._self_owner)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__reduce_ex__(2)

    def __copy__(self) -> BoundTask:
        return self

    def __deepcopy__(self, memo: Any) -> BoundTask:
        return self


class Task(wrapt.FunctionWrapper[..., Any]):
    """A decorated task: a ``wrapt.FunctionWrapper`` that pickles (see the module's doc).

    A function to ``inspect`` (``function`` as ``__class__``; a task defined in a class body
    reports its own class, see ``_inspected_class``), with the calling convention's code
    flags, its signature and name; cloudpickle's by-value path copies the trampoline.
    """

    __bound_function_wrapper__ = BoundTask

    def __init__(
        self,
        wrapped: Any,
        wrapper: Callable[..., Any],
        *,
        spec: Decorates,
        source: Any,
    ) -> None:
        super().__init__(wrapped, wrapper)
        self._self_spec = spec
        self._self_source = source  # the undecorated function, classmethod or staticmethod
        ref = _TaskRef(spec, source, self)
        self._self_trampoline = _trampoline(ref, inspect.iscoroutinefunction(wrapped))
        # Defined in a class body ("Model.fit", not "f.<locals>.g"): a method, which must
        # keep its binding when shipped, so it never goes through the trampoline.
        parts = str(getattr(wrapped, "__qualname__", "")).split(".")
        self._self_method = len(parts) > 1 and parts[-2] != "<locals>"

    def _inspected_class(self) -> type[Any]:
        # A function to inspect and to engines (Ray requires one), except a method, which
        # reports its own class so that cloudpickle hands it to __reduce_ex__.
        forwarded: type[Any] = self.__wrapped__.__class__
        if self._self_method and issubclass(forwarded, types.FunctionType):
            return type(self)
        return forwarded

    __class__ = property(_inspected_class)

    def _shipped(self) -> Any:
        return self.__wrapped__ if self._self_method else self._self_trampoline

    # What cloudpickle's by-value path copies for a function: the trampoline's parts.
    @property
    def __code__(self) -> types.CodeType:
        code: types.CodeType = self._shipped().__code__
        return code

    @property
    def __closure__(self) -> Any:
        return self._shipped().__closure__

    @property
    def __globals__(self) -> dict[str, Any]:
        found: dict[str, Any] = self._shipped().__globals__
        return found

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        module = getattr(self, "__module__", None)
        qualname = getattr(self, "__qualname__", None)
        if _importable(self, module, qualname):
            return load_task, (module, qualname)
        return rebuild_task, (cloudpickle.dumps((self._self_spec, self._self_source)),)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Task:
        return self

    def __deepcopy__(self, memo: Any) -> Task:
        return self
