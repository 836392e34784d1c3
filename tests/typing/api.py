"""Checked by mypy --strict (and pyright), never run: the public API's types as users see them.

``assert_type`` pins a type without printing anything, so this file stays error-free in CI's
plain ``mypy --strict resumable tests/typing``; the revealed types and the negative cases
with their error messages are pinned in ``tests/typing_golden`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any, assert_type

import fsspec.callbacks

from resumable import Checkpoint, RetryPolicy, Storage, latest_checkpoint, resumable


def checkpoint_types() -> None:
    cp = Checkpoint("memory://typing")
    root: Path | None = cp.load_sync()
    cp.save_sync(b"x")
    cp.save_sync("a/path")
    cp.save_sync(Path("a/path"))
    newest: Path | None = latest_checkpoint(".")
    Checkpoint("memory://typing", storage=Storage(progress=True))
    Checkpoint("memory://typing", storage=Storage(progress=fsspec.callbacks.TqdmCallback()))
    Checkpoint("memory://typing", storage=Storage(progress=None))
    del root, newest


@resumable(state=0)
def counter(n: int, state: int = 0) -> Generator[int, None, str]:
    for i in range(state, n):
        yield i + 1
    return "done"


@resumable(state=0)
def steps(n: int, state: int = 0) -> Iterator[int]:
    yield from range(state, n)


@resumable(state={})
def loose(n: int, state: dict[str, Any] | None = None) -> Generator[dict[str, Any], None, int]:
    yield {"n": n}
    return n


@resumable(state=0)
async def acounter(n: int, state: int = 0) -> AsyncGenerator[int, None]:
    yield n


@resumable(state=0)
async def asteps(n: int, state: int = 0) -> AsyncIterator[int]:
    yield n


@resumable(state=0)
async def coro(n: int, state: int = 0) -> float:
    return n / 2


@resumable(state=0)
def plain(n: int, state: int = 0) -> bytes:
    return b"x" * n


class Trainer:
    @resumable(state=0)
    def fit(self, epochs: int, state: int = 0) -> Iterator[int]:
        yield epochs

    @resumable(state=0)
    async def afit(self, epochs: int, state: int = 0) -> AsyncIterator[int]:
        yield epochs


async def decorator_types() -> None:
    assert_type(counter(3), str)  # the generator's return type
    assert_type(steps(3), None)  # an Iterator-annotated generator returns nothing
    assert_type(loose(3), int)  # Any in the annotations does not lose the types
    assert_type(await acounter(3), int)  # awaitable, and gives the last yield
    assert_type(await asteps(3), int)
    assert_type(await coro(3), float)
    assert_type(plain(2), bytes)
    assert_type(Trainer().fit(3), None)
    assert_type(await Trainer().afit(3), int)
    counter("three")  # type: ignore[arg-type]  # parameter types are kept
    await counter(3)  # type: ignore[misc]  # a generator task is not awaitable


def options_types() -> None:
    storage = Storage(keep=3, retry=RetryPolicy(attempts=5, timeout=30.0))
    with Checkpoint("memory://typing", storage=storage) as cp:
        info = cp.info_sync()
        assert_type(info.seq if info is not None else 0, int)

    @resumable(state=0, attempts=3, store="memory://typing", storage=storage)
    def once(state: int = 0) -> int:
        return state

    @resumable(state=0, retry=RetryPolicy(attempts=2, retry_on=ConnectionError, wait=0.0))
    def flaky(state: int = 0) -> int:
        return state

    assert_type(once(), int)
    assert_type(flaky(), int)
