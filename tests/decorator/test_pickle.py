"""Decorated tasks pickle: by reference when importable, by value (cloudpickle) otherwise.

Each case checks that the loaded task is the same resumable task: the same key, the same
store, the same options (a snapshot left by the original is resumed from by the copy), and
the same calling convention as ``inspect`` sees it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import multiprocessing
import pickle
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from resumable import ctx, resumable

ROOT = Path(__file__).resolve().parents[2]
DUMPS: dict[str, Callable[[Any], bytes]] = {
    "pickle": pickle.dumps,
    "cloudpickle": cloudpickle.dumps,
}
KINDS = ["function", "generator", "coroutine", "async generator"]


def run(result: Any) -> Any:
    """The value of a call, awaiting it when it is a coroutine."""
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def call_in_worker(task: Callable[..., Any], *args: Any) -> Any:
    """Call ``task`` in a pool worker: the task travels as an argument, async ones run."""
    return run(task(*args))


def convention(fn: Any) -> tuple[bool, bool, bool]:
    """What inspect says a callable is."""
    return (
        inspect.isgeneratorfunction(fn),
        inspect.iscoroutinefunction(fn),
        inspect.isasyncgenfunction(fn),
    )


# -- module-level tasks: pickled by reference ------------------------------------------------


@resumable(state=0, store="memory://test-pickle")
def count_fn(n: int, state: int = 0) -> tuple[str, int]:
    return ctx().key, n


@resumable(state=0, store="memory://test-pickle")
def count_gen(n: int, state: int = 0) -> Iterator[int]:
    yield from range(state + 1, n + 1)


@resumable(state=0, store="memory://test-pickle")
async def count_coro(n: int, state: int = 0) -> tuple[str, int]:
    return ctx().key, n


@resumable(state=0, store="memory://test-pickle")
async def count_agen(n: int, state: int = 0) -> AsyncIterator[int]:
    for i in range(state + 1, n + 1):
        yield i


class Model:
    """Methods of an importable class."""

    def __init__(self, name: str) -> None:
        self.name = name

    @resumable(state=0, store="memory://test-pickle")
    def fit(self, n: int, state: int = 0) -> Iterator[int]:
        yield from range(state + 1, n + 1)

    @resumable(store="memory://test-pickle")
    @classmethod
    def make(cls, n: int) -> tuple[str, str, int]:
        return cls.__name__, ctx().key, n

    @resumable(store="memory://test-pickle")
    @staticmethod
    def helper(n: int) -> tuple[str, int]:
        return ctx().key, n

    @resumable(store="memory://test-pickle")
    async def afit(self, n: int) -> tuple[str, str, int]:
        return self.name, ctx().key, n


MODULE_TASKS = {
    "function": count_fn,
    "generator": count_gen,
    "coroutine": count_coro,
    "async generator": count_agen,
}


@pytest.mark.parametrize("dumps", DUMPS)
@pytest.mark.parametrize("kind", KINDS)
def test_module_level_task_pickles_by_reference(kind: str, dumps: str) -> None:
    """A module-level task loads as the very same object, whatever pickles it."""
    task = MODULE_TASKS[kind]
    data = DUMPS[dumps](task)
    assert b"cloudpickle" not in data  # by reference: a module and a name
    loaded = pickle.loads(data)
    assert loaded is task
    assert convention(loaded) == convention(task)


@pytest.mark.parametrize("dumps", DUMPS)
def test_methods_pickle(dumps: str) -> None:
    """Bound methods, classmethods and staticmethods of an importable class round-trip."""
    model = Model("a")
    for method, args in [
        (model.fit, (3,)),
        (Model.make, (2,)),
        (model.make, (2,)),
        (Model.helper, (4,)),
        (model.afit, (5,)),
    ]:
        loaded = pickle.loads(DUMPS[dumps](method))
        assert run(loaded(*args)) == run(method(*args))
        assert convention(loaded) == convention(method)
    assert pickle.loads(DUMPS[dumps](Model.fit))(model, 3) is None  # unbound, self explicit
    assert pickle.loads(DUMPS[dumps](vars(Model)["fit"])) is vars(Model)["fit"]


# -- local tasks: pickled by value -----------------------------------------------------------


def make_local(kind: str, store: str) -> Callable[..., Any]:
    """A local task of the given kind that dies at step 2 when ``die`` is true.

    It returns (or, for async generators, yields last) the key, the store folder and the
    state it started from, so a caller can tell which snapshot it resumed from.
    """
    options: dict[str, Any] = {"state": 0, "store": store, "on_success": "keep", "every": 1}

    def report(start: int) -> tuple[str, str, int]:
        return ctx().key, ctx().checkpoint.uri, start

    if kind == "function":

        @resumable(**options)
        def task(n: int, die: bool, state: int = 0) -> Any:
            start = state
            for i in range(state, n):
                if die and i == 2 and start == 0:
                    raise RuntimeError("dies")
                ctx().save_sync(i + 1)
            return report(start)

    elif kind == "generator":

        @resumable(**options)
        def task(n: int, die: bool, state: int = 0) -> Any:
            start = state
            for i in range(state, n):
                if die and i == 2 and start == 0:
                    raise RuntimeError("dies")
                yield i + 1
            return report(start)

    elif kind == "coroutine":

        @resumable(**options)
        async def task(n: int, die: bool, state: int = 0) -> Any:
            start = state
            for i in range(state, n):
                if die and i == 2 and start == 0:
                    raise RuntimeError("dies")
                await ctx().save(i + 1)
            return report(start)

    else:

        @resumable(**options)
        async def task(n: int, die: bool, state: Any = 0) -> Any:
            start = state if isinstance(state, int) else state[2]
            for i in range(start, n):
                if die and i == 2 and start == 0:
                    raise RuntimeError("dies")
                yield i + 1
            yield report(start)

    return task


def _key_of(task: Callable[..., Any], n: int, die: bool) -> Any:
    """The key, store folder and start state reported by a finished call."""
    return run(task(n, die))


@pytest.mark.parametrize("dumps", DUMPS)
@pytest.mark.parametrize("kind", KINDS)
def test_local_task_pickles_by_value_and_resumes(kind: str, dumps: str, tmp_path: Path) -> None:
    """A local task loads as a new object that is the same task: key, store, options."""
    task = make_local(kind, str(tmp_path / "store"))
    with pytest.raises(RuntimeError, match="dies"):
        run(task(5, True))
    loaded = pickle.loads(DUMPS[dumps](task))
    assert loaded is not task
    assert convention(loaded) == convention(task)
    key, uri, start = run(loaded(5, True))
    assert start == 2  # resumed from the original's snapshot: same key, store and state=
    assert key.startswith("tests.decorator.test_pickle.make_local._locals_.task-")
    assert uri.startswith(str(tmp_path / "store"))
    assert (key, uri) == run(task(5, True))[:2]


# -- process pools ---------------------------------------------------------------------------


@pytest.fixture(scope="module", name="pool")
def _pool() -> Iterator[ProcessPoolExecutor]:
    """A spawn pool: workers import this module fresh, nothing is inherited by forking."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def test_process_pool_runs_module_level_tasks(pool: ProcessPoolExecutor) -> None:
    """submit(task, ...) works on the decorated task directly; async ones via a runner."""
    key, n = pool.submit(count_fn, 3).result(timeout=60)
    assert (key, n) == count_fn(3)
    assert pool.submit(count_gen, 3).result(timeout=60) is None
    assert pool.submit(call_in_worker, count_coro, 4).result(timeout=60) == run(count_coro(4))
    assert pool.submit(call_in_worker, count_agen, 4).result(timeout=60) == 4
    model = Model("b")
    assert pool.submit(model.make, 2).result(timeout=60) == Model.make(2)
    assert pool.submit(Model.helper, 2).result(timeout=60) == Model.helper(2)
    assert pool.submit(call_in_worker, model.afit, 2).result(timeout=60) == run(model.afit(2))


