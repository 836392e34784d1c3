"""``Dir`` per call: format fields (``{key}``, arguments by name) or a callable of the arguments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from resumable import ConfigurationError, Dir, RetryPolicy, resumable

KINDS = ["sync", "async"]


def _task(kind: str, folder: Dir, store: str, seen: dict[float, list[str]]) -> Callable[..., Any]:
    """A task (sync or async) that records what its folder held, writes to it and yields."""

    def work(lr: float, state: Path | None) -> None:
        assert state is not None
        seen[lr] = sorted(p.name for p in state.iterdir())
        (state / "lr.txt").write_text(str(lr))

    @resumable(state=folder, store=store, on_success="keep")
    def task(lr: float, state: Path | None = None) -> Iterator[None]:
        work(lr, state)
        yield

    @resumable(state=folder, store=store, on_success="keep")
    async def atask(lr: float, state: Path | None = None) -> AsyncIterator[None]:
        work(lr, state)
        yield

    if kind == "sync":
        return task
    return lambda lr: asyncio.run(atask(lr))


FOLDERS = [
    pytest.param(Dir("runs/{key}"), id="key-field"),
    pytest.param(Dir("runs/lr={lr}"), id="argument-field"),
    pytest.param(Dir(Path("runs") / "{key}"), id="path-object"),
    pytest.param(Dir(lambda lr: f"runs/lr={lr}"), id="callable"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("folder", FOLDERS)
def test_calls_with_different_arguments_get_different_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, folder: Dir
) -> None:
    """Two calls with different arguments each start in an empty folder of their own."""
    monkeypatch.chdir(tmp_path)
    seen: dict[float, list[str]] = {}
    task = _task(kind, folder, str(tmp_path / "store"), seen)
    task(0.1)
    task(0.01)
    assert seen == {0.1: [], 0.01: []}  # the second call did not find the first one's file
    written = sorted(p for p in (tmp_path / "runs").rglob("lr.txt"))
    assert len(written) == 2
    assert sorted(p.read_text() for p in written) == ["0.01", "0.1"]


@pytest.mark.parametrize("kind", KINDS)
def test_argument_fields_name_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Fields are filled in with the call's arguments, defaults included, and the key."""
    monkeypatch.chdir(tmp_path)
    folders: list[Path] = []

    @resumable(state=Dir("runs/{name}-{seed}/{key}"), store=str(tmp_path / "s"), key="k")
    def task(name: str, seed: int = 7, state: Path | None = None) -> Iterator[None]:
        assert state is not None
        folders.append(state)
        yield

    @resumable(state=Dir("runs/{name}-{seed}/{key}"), store=str(tmp_path / "s"), key="k")
    async def atask(name: str, seed: int = 7, state: Path | None = None) -> AsyncIterator[None]:
        assert state is not None
        folders.append(state)
        yield

    if kind == "sync":
        task("a")
    else:
        asyncio.run(atask("a"))
    assert folders == [tmp_path / "runs" / "a-7" / "k"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_resumes_in_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A call that failed resumes, in its own folder, with the files it had snapshotted."""
    monkeypatch.chdir(tmp_path)
    seen: list[list[str]] = []

    def work(state: Path | None) -> None:
        assert state is not None
        seen.append(sorted(p.name for p in state.iterdir()))
        (state / "step").write_text("1")

    @resumable(
        state=Dir("runs/{key}"), store=str(tmp_path / "s"), retry=RetryPolicy(attempts=2, wait=0)
    )
    def task(lr: float, state: Path | None = None) -> Iterator[None]:
        work(state)
        yield
        if len(seen) == 1:
            raise OSError("flaky")

    @resumable(
        state=Dir("runs/{key}"), store=str(tmp_path / "s"), retry=RetryPolicy(attempts=2, wait=0)
    )
    async def atask(lr: float, state: Path | None = None) -> AsyncIterator[None]:
        work(state)
        yield
        if len(seen) == 1:
            raise OSError("flaky")

    if kind == "sync":
        task(0.1)
    else:
        asyncio.run(atask(0.1))
    assert seen == [[], ["step"]]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "folder",
    [
        pytest.param(Dir("runs/{missing}"), id="unknown-field"),
        pytest.param(Dir("runs/{0}"), id="positional-field"),
        pytest.param(Dir(lambda lr: 42), id="callable-not-a-path"),  # type: ignore[arg-type,return-value]
    ],
)
def test_bad_folder_is_refused_before_the_task_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, folder: Dir
) -> None:
    """A field that is not an argument, or a callable that returns no path: ConfigurationError."""
    monkeypatch.chdir(tmp_path)
    seen: dict[float, list[str]] = {}
    task = _task(kind, folder, str(tmp_path / "store"), seen)
    with pytest.raises(ConfigurationError, match="Dir"):
        task(0.1)
    assert seen == {}


def test_callable_of_a_method_receives_self_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with key=, a method's Dir callable gets the instance before the arguments."""
    monkeypatch.chdir(tmp_path)

    class Model:
        name = "m1"

        @resumable(state=Dir(lambda self, lr: f"runs/{self.name}/{lr}"), key="m")
        def fit(self, lr: float, state: Path | None = None) -> Path | None:
            return state

    assert Model().fit(0.5) == tmp_path / "runs" / "m1" / "0.5"


def test_task_with_a_dir_callable_pickles_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local task whose Dir is a lambda travels by value and picks the same folder."""
    monkeypatch.chdir(tmp_path)

    @resumable(state=Dir(lambda lr: f"runs/{lr}"), store=str(tmp_path / "s"))
    def task(lr: float, state: Path | None = None) -> Path | None:
        return state

    loaded = cloudpickle.loads(cloudpickle.dumps(task))
    assert loaded(0.5) == task(0.5) == tmp_path / "runs" / "0.5"
