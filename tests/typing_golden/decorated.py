"""Revealed types of decorated tasks, pinned by tests/project/test_typing.py; never run.

Only definitions run on import (pytest imports every module for its doctests): the checks
live in functions that nothing calls.

Every ``reveal_type`` and every error line here is compared with ``decorated.mypy.out`` (and
``decorated.pyright.out``). The errors are the point of the negative cases, which is why
this file lives outside ``tests/typing``, the folder CI type-checks expecting no errors.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any, reveal_type

from resumable import Dir, resumable

# -- generators: the call returns the generator's return value ---------------------------


@resumable(state=0)
def counter(n: int, state: int = 0) -> Generator[int, None, str]:
    yield from range(state, n)
    return "done"


@resumable(state=0)
def steps(n: int, state: int = 0) -> Iterator[int]:
    yield from range(state, n)


@resumable(state={})
def with_any(n: int, state: dict[str, Any] | None = None) -> Generator[dict[str, Any], None, int]:
    yield {"n": n}
    return n


@resumable(state={})
def iter_any(n: int, state: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    yield {"n": n}


@resumable(state=0)
def any_param(config: Any, state: int = 0) -> Generator[int, None, float]:
    yield state
    return 0.5


@resumable(state=Dir("outputs"))
def train(epochs: int, state: Path | None = None) -> Iterator[None]:
    yield


def generators() -> None:
    reveal_type(counter)
    reveal_type(counter(3))
    reveal_type(steps)
    reveal_type(steps(3))
    reveal_type(with_any)
    reveal_type(iter_any)
    reveal_type(any_param)
    reveal_type(train)


# -- async generators: the call is awaitable, and gives the last state -------------------


@resumable(state=0)
async def acounter(n: int, state: int = 0) -> AsyncGenerator[int, None]:
    yield n


@resumable(state=0)
async def asteps(n: int, state: int = 0) -> AsyncIterator[int]:
    yield n


@resumable(state={})
async def asteps_any(n: Any, state: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
    yield {}


@resumable(state={})
async def agen_any(n: int, state: dict[str, Any] | None = None) -> AsyncGenerator[Any, None]:
    yield {}  # mypy limitation: Any in an AsyncGenerator annotation; AsyncIterator works


# -- coroutines and plain functions: unchanged ------------------------------------------


@resumable(state=0)
async def coro(n: int, state: int = 0) -> float:
    return n / 2


@resumable(state=0)
def plain(n: int, state: int = 0) -> bytes:
    return b"x" * n


@resumable()
def plain_any(n: Any) -> list[Any]:
    return [n]


@resumable()
def returns_iterator(words: list[str]) -> Iterator[str]:
    return iter(words)  # typed as a generator task: types cannot tell them apart


def others() -> None:
    reveal_type(acounter)
    reveal_type(asteps)
    reveal_type(asteps_any)
    reveal_type(agen_any)
    reveal_type(coro)
    reveal_type(plain)
    reveal_type(plain_any)
    reveal_type(returns_iterator)


async def awaited() -> None:
    reveal_type(await acounter(3))
    reveal_type(await asteps(3))
    reveal_type(await coro(3))


# -- methods: self is bound as for any method -------------------------------------------


class Trainer:
    @resumable(state=0)
    def fit(self, epochs: int, state: int = 0) -> Generator[int, None, float]:
        yield epochs
        return 0.1

    @resumable(state=0)
    def batches(self, size: int, state: int = 0) -> Iterator[int]:
        yield size

    @resumable(state=0)
    async def afit(self, epochs: int, state: int = 0) -> AsyncIterator[int]:
        yield epochs

    @resumable(state=0)
    async def evaluate(self, split: str, state: int = 0) -> dict[str, float]:
        return {split: 1.0}

    @classmethod
    @resumable(state=0)
    def warmup(cls, steps: int, state: int = 0) -> Generator[int, None, str]:
        yield steps
        return "warm"

    @staticmethod
    @resumable(state=0)
    def export(path: str, state: int = 0) -> Iterator[int]:
        yield 0


def methods() -> None:
    reveal_type(Trainer().fit)
    reveal_type(Trainer().fit(3))
    reveal_type(Trainer().batches)
    reveal_type(Trainer().afit)
    reveal_type(Trainer().evaluate)
    reveal_type(Trainer.warmup)
    reveal_type(Trainer.export)


# -- negative cases: each line must be an error ----------------------------------------


def negative_calls() -> None:
    counter("three")
    counter(3, unknown=1)
    steps()
    print(plain(1) + 1)
    Trainer().fit("three")
    Trainer.warmup(steps=None)


async def negative_awaits() -> None:
    await acounter("three")
    await coro(n="half")
    await counter(3)
    await steps(3)
    last: str = await asteps(3)
    print(last)
