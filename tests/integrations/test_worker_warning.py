"""On an engine's worker, a local-disk store is named in a warning; resumes name their store.

The engines are stood in for by small modules put in ``sys.modules`` (the library only asks
modules the process already imported), plus one real Dask cluster in this process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import RetryPolicy, _engines, resumable

KINDS = ["sync", "async"]


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts as a process that has not warned, in a folder of its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    _engines.WARNED.clear()
    yield
    _engines.WARNED.clear()


def _fake_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like a Dask worker running a task."""
    fake = types.ModuleType("distributed")
    fake.get_worker = lambda: object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "distributed", fake)


def _fake_ray(monkeypatch: pytest.MonkeyPatch, *, mode: int) -> None:
    """Make this process look like Ray's: a worker (mode 1) or the driver (mode 0)."""
    fake: Any = types.ModuleType("ray")
    fake.WORKER_MODE = 1
    fake.is_initialized = lambda: True
    context = types.SimpleNamespace(worker=types.SimpleNamespace(mode=mode))
    fake.get_runtime_context = lambda: context
    monkeypatch.setitem(sys.modules, "distributed", None)  # not on a Dask worker too
    monkeypatch.setitem(sys.modules, "ray", fake)


def _no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like one that imported neither engine."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.setitem(sys.modules, "ray", None)


def _call(kind: str, store: str | None = None, key: str = "k") -> Any:
    """Run a one-yield task of the given kind (sync or async) and return its result."""

    @resumable(state=0, store=store, key=key)
    def task(state: int = 0) -> Iterator[int]:
        yield state + 1

    @resumable(state=0, store=store, key=key)
    async def atask(state: int = 0) -> AsyncIterator[int]:
        yield state + 1

    if kind == "sync":
        return task()
    return asyncio.run(atask())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "resumable" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_dask_worker_with_default_store_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path, kind: str
) -> None:
    """The default store on a Dask worker: one warning naming its path and RESUMABLE_STORE."""
    _fake_dask(monkeypatch)
    caplog.set_level(logging.WARNING, logger="resumable")
    _call(kind)
    _call(kind, key="other")
    _call(kind, store="elsewhere")
    (message,) = _warnings(caplog)
    assert "Dask worker" in message
    assert str(tmp_path / ".resumable") in message
    assert "RESUMABLE_STORE=s3://" in message


@pytest.mark.parametrize("kind", KINDS)
def test_ray_worker_with_local_store_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path, kind: str
) -> None:
    """A relative store= on a Ray worker: the warning names Ray and the resolved path."""
    _fake_ray(monkeypatch, mode=1)
    caplog.set_level(logging.WARNING, logger="resumable")
    _call(kind, store="runs")
    (message,) = _warnings(caplog)
    assert "Ray worker" in message
    assert str(tmp_path / "runs") in message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("setup", "store"),
    [
        pytest.param(_fake_dask, "memory://shared", id="dask-remote-store"),
        pytest.param(lambda mp: _fake_ray(mp, mode=0), None, id="ray-driver"),
        pytest.param(_no_engine, None, id="no-engine"),
    ],
)
def test_no_warning_off_workers_or_with_a_remote_store(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    setup: Callable[[pytest.MonkeyPatch], None],
    store: str | None,
) -> None:
    """A remote store on a worker, a Ray driver, or no engine at all: no warning."""
    setup(monkeypatch)
    caplog.set_level(logging.WARNING, logger="resumable")
    _call(kind, store=store)
    assert _warnings(caplog) == []
    assert not _engines.WARNED.is_set()


@pytest.mark.parametrize("kind", KINDS)
def test_resume_line_names_the_store(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, kind: str
) -> None:
    """The INFO line of a resumed attempt names the key, the snapshot and the resolved store."""
    failed: list[int] = []

    def fail_once() -> None:
        if not failed:
            failed.append(1)
            raise OSError("flaky")

    @resumable(state=0, store="store", key="k", retry=RetryPolicy(attempts=2, wait=0))
    def task(state: int = 0) -> Iterator[int]:
        yield state + 1
        fail_once()

    @resumable(state=0, store="store", key="k", retry=RetryPolicy(attempts=2, wait=0))
    async def atask(state: int = 0) -> AsyncIterator[int]:
        yield state + 1
        fail_once()

    caplog.set_level(logging.INFO, logger="resumable")
    if kind == "sync":
        task()
    else:
        asyncio.run(atask())
    lines = [r.getMessage() for r in caplog.records if "resumes from snapshot" in r.getMessage()]
    assert [line.split(": the state saved at ")[0] for line in lines] == [
        f"k: attempt 2 resumes from snapshot 0 of {tmp_path / 'store'}"
    ]


def test_real_dask_worker_warns(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """A task submitted to a real Dask worker (threads, in this process) logs the warning."""
    distributed = pytest.importorskip("distributed")

    @resumable(state=0, key="dask")
    def task(state: int = 0) -> Iterator[int]:
        yield state + 1

    caplog.set_level(logging.WARNING, logger="resumable")
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.submit(task, pure=False).result(timeout=60)
    messages = [m for m in _warnings(caplog) if "Dask worker" in m]
    assert len(messages) == 1
    assert str(tmp_path / ".resumable") in messages[0]
