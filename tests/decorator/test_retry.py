"""What a task's retries retry: errors never retried, tenacity strategies, attempt_number.

Each case runs for all four task kinds (sync and async).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import tenacity

from resumable import (
    RetryPolicy,
    StateError,
    ctx,
    resumable,
)

KINDS = ["function", "generator", "coroutine", "async generator"]


class Fatal(ValueError):
    """An error the tests mark as not retryable."""


@pytest.fixture(name="kind", params=KINDS)
def _kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(result: Any) -> Any:
    """The value of a call of a decorated task, awaiting it when it is a coroutine."""
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def make_task(kind: str, errors: list[BaseException], **options: Any) -> Callable[..., Any]:
    """A task of ``kind`` whose attempt ``i`` raises ``errors[i]`` (when there is one)."""
    attempts: list[int] = []
    retry = {k: options.pop(k) for k in ("retry_on", "no_retry_on") if k in options}
    options = {"state": 0, "retry": RetryPolicy(attempts=4, wait=0, **retry), **options}

    def step() -> None:
        number = ctx().attempt_number
        attempts.append(number)
        if number < len(errors):
            raise errors[number]

    if kind == "function":

        @resumable(**options)
        def task(state: int = 0) -> Any:
            step()
            return "done"

    elif kind == "generator":

        @resumable(**options)
        def task(state: int = 0) -> Any:
            yield state + 1
            step()
            return "done"

    elif kind == "coroutine":

        @resumable(**options)
        async def task(state: int = 0) -> Any:
            step()
            return "done"

    else:

        @resumable(**options)
        async def task(state: int = 0) -> Any:
            yield state + 1
            step()

    task.attempts = attempts  # type: ignore[attr-defined]
    return task


def test_no_retry_on_wins_over_retry_on(kind: str, store_url: str) -> None:
    """An exception listed in no_retry_on is raised at once, although retry_on matches it."""
    task = make_task(kind, [Fatal("no point")], store=store_url, no_retry_on=ValueError)
    with pytest.raises(Fatal):
        run(task())
    assert task.attempts == [0]  # type: ignore[attr-defined]


def test_no_retry_on_leaves_other_errors_retried(kind: str, store_url: str) -> None:
    """Errors outside no_retry_on are still retried, from the last snapshot."""
    errors: list[BaseException] = [RuntimeError("flaky"), KeyError("flaky"), Fatal("stop")]
    task = make_task(kind, errors, store=store_url, no_retry_on=(Fatal, TypeError))
    with pytest.raises(Fatal):
        run(task())
    assert task.attempts == [0, 1, 2]  # type: ignore[attr-defined]


def test_retry_on_accepts_a_tenacity_strategy(kind: str, store_url: str) -> None:
    """A tenacity retry strategy decides which failures are retried, like wait= for waits."""
    transient = tenacity.retry_if_exception(lambda exc: "transient" in str(exc))
    errors: list[BaseException] = [RuntimeError("transient"), RuntimeError("fatal")]
    task = make_task(kind, errors, store=store_url, retry_on=transient)
    with pytest.raises(RuntimeError, match="fatal"):
        run(task())
    assert task.attempts == [0, 1]  # type: ignore[attr-defined]


def test_a_strategy_never_retries_a_result(kind: str, store_url: str) -> None:
    """Only exceptions are retried: a strategy that would retry results has no effect on them."""
    task = make_task(kind, [], store=store_url, retry_on=tenacity.retry_if_result(lambda r: True))
    run(task())
    assert task.attempts == [0]  # type: ignore[attr-defined]


def test_strategy_with_no_retry_on_and_library_errors(kind: str, store_url: str) -> None:
    """no_retry_on and the library's own errors are never retried, whatever the strategy says."""
    always = tenacity.retry_if_exception_type(BaseException)
    task = make_task(kind, [Fatal("x")], store=store_url, retry_on=always, no_retry_on=Fatal)
    with pytest.raises(Fatal):
        run(task())
    assert task.attempts == [0]  # type: ignore[attr-defined]
    task = make_task(kind, [StateError("ours")], store=store_url, retry_on=always)
    with pytest.raises(StateError):
        run(task())
    assert task.attempts == [0]  # type: ignore[attr-defined]


def test_attempt_number_compares_and_calls(kind: str, store_url: str) -> None:
    """ctx().attempt_number == 0 holds on the first attempt, and ctx().attempt_number() works."""
    seen: list[tuple[bool, int, int, str]] = []
    options: dict[str, Any] = {
        "state": 0,
        "retry": RetryPolicy(attempts=2, wait=0),
        "store": store_url,
    }

    def look() -> None:
        n = ctx().attempt_number
        seen.append((n == 0, n(), n + 10, repr(n)))
        if n == 0:
            raise RuntimeError("retry me")

    task: Callable[..., Any]
    if kind == "function":

        @resumable(**options)
        def task(state: int = 0) -> None:
            look()

    elif kind == "generator":

        @resumable(**options)
        def task(state: int = 0) -> Any:
            look()
            yield state

    elif kind == "coroutine":

        @resumable(**options)
        async def task(state: int = 0) -> None:
            look()

    else:

        @resumable(**options)
        async def task(state: int = 0) -> Any:
            look()
            yield state

    run(task())
    assert seen == [(True, 0, 10, "0"), (False, 1, 11, "1")]
