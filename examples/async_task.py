"""Async tasks: an async generator that yields snapshots, and a coroutine that saves itself.

Run: python examples/async_task.py
"""

from __future__ import annotations

import asyncio
import logging

from resumable import RetryPolicy, ctx, resumable


@resumable(state=[], retry=RetryPolicy(attempts=3, wait=0))
async def crawl(urls: list[str], state: list[str] | None = None) -> None:
    """An async generator: its result is its final state (the last value it yielded)."""
    assert state is not None
    for url in urls[len(state) :]:
        if url.endswith("/3") and ctx().attempt_number() == 0:
            raise ConnectionError("network blip")
        await asyncio.sleep(0)  # stands in for real I/O
        state.append(f"fetched {url}")
        yield state


@resumable(state=0, retry=RetryPolicy(attempts=2, wait=0))
async def total(n: int, state: int = 0) -> int:
    """A coroutine: it persists with `await ctx().save(...)`."""
    acc = state
    for i in range(n):
        if i == 2 and ctx().attempt_number() == 0:
            raise TimeoutError("slow upstream")
        acc += i
        await ctx().save(acc)
    return acc


async def main() -> None:
    pages = await crawl([f"https://example.invalid/{i}" for i in range(5)])
    print("\n".join(pages))
    assert len(pages) == 5
    print("total:", await total(3))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
