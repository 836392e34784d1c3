"""The trap of iterating over a generator task's call: an error that says what happened.

A ``@resumable`` generator task is driven by the decorator: its call runs the generator to
its end (each ``yield`` a snapshot) and returns what the generator returns. Code that loops
over the call (``for step in train(): ...``) gets a ``TypeError`` from Python that names
``NoneType``; :func:`caller_iterates` tells that this is what the caller is doing (from its
next bytecode instruction) and :func:`not_an_iterator` is the error that says why.
"""

from __future__ import annotations

import dis
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["ASYNC_ITERATION", "caller_iterates", "iterable", "not_an_iterator"]

#: Opcodes that iterate over the value just computed: a ``for``, a comprehension, ``yield
#: from``, unpacking.
_ITERATION = frozenset({"GET_ITER", "GET_YIELD_FROM_ITER", "UNPACK_SEQUENCE", "UNPACK_EX"})
ASYNC_ITERATION = frozenset({"GET_AITER"})


def iterable(value: object) -> bool:
    """Whether ``value`` can be iterated over."""
    return hasattr(type(value), "__iter__") or hasattr(type(value), "__getitem__")


def caller_iterates(opcodes: frozenset[str] = _ITERATION) -> bool:
    """Whether the code that called the task iterates over the call's value right away.

    Read from the caller's next instruction (``for step in train(): ...``), past the frames
    of the wrapper; only ever used to replace an error Python would raise anyway.
    """
    frame = inspect.currentframe()
    while frame is not None and str(frame.f_globals.get("__name__", "")).partition(".")[0] in (
        "resumable",
        "wrapt",
    ):
        frame = frame.f_back
    if frame is None:
        return False
    after = (i.opname for i in dis.get_instructions(frame.f_code) if i.offset > frame.f_lasti)
    return next(after, None) in opcodes


def not_an_iterator(fn: Callable[..., Any], *, asynchronous: bool) -> TypeError:
    # A TypeError like the one Python would raise here, saying why: a decorated generator
    # is driven by the decorator, and its call returns what the generator returns.
    name = getattr(fn, "__qualname__", repr(fn))
    if asynchronous:
        short = getattr(fn, "__name__", name)
        return TypeError(
            f"{name}() is a @resumable async generator task, not an async iterator: awaiting "
            f"the call runs the generator to its end (each yield a snapshot) and returns the "
            f"last value it yielded. Write `last = await {short}(...)`."
        )
    return TypeError(
        f"{name}() is a @resumable generator task: the call ran the generator to its end "
        "(each yield a snapshot) and returned what the generator returned, which cannot be "
        "iterated over. It is not a generator to loop over: return the values the caller "
        "needs from the generator (`return results`), or call it without iterating."
    )
