"""@resumable: injection, snapshots from yields, retries that resume, for all four task kinds.

Sync and async tasks are driven by the same cases through the ``kind`` fixture.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from resumable import (
    Captured,
    Checkpoint,
    ConfigurationError,
    Dir,
    NoTaskContextError,
    RetryPolicy,
    StateError,
    Storage,
    StorageError,
    ctx,
    resumable,
    testing,
)

from ..conftest import store_files


def run(result: Any) -> Any:
    """The value of a call of a decorated task, awaiting it when it is a coroutine."""
    return asyncio.run(result) if inspect.iscoroutine(result) else result


@pytest.fixture(name="store")
def _store(store_url: str) -> str:
    return store_url


def make_counter(kind: str, **options: Any) -> Callable[..., Any]:
    """A counting task of the given kind that fails once halfway on its first attempt."""
    seen: list[int] = []
    retry = {"attempts": options.pop("attempts", 3), "wait": 0}
    if "retry_on" in options:
        retry["retry_on"] = options.pop("retry_on")
    options = {"state": 0, "retry": RetryPolicy(**retry), **options}

    if kind == "generator":

        @resumable(**options)
        def task(n: int, state: int = 0) -> Any:
            for i in range(state, n):
                if i == n // 2 and ctx().attempt_number() == 0:
                    raise RuntimeError("first attempt dies")
                seen.append(i)
                yield i + 1
            return f"done {n}"

    elif kind == "async generator":

        @resumable(**options)
        async def task(n: int, state: int = 0) -> Any:
            for i in range(state, n):
                if i == n // 2 and ctx().attempt_number() == 0:
                    raise RuntimeError("first attempt dies")
                seen.append(i)
                yield i + 1

    elif kind == "function":

        @resumable(**options)
        def task(n: int, state: int = 0) -> Any:
            for i in range(state, n):
                if i == n // 2 and ctx().attempt_number() == 0:
                    raise RuntimeError("first attempt dies")
                seen.append(i)
                ctx().save_sync(i + 1)
            return f"done {n}"

    else:

        @resumable(**options)
        async def task(n: int, state: int = 0) -> Any:
            for i in range(state, n):
                if i == n // 2 and ctx().attempt_number() == 0:
                    raise RuntimeError("first attempt dies")
                seen.append(i)
                await ctx().save(i + 1)
            return f"done {n}"

    task.seen = seen  # type: ignore[attr-defined]
    return task


KINDS = ["function", "generator", "coroutine", "async generator"]


@pytest.fixture(name="kind", params=KINDS)
def _kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_retry_resumes_from_last_snapshot(kind: str, store: str) -> None:
    """After a failure, the retry starts where the last snapshot left off: no step runs twice."""
    task = make_counter(kind, store=store)
    result = run(task(10))
    assert task.seen == list(range(10))  # type: ignore[attr-defined]
    assert result == (10 if kind == "async generator" else "done 10")


def test_decorated_object_keeps_name_doc_signature(kind: str) -> None:
    """Name, docstring and signature survive; generators no longer report as generators."""
    task = make_counter(kind)
    assert task.__name__ == "task"
    assert list(inspect.signature(task).parameters) == ["n", "state"]
    assert not inspect.isgeneratorfunction(task)
    assert not inspect.isasyncgenfunction(task)
    assert inspect.iscoroutinefunction(task) == (kind in ("coroutine", "async generator"))


def test_last_attempt_raises_the_tasks_own_exception(kind: str, store: str) -> None:
    """When retries run out, the task's exception propagates, not a tenacity RetryError."""
    task = make_counter(kind, store=store, attempts=1)
    with pytest.raises(RuntimeError, match="first attempt dies"):
        run(task(4))


def test_retry_on_filters_exception_types(kind: str, store: str) -> None:
    """Exceptions outside retry_on are not retried."""
    task = make_counter(kind, store=store, retry_on=KeyError)
    with pytest.raises(RuntimeError):
        run(task(4))
    assert task.seen == [0, 1]  # type: ignore[attr-defined]


def test_on_success_clear_and_keep(kind: str, store: str) -> None:
    """'clear' deletes the snapshots after success; 'keep' lets a later call resume at the end."""
    run(make_counter(kind, store=store, key="cleared")(6))
    assert store_files(f"{store}/cleared") == []
    kept = make_counter(kind, store=store, key="kept", on_success="keep")
    run(kept(6))
    again = make_counter(kind, store=store, key="kept", on_success="keep")
    run(again(6))
    assert again.seen == []  # type: ignore[attr-defined]