@pytest.mark.parametrize("kind", KINDS)
def test_process_pool_resumes_a_local_task(
    kind: str, pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    """A local task that died here resumes in a worker from its snapshot, with its key."""
    task = make_local(kind, str(tmp_path / "store"))
    with pytest.raises(RuntimeError, match="dies"):
        run(task(5, True))
    key, uri, start = pool.submit(call_in_worker, task, 5, True).result(timeout=60)
    assert start == 2
    assert key.startswith("tests.decorator.test_pickle.make_local._locals_.task-")
    assert uri.startswith(str(tmp_path / "store"))


# -- tasks of a script run as __main__ --------------------------------------------------------

SCRIPT = """
import asyncio, inspect, json, multiprocessing, pickle, sys
from concurrent.futures import ProcessPoolExecutor

import cloudpickle

from resumable import ctx, resumable

STORE = sys.argv[1]


@resumable(state=0, store=STORE, on_success="keep")
def gen(n, die, state=0):
    start = state
    for i in range(state, n):
        if die and i == 2 and start == 0:
            raise RuntimeError("dies")
        yield i + 1
    return ctx().key, start


@resumable(state=0, store=STORE, on_success="keep")
async def agen(n, die, state=0):
    start = state if isinstance(state, int) else state[1]
    for i in range(start, n):
        if die and i == 2 and start == 0:
            raise RuntimeError("dies")
        yield i + 1
    yield ctx().key, start


def call(task, *args):
    result = task(*args)
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def flags(fn):
    return [inspect.isgeneratorfunction(fn), inspect.iscoroutinefunction(fn),
            inspect.isasyncgenfunction(fn)]


if __name__ == "__main__":
    out = {}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, task in [("gen", gen), ("agen", agen)]:
            try:
                call(task, 5, True)
            except RuntimeError:
                pass
            copies = [pickle.loads(pickle.dumps(task)), pickle.loads(cloudpickle.dumps(task))]
            out[name] = {
                "flags": [flags(task)] + [flags(c) for c in copies],
                "by_value": all(c is not task for c in copies),
                "worker": list(pool.submit(call, task, 5, True).result(timeout=60)),
                "here": list(call(task, 5, True)),
            }
    print(json.dumps(out))
"""


def test_main_script_tasks_pickle_by_value_and_resume_in_a_worker(tmp_path: Path) -> None:
    """`python jobs.py`: its tasks ship by value and keep the script's key in a worker."""
    script = tmp_path / "jobs.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_env(), "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["gen"]["flags"] == [[False, False, False]] * 3
    assert out["agen"]["flags"] == [[False, True, False]] * 3
    for name in ("gen", "agen"):
        key, start = out[name]["worker"]
        assert out[name]["by_value"]
        assert start == 2  # the worker resumed the snapshot the script left
        assert key.startswith(f"jobs.{name}-")  # the script's name, not the worker's
        assert out[name]["here"][0] == key  # the same key back in the script


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "RESUMABLE_STORE"}
