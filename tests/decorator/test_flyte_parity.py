"""flyte parity: errors never retried, attempt_number, info/exists, foreign-location warnings.

Decorator cases run for all four task kinds (sync and async); Checkpoint cases run through the
sync methods and their async twins, on every store.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
import tenacity

from resumable import (
    Checkpoint,
    CheckpointInfo,
    ConfigurationError,
    RetryPolicy,
    StateError,
    Storage,
    ctx,
    resumable,
)

from ..conftest import IO, store_files, write_object

KINDS = ["function", "generator", "coroutine", "async generator"]


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


class Fatal(ValueError):
    """An error the tests mark as not retryable."""


# -- a. errors that are never retried -------------------------------------------------------


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


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"no_retry_on": "ValueError"}, "no_retry_on"),
        ({"no_retry_on": (ValueError, 3)}, "no_retry_on"),
        ({"retry_on": tenacity.wait_fixed(1)}, "retry_on"),
        ({"retry_on": ()}, "retry_on"),
    ],
)
def test_bad_retry_options_are_refused(options: dict[str, Any], word: str) -> None:
    """no_retry_on takes exception types; retry_on types or a tenacity retry strategy."""
    with pytest.raises(ConfigurationError, match=word):
        RetryPolicy(**options)


# -- e. attempt_number, as a property and as a method ----------------------------------------


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


# -- c. info and exists ----------------------------------------------------------------------


def info_of(cp: Checkpoint, io: IO) -> CheckpointInfo | None:
    """The checkpoint's info, through ``info_sync()`` or ``await info()``."""
    return cp.info_sync() if io.mode == "sync" else asyncio.run(cp.info())


def exists_of(cp: Checkpoint, io: IO) -> bool:
    """Whether a snapshot exists, through ``exists_sync()`` or ``await exists()``."""
    return cp.exists_sync() if io.mode == "sync" else asyncio.run(cp.exists())


def test_info_of_an_empty_location_is_none(store_url: str, io: IO) -> None:
    """Nothing saved: info is None and exists is False."""
    with Checkpoint(store_url) as cp:
        assert info_of(cp, io) is None
        assert exists_of(cp, io) is False


def test_info_reports_the_newest_snapshot(store_url: str, io: IO, tmp_path: Path) -> None:
    """Info gives the newest snapshot's number, kind, size, time, attempt and signing."""
    before = time.time()
    with Checkpoint(store_url) as cp:
        io.save(cp, b"first")
        io.save(cp, b"second!")
        got = info_of(cp, io)
        assert got is not None
        assert (got.seq, got.kind, got.size, got.attempt, got.signed) == (1, "bytes", 7, 0, False)
        assert before - 5 <= got.created <= time.time() + 5
        assert exists_of(cp, io) is True
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "a.txt").write_text("a")
        io.save(cp, folder)
        assert (got := info_of(cp, io)) is not None
        assert (got.seq, got.kind) == (2, "dir")


def test_info_does_not_restore_the_payload(store_url: str, io: IO) -> None:
    """Info reads the manifest only: a missing payload is found by a load, not by info."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"x" * 200_000)  # large enough to be stored beside its manifest
        blob = next(name for name in store_files(store_url) if name.endswith(".blob"))
        write_object(store_url, blob, b"truncated")
        got = info_of(cp, io)
        assert got is not None
        assert got.size == 200_000
        assert not any(cp.path.iterdir())  # nothing was restored


def test_info_skips_an_unreadable_newest_manifest(store_url: str, io: IO) -> None:
    """A newest manifest that cannot be parsed is skipped for the one before it."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"one")
        io.save(cp, b"two")
        newest = [name for name in store_files(store_url) if name.endswith(".json")][-1]
        write_object(store_url, newest, b"{not json")
        got = info_of(cp, io)
        assert got is not None
        assert got.seq == 0


def test_info_after_clear_is_none_and_signed_is_reported(store_url: str, io: IO) -> None:
    """A cleared checkpoint has no snapshot, also when signed; a signed one says so."""
    with Checkpoint(store_url, storage=Storage(signing_key=b"k" * 32)) as cp:
        io.save(cp, b"signed")
        got = info_of(cp, io)
        assert got is not None
        assert got.signed
        cp.clear_sync()
        assert info_of(cp, io) is None
        assert exists_of(cp, io) is False


def test_info_sees_background_saves(store_url: str, io: IO) -> None:
    """A background save made before info is counted."""
    with Checkpoint(store_url) as cp:
        cp.save_background_sync(b"later")
        assert exists_of(cp, io) is True


# -- d. a location that holds objects but no snapshot ----------------------------------------


def put(url: str, name: str, data: bytes = b"w") -> None:
    """Write an object under a store URL, making its folder first."""
    fs, path = fsspec.url_to_fs(url)
    fs.makedirs(path.rstrip("/"), exist_ok=True)
    write_object(url, name, data)


def foreign_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages of the warnings about locations holding no snapshot."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "but no snapshot" in r.getMessage()
    ]


def test_load_warns_once_about_objects_that_are_not_snapshots(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint another tool wrote loads as None, with one warning that names what is there."""
    for i in range(7):
        put(store_url, f"model-{i}.pt")
    caplog.set_level(logging.WARNING, logger="resumable")
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
        assert io.load(cp) is None
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
    [message] = foreign_warnings(caplog)
    assert store_url in message
    assert "model-0.pt, model-1.pt" in message
    assert "and 2 more" in message


def test_load_warns_about_a_store_root(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """Pointed at a store whose tasks are sub-folders, a load says so."""
    with Checkpoint(f"{store_url}/task-a") as cp:
        io.save(cp, b"x")
    caplog.set_level(logging.WARNING, logger="resumable")
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
    [message] = foreign_warnings(caplog)
    assert "task-a/" in message


def test_no_warning_for_an_empty_or_own_location(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing there, a cleared checkpoint, or a killed first save's leftovers: no warning."""
    caplog.set_level(logging.WARNING, logger="resumable")
    with Checkpoint(store_url) as cp:
        assert io.load(cp) is None
        io.save(cp, b"x")
        cp.clear_sync()
        assert io.load(cp) is None
    put(f"{store_url}/other", "00000000000000000000.1f0c9a7e3b2d4c5a.blob")
    with Checkpoint(f"{store_url}/other") as cp:
        assert io.load(cp) is None
    assert foreign_warnings(caplog) == []
