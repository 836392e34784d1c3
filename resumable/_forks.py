"""After ``fork``: the one place that resets what a child must not inherit.

A forked child has only the thread that called ``fork``. Every lock another thread held stays
held, every pool believes its workers exist, and native pools (the Rust threads BLAKE3 hashes
on) hang the first time they are used. So each object or module that owns threads or locks
registers here once, and one ``os.register_at_fork`` hook resets them all in the child, as
CPython's ``logging`` does for its handlers.

- :func:`at_fork` registers a module-level reset function (kept for the life of the process);
- :func:`track` registers an object whose ``_after_fork()`` method resets it (held weakly:
  an object that is gone is simply skipped).

Example (a registry of its own; the module's one is reset only in a forked child):
    >>> class Pool:
    ...     def __init__(self) -> None:
    ...         self.workers = ["w1"]
    ...
    ...     def _after_fork(self) -> None:
    ...         self.workers = []
    >>> registry = _Registry()
    >>> pool = Pool()
    >>> registry.objects.add(pool)
    >>> registry.reset()  # what a fork runs in the child
    >>> pool.workers
    []

"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Resettable", "at_fork", "forked", "track"]


class Resettable(Protocol):
    """An object that owns threads or locks and can start afresh in a forked child."""

    def _after_fork(self) -> None:
        """Drop what the parent's threads held: locks, pools, queues."""


class _Registry:
    """What a forked child resets: module functions, then live objects."""

    def __init__(self) -> None:
        self.functions: list[Callable[[], None]] = []
        self.objects: weakref.WeakSet[Resettable] = weakref.WeakSet()

    def reset(self) -> None:
        for fn in list(self.functions):
            fn()
        for obj in list(self.objects):
            obj._after_fork()


_registry = _Registry()
_forked = False


def at_fork(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` in every forked child (registration order); usable as a decorator."""
    _registry.functions.append(fn)
    return fn


def track(obj: Resettable) -> None:
    """Call ``obj._after_fork()`` in every forked child while ``obj`` lives."""
    _registry.objects.add(obj)


def forked() -> bool:
    """Whether this process is a forked child of a process that imported the library."""
    return _forked


def _reset_in_child() -> None:
    global _forked
    _forked = True
    _registry.reset()


os.register_at_fork(after_in_child=_reset_in_child)
