"""Relative store and Dir paths are resolved when a task is called, in the call's folder."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from resumable import (
    Checkpoint,
    Dir,
    ctx,
    resumable,
)


def where(state: Path) -> tuple[Path, str]:
    """The folder injected and the store folder of the running call."""
    return state, ctx().checkpoint.uri


def make_tasks(**options: Any) -> tuple[Any, Any]:
    """A sync and an async generator task with folder state, decorated here and now."""

    @resumable(state=Dir("outputs"), **options)
    def sync_task(state: Path) -> Iterator[None]:
        (state / "f").write_text("x")
        yield
        return where(state)

    @resumable(state=Dir("outputs"), **options)
    async def async_task(state: Path) -> AsyncIterator[Any]:
        (state / "f").write_text("x")
        yield where(state)

    return sync_task, async_task


def results(sync_task: Any, async_task: Any) -> list[tuple[Path, str]]:
    """What both tasks report when called."""
    return [sync_task(), asyncio.run(async_task())]


@pytest.mark.parametrize("store", [None, "snapshots"])
def test_paths_follow_the_folder_of_the_call(
    store: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decorated in one folder, called in another: Dir and store both land in the second."""
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    tasks = make_tasks(store=store) if store else make_tasks()
    monkeypatch.chdir(tmp_path / "b")
    for folder, uri in results(*tasks):
        assert folder == tmp_path / "b" / "outputs"
        assert uri.startswith(str(tmp_path / "b" / (store or ".resumable")))
    assert not (tmp_path / "a" / "outputs").exists()


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_a_shipped_task_resolves_paths_where_it_runs(
    dumps: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task pickled by value resolves its relative paths in the receiving folder."""
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    tasks = [pickle.loads(dumps(t)) for t in make_tasks(store="snapshots")]
    monkeypatch.chdir(tmp_path / "b")
    for folder, uri in results(*tasks):
        assert folder == tmp_path / "b" / "outputs"
        assert uri.startswith(str(tmp_path / "b" / "snapshots"))


def test_absolute_paths_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Absolute Dir and store paths do not depend on the folder of the call."""

    @resumable(state=Dir(tmp_path / "out"), store=str(tmp_path / "st"))
    def task(state: Path) -> Iterator[None]:
        yield
        return where(state)

    monkeypatch.chdir(tmp_path.parent)
    folder, uri = task()
    assert folder == tmp_path / "out"
    assert uri.startswith(str(tmp_path / "st"))


# -- store URLs -----------------------------------------------------------------------------------


def test_store_url_joins_keys_on_bare_protocols() -> None:
    """store="memory://" puts key k at memory://k, not at a local path named memory:."""

    @resumable(state=0, store="memory://", key="joined-key", on_success="keep")
    def task(state: int = 0) -> Any:
        yield 1

    task()
    assert not Path("memory:").exists()
    with Checkpoint("memory://joined-key") as cp:
        assert cp.load_sync() is not None