def test_snapshots_live_at_store_and_key(store: str) -> None:
    """A task's snapshots are readable with Checkpoint(f"{store}/{key}")."""
    gate = threading.Event()

    @resumable(state=0, store=store, key="jobs/k1")
    def task(state: int = 0) -> Any:
        yield 41
        gate.set()
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError):
        task()
    assert gate.is_set()
    with Checkpoint(f"{store}/jobs/k1") as cp:
        assert cp.load_sync() is not None


def test_initial_state_is_a_fresh_copy(store: str) -> None:
    """A mutable initial state is never shared between calls."""

    @resumable(state=[], store=store)
    def task(tag: str, state: list[str] | None = None) -> list[str]:
        assert state is not None
        state.append(tag)
        return state

    assert task("a") == ["a"]
    assert task("b") == ["b"]


def test_without_state_nothing_is_injected(store: str, tmp_path: Path) -> None:
    """With state omitted, the task uses ctx().checkpoint itself, as with a plain Checkpoint."""

    @resumable(store=store, retry=RetryPolicy(attempts=2, wait=0))
    def process(n: int) -> int:
        cp = ctx().checkpoint
        root = cp.load_sync()
        start = int((root / "payload").read_bytes()) if root else 0
        for i in range(start, n):
            if i == 3 and ctx().attempt_number() == 0:
                raise RuntimeError("crash")
            cp.save_sync(str(i + 1).encode())
        return start

    assert process(6) == 3


def test_raw_snapshot_with_injection_is_a_clear_error(store: str) -> None:
    """A raw snapshot written through ctx().checkpoint cannot be injected as state."""
    Checkpoint(f"{store}/mixed").save_sync(b"raw bytes")

    @resumable(state=0, store=store, key="mixed")
    def task(state: int = 0) -> int:
        return state

    with pytest.raises(StateError, match=r"raw|ctx\(\)\.checkpoint"):
        task()


def test_state_is_captured_when_yielded(store: str) -> None:
    """A background snapshot holds the value at the yield, not later mutations."""

    @resumable(state={"n": 0}, store=store, background=True, retry=RetryPolicy(attempts=2, wait=0))
    def task(state: dict[str, int] | None = None) -> dict[str, int]:
        assert state is not None
        if ctx().attempt_number() == 1:
            return state
        state["n"] = 1
        yield state
        state["n"] = 999  # mutated after the yield: must not leak into the snapshot
        raise RuntimeError("crash")

    assert task() == {"n": 1}


def test_every_n_persists_every_nth_yield(store: str) -> None:
    """every=3 persists the 3rd, 6th, ... yield (and the final one with on_success='keep')."""
    commits: list[Any] = []

    @resumable(
        state=0, store=store, key="every", every=3, on_success="keep", storage=Storage(keep=100)
    )
    def task(state: int = 0) -> Any:
        for i in range(state, 7):
            yield i + 1
        commits.extend(store_files(f"{store}/every"))

    task()
    assert [n for n in commits if n.endswith(".json")] == [f"{i:020d}.json" for i in (0, 1)]
    with Checkpoint(f"{store}/every") as cp:
        assert cp.load_sync() is not None
        assert testing.read_state(cp.path / "payload") == 7


def test_every_seconds_throttles(store: str) -> None:
    """every_seconds holds back yields inside the window; the newest wins at the end."""

    @resumable(
        state=0,
        store=store,
        key="secs",
        every=timedelta(seconds=3600),
        on_success="keep",
        storage=Storage(keep=100),
    )
    def task(state: int = 0) -> Any:
        for i in range(5):
            yield i + 1

    task()
    assert [n for n in store_files(f"{store}/secs") if n.endswith(".json")] == [
        "00000000000000000000.json"
    ]


