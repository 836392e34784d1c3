"""Checked by mypy --strict, never run: the public API's types as users see them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from pathlib import Path

from resumable import Checkpoint, latest_checkpoint, resumable


def checkpoint_types() -> None:
    cp = Checkpoint("memory://typing")
    root: Path | None = cp.load_sync()
    cp.save_sync(b"x")
    cp.save_sync("a/path")
    cp.save_sync(Path("a/path"))
    newest: Path | None = latest_checkpoint(".")
    del root, newest


@resumable(state=0)
def counter(n: int, state: int = 0) -> Generator[int, None, str]:
    for i in range(state, n):
        yield i + 1
    return "done"


@resumable(state=0)
async def acounter(n: int, state: int = 0) -> AsyncGenerator[int, None]:
    yield n


@resumable(state=0)
async def coro(n: int, state: int = 0) -> float:
    return n / 2


@resumable(state=0)
def plain(n: int, state: int = 0) -> bytes:
    return b"x" * n


async def decorator_types() -> None:
    result: str = counter(3)  # the generator's return type
    last: int = await acounter(3)  # an async generator becomes a coroutine of its yields
    half: float = await coro(3)
    data: bytes = plain(2)
    counter("three")  # type: ignore[arg-type]  # parameter types are kept
    del result, last, half, data