def test_background_failure_surfaces(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A background save that fails makes the call fail; it is never silent."""

    def broken(self: Checkpoint, *args: Any, **kwargs: Any) -> Any:
        raise OSError("store unreachable")

    monkeypatch.setattr(Checkpoint, "commit", broken)

    @resumable(state=0, store=store, background=True)
    def task(state: int = 0) -> Any:
        yield 1
        return "finished"

    with pytest.raises(StorageError, match="store unreachable"):
        task()


def test_background_saves_are_flushed_before_return(store: str) -> None:
    """With background=True, every snapshot is committed before the call returns."""

    @resumable(state=0, store=store, key="bg", background=True, on_success="keep")
    def task(state: int = 0) -> Any:
        for i in range(20):
            yield i + 1
        return "ok"

    assert task() == "ok"
    with Checkpoint(f"{store}/bg") as cp:
        cp.load_sync()
        assert testing.read_state(cp.path / "payload") == 20


def test_unpicklable_state_is_not_retried(store: str) -> None:
    """A state that cannot be pickled raises StateError at once, without retries."""
    attempts: list[int] = []

    @resumable(state=0, store=store, retry=RetryPolicy(attempts=4, wait=0))
    def task(state: int = 0) -> Any:
        attempts.append(ctx().attempt_number())
        yield threading.Lock()

    with pytest.raises(StateError, match="pickle"):
        task()
    assert attempts == [0]


def test_dir_state_is_restored_identical(store: str, tmp_path: Path) -> None:
    """A Dir folder is made identical to its snapshot before each attempt."""
    folder = tmp_path / "out"
    injected: list[Path] = []

    @resumable(state=Dir(folder), store=store, retry=RetryPolicy(attempts=2, wait=0))
    def train(state: Path | None = None) -> Any:
        assert state is not None
        injected.append(state)
        if ctx().attempt_number() == 0:
            (state / "epoch-1.txt").write_text("one")
            yield
            (state / "junk.tmp").write_text("half-written")
            raise RuntimeError("preempted")
        return sorted(p.name for p in state.iterdir())

    assert train() == ["epoch-1.txt"]
    assert injected == [folder, folder]


def test_dir_ctx_save_takes_no_argument(store: str, tmp_path: Path) -> None:
    """In a Dir task ctx().save_sync() saves the folder and refuses an argument."""

    @resumable(state=Dir(tmp_path / "d"), store=store)
    def task(state: Path | None = None) -> None:
        ctx().save_sync()
        with pytest.raises(ConfigurationError):
            ctx().save_sync(1)

    task()


def test_ctx_outside_a_task_raises() -> None:
    """ctx() outside a task is a clear NoTaskContextError."""
    with pytest.raises(NoTaskContextError, match="outside"):
        ctx()


def test_ctx_is_per_thread(store: str) -> None:
    """Tasks running in two threads each see their own context."""
    keys: dict[str, str] = {}
    barrier = threading.Barrier(2)

    @resumable(store=store, key=lambda name: f"t-{name}")
    def task(name: str) -> None:
        barrier.wait()
        keys[name] = ctx().key

    threads = [threading.Thread(target=task, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert keys == {"a": "t-a", "b": "t-b"}


def test_methods_classmethods_staticmethods(store: str) -> None:
    """The decorator works on every kind of method."""

    class Job:
        @resumable(state=0, store=store)
        def method(self, n: int, state: int = 0) -> Any:
            yield n
            return (type(self).__name__, n)

        @classmethod
        @resumable(state=0, store=store)
        def cls_method(cls, n: int, state: int = 0) -> Any:
            return (cls.__name__, n, state)

        @staticmethod
        @resumable(state=0, store=store)
        def static(n: int, state: int = 0) -> Any:
            return (n, state)

    job = Job()
    assert job.method(2) == ("Job", 2)
    assert Job.cls_method(3) == ("Job", 3, 0)
    assert job.static(4) == (4, 0)


def test_default_store_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is RESUMABLE_STORE when set, else ./.resumable."""

    @resumable(state=0, key="k", on_success="keep")
    def task(state: int = 0) -> Any:
        yield 1

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    task()
    assert (tmp_path / ".resumable" / "k" / "00000000000000000000.json").exists()
    monkeypatch.setenv("RESUMABLE_STORE", str(tmp_path / "elsewhere"))
    task()
    assert (tmp_path / "elsewhere" / "k" / "00000000000000000000.json").exists()


def test_async_generator_without_yield_returns_restored_state(store: str) -> None:
    """An async generator that yields nothing returns the restored (or initial) state."""

    @resumable(state=7, store=store)
    async def task(state: int = 0) -> Any:
        if False:
            yield state

    assert asyncio.run(task()) == 7


def test_state_error_names_the_task(store_url: str) -> None:
    """Unpickling failures of saved state are StateErrors that say what to do."""
    Checkpoint(f"{store_url}/broken").commit(Captured("state", lambda: [b"not a pickle"]))

    @resumable(state=0, store=store_url, key="broken")
    def task(state: int = 0) -> int:
        return state

    with pytest.raises(StateError, match="resumable rm"):
        task()


def test_storage_answer_is_a_storage_error_and_not_retried(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk during a save is a StorageError: the task is not retried, nothing poisoned."""
    import errno

    attempts: list[int] = []

    @resumable(state=0, store=store_url, key="full", retry=RetryPolicy(attempts=4, wait=0))
    def task(state: int = 0) -> Any:
        attempts.append(ctx().attempt_number())
        store = testing.store(ctx().checkpoint)

        def full(name: str, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(store.backend, "create_exclusive", full)
        yield 1

    with pytest.raises(StorageError, match="No space left"):
        task()
    assert attempts == [0]
