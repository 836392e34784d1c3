"""Traps a first user falls into: each gets a clear error, or the obvious behaviour.

A URL missing its ``//``, a cloud store without credentials, a ``Dir`` under a file,
``ctx().save()`` not awaited in a sync task, iterating over a generator task, state whose
module or class is missing, and ``NonRetryableError`` raised deep inside a task.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tenacity

from resumable import (
    Checkpoint,
    ConfigurationError,
    Dir,
    NonRetryableError,
    RetryPolicy,
    StateError,
    Storage,
    StorageError,
    ctx,
    resumable,
)

# -- a URL missing its '//' ------------------------------------------------------------------


@pytest.mark.parametrize("store", ["s3:/bucket/x", Path("s3://bucket/x")])
def test_a_store_url_with_one_slash_is_refused_where_it_is_written(
    store: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store="s3:/bucket/x" (or a Path of an s3:// URL) is refused with the fix, nothing made."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"Write 's3://bucket/x'"):
        resumable(state=0, store=store)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_url_with_one_slash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoint("gs:/bucket/x") would save into a local folder 'gs:': refused, with the fix."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"Write 'gs://bucket/x'"):
        Checkpoint("gs:/bucket/x")
    with pytest.raises(ConfigurationError, match=r"Write 'file:///data/runs'"):
        Checkpoint("file:/data/runs")
    assert list(tmp_path.iterdir()) == []


def test_the_store_from_the_environment_is_checked_when_the_call_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$RESUMABLE_STORE="memory:/runs" fails the call before the task runs; no folder is made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESUMABLE_STORE", "memory:/runs")
    ran = []

    @resumable(state=0)
    def task(state: int = 0) -> int:
        ran.append(state)
        return state

    with pytest.raises(ConfigurationError, match=r"Write 'memory://runs'"):
        task()
    assert ran == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["C:/runs", "run:2", "runs/a:b"])
def test_folder_names_with_a_colon_that_are_no_urls_still_work(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drive-like or colon-holding folder name that names no protocol is a folder, as before."""
    monkeypatch.chdir(tmp_path)
    with Checkpoint(name) as cp:
        cp.save_sync(b"x")
    assert (tmp_path / name).is_dir()


# -- missing credentials -----------------------------------------------------------------------


@pytest.fixture(name="no_aws")
def _no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS credentials anywhere botocore looks (it signs, and fails, before connecting)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


NOWHERE = {"endpoint_url": "http://127.0.0.1:9"}  # never reached: signing fails first


def test_missing_s3_credentials_are_a_storage_error_saying_how_to_give_them(
    no_aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Botocore's NoCredentialsError becomes a StorageError naming the env and storage_options."""
    pytest.importorskip("s3fs")
    storage = Storage(storage_options=NOWHERE, retry=RetryPolicy(attempts=3, wait=0))
    with (
        caplog.at_level(logging.WARNING, logger="resumable"),
        Checkpoint("s3://bucket/runs", storage=storage) as cp,
        pytest.raises(StorageError) as raised,
    ):
        cp.save_sync(b"x")
    text = str(raised.value)
    assert "no valid credentials for s3://bucket/runs" in text
    assert "AWS_ACCESS_KEY_ID" in text
    assert "storage_options" in text
    assert "NoCredentialsError" in text
    assert "retrying" not in caplog.text  # an answer, not a transient fault


def test_a_task_without_s3_credentials_fails_once_with_the_hint(
    no_aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A task on s3:// without credentials fails at its first load, never retried."""
    pytest.importorskip("s3fs")
    ran = []

    @resumable(
        state=0,
        store="s3://bucket/runs",
        attempts=4,
        storage=Storage(storage_options=NOWHERE),
    )
    def task(state: int = 0) -> int:
        ran.append(state)
        return state

    with (
        caplog.at_level(logging.WARNING, logger="resumable"),
        pytest.raises(StorageError) as raised,
    ):
        task()
    assert "AWS_ACCESS_KEY_ID" in str(raised.value)
    assert ran == []
    assert "attempt 1 failed" not in caplog.text


def test_missing_gcs_credentials_are_a_storage_error_saying_how_to_give_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Google's default credentials asked for where there are none: the hint, not a raw error."""
    pytest.importorskip("gcsfs")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on Google's cloud: no metadata server
    with pytest.raises(StorageError, match="GOOGLE_APPLICATION_CREDENTIALS") as raised:
        Checkpoint("gs://bucket/runs", storage=Storage(storage_options={"token": "google_default"}))
    assert type(raised.value.__cause__).__name__ == "DefaultCredentialsError"


def test_credential_errors_of_each_cloud_client_are_recognised() -> None:
    """The clients' own credential errors are recognised, also when another error wraps them."""
    from resumable._backend import missing_credentials

    errors: list[BaseException] = []
    if botocore := _optional("botocore.exceptions"):
        errors += [
            botocore.NoCredentialsError(),
            botocore.PartialCredentialsError(provider="env", cred_var="x"),
        ]
    if google := _optional("google.auth.exceptions"):
        errors += [google.DefaultCredentialsError("none"), google.RefreshError("expired")]
    if azure := _optional("azure.core.exceptions"):
        errors.append(azure.ClientAuthenticationError("no key"))
    if gcsfs_retry := _optional("gcsfs.retry"):
        errors.append(gcsfs_retry.HttpError({"code": 401, "message": "Unauthorized"}))
    if not errors:
        pytest.skip("no cloud client installed")
    for error in errors:
        assert missing_credentials(error), error
        wrapped = OSError("listing failed")
        wrapped.__cause__ = error
        assert missing_credentials(wrapped), error
    assert not missing_credentials(ConnectionResetError("reset by peer"))
    assert not missing_credentials(PermissionError("read-only"))


def _optional(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


# -- Dir under a file --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_dir_that_is_or_lies_under_a_file_fails_at_call_start_without_retries(
    where: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Dir("notes.txt") or Dir("notes.txt/out"): a ConfigurationError before any attempt."""
    (tmp_path / "notes.txt").write_text("a file")
    folder = tmp_path / "notes.txt" if where == "file" else tmp_path / "notes.txt" / "out"
    ran = []

    @resumable(state=Dir(folder), store=str(tmp_path / "store"), attempts=3)
    def task(state: Path) -> Iterator[None]:
        ran.append(state)
        yield

    with (
        caplog.at_level(logging.WARNING, logger="resumable"),
        pytest.raises(ConfigurationError, match=r"is a file, not a folder"),
    ):
        task()
    assert ran == []
    assert "attempt 1 failed" not in caplog.text
    assert (tmp_path / "notes.txt").read_text() == "a file"


# -- ctx().save() in a sync task ---------------------------------------------------------------


def test_save_without_await_in_a_sync_task_saves_and_says_to_use_save_sync(tmp_path: Path) -> None:
    """ctx().save(x) in a sync task saves x (the retry resumes from it), warns to use save_sync."""
    seen = []

    @resumable(state=0, store=str(tmp_path), retry=RetryPolicy(attempts=2, wait=0))
    def task(state: int = 0) -> int:
        seen.append(state)
        if ctx().attempt_number == 0:
            ctx().save(41)  # the trap itself: not awaited
            raise RuntimeError("crash after the save")
        return state + 1

    with pytest.warns(RuntimeWarning, match=r"ctx\(\).save_sync\(state\)") as warned:
        assert task() == 42
    assert seen == [0, 41]
    assert warned[0].filename == __file__  # points at the task's line


def test_save_awaited_in_an_async_task_does_not_warn(tmp_path: Path) -> None:
    """Await ctx().save(x) in an async task is the plain async twin (any warning would fail)."""
    seen = []

    @resumable(state=0, store=str(tmp_path), retry=RetryPolicy(attempts=2, wait=0))
    async def task(state: int = 0) -> int:
        seen.append(state)
        if ctx().attempt_number == 0:
            await ctx().save(7)
            raise RuntimeError("crash after the save")
        return state

    assert asyncio.run(task()) == 7
    assert seen == [0, 7]


def test_a_sync_task_may_await_save_on_a_loop_of_its_own(tmp_path: Path) -> None:
    """A sync task that runs a coroutine with asyncio.run may await ctx().save() there."""

    async def checkpoint(value: int) -> None:
        await ctx().save(value)

    @resumable(state=0, store=str(tmp_path), retry=RetryPolicy(attempts=2, wait=0))
    def task(state: int = 0) -> int:
        if ctx().attempt_number == 0:
            asyncio.run(checkpoint(5))
            raise RuntimeError("crash after the save")
        return state

    assert task() == 5


# -- iterating over a generator task -----------------------------------------------------------


def test_iterating_over_a_generator_task_is_a_type_error_that_says_why(tmp_path: Path) -> None:
    """`for x in task()` on a generator task: a TypeError saying the call returns its result."""

    @resumable(state=0, store=str(tmp_path))
    def steps(n: int, state: int = 0) -> Iterator[int]:
        yield from range(state + 1, n + 1)

    with pytest.raises(TypeError, match=r"steps\(\) is a @resumable generator task"):
        for _ in steps(3):
            pass
    with pytest.raises(TypeError, match=r"is a @resumable generator task"):
        [s for s in steps(3)]  # noqa: C416  # the comprehension is the trap
    with pytest.raises(TypeError, match=r"is a @resumable generator task"):
        _first, _second = steps(3)  # type: ignore[misc]
    assert steps(3) is None  # called plainly: its return value, as before


def test_a_generator_task_that_returns_an_iterable_is_iterated_as_usual(tmp_path: Path) -> None:
    """A generator task returning a list: `for x in task()` loops over that list, no error."""

    @resumable(state=0, store=str(tmp_path))
    def collect(n: int, state: int = 0) -> Iterator[int]:
        for i in range(state, n):
            yield i + 1
        return list(range(n))  # type: ignore[misc]  # a result beside the yields

    assert [x for x in collect(3)] == [0, 1, 2]  # noqa: C416


def test_async_for_over_an_async_generator_task_is_a_type_error_before_it_runs(
    tmp_path: Path,
) -> None:
    """`async for` over an async generator task: a TypeError saying to await it, nothing run."""
    ran = []

    @resumable(state=0, store=str(tmp_path))
    async def steps(n: int, state: int = 0) -> AsyncIterator[int]:
        ran.append(state)
        for i in range(state, n):
            yield i + 1

    async def main() -> None:
        async for _ in steps(3):  # type: ignore[attr-defined]
            pass

    with pytest.raises(TypeError, match=r"last = await steps\(\.\.\.\)"):
        asyncio.run(main())
    assert ran == []
    assert asyncio.run(steps(3)) == 3  # type: ignore[arg-type]


# -- unpickling that needs what this process lacks ---------------------------------------------


@pytest.fixture(name="models")
def _models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module ``trap_models`` with a class ``Model``, in a folder of its own."""
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "trap_models.py").write_text(
        textwrap.dedent(
            """
            class Model:
                def __init__(self, n):
                    self.n = n
            """
        )
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "trap_models", raising=False)
    return folder


def _save_a_model(store: Path) -> None:
    """Run a task that yields a trap_models.Model, then fails: its snapshot stays."""
    import trap_models  # type: ignore[import-not-found]

    @resumable(state=None, store=str(store), key="train")
    def train(state: Any = None) -> Iterator[Any]:
        yield trap_models.Model(1)
        raise RuntimeError("stop: the snapshot stays")

    with pytest.raises(RuntimeError, match="stop"):
        train()


def _load_it(store: Path) -> Any:
    @resumable(state=None, store=str(store), key="train")
    def train(state: Any = None) -> Any:
        return state

    return train()


def test_a_missing_module_is_named_and_the_snapshot_kept(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State that needs a module missing from sys.path: the error names it, says not to delete."""
    _save_a_model(tmp_path / "store")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(models)])
    monkeypatch.delitem(sys.modules, "trap_models")
    with pytest.raises(StateError, match=r"needs module 'trap_models'") as raised:
        _load_it(tmp_path / "store")
    assert "importable" in str(raised.value)
    assert "do not delete" in str(raised.value)
    assert "start over" not in str(raised.value)


def test_a_missing_class_is_named_with_its_module(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State whose class was renamed: the error names 'Model' and its module, and an alias fix."""
    _save_a_model(tmp_path / "store")
    monkeypatch.delattr(sys.modules["trap_models"], "Model")
    with pytest.raises(StateError, match=r"needs 'Model' from module 'trap_models'") as raised:
        _load_it(tmp_path / "store")
    assert "Model = TheNewName" in str(raised.value)
    assert "start over" not in str(raised.value)


class Fussy:
    """A class whose instances refuse to be unpickled: other unpickling errors."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse, ()


def _refuse() -> None:
    raise ValueError("this version refuses old state")


def test_other_unpickling_errors_still_advise_to_start_over(tmp_path: Path) -> None:
    """An unpickling error that is not a missing name keeps the advice to delete the snapshot."""

    @resumable(state=None, store=str(tmp_path), key="k")
    def save(state: Any = None) -> Iterator[Any]:
        yield Fussy()
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        save()
    with pytest.raises(StateError, match=r"refuses old state.*start over"):
        _load_it_at(tmp_path, "k")


def _load_it_at(store: Path, key: str) -> Any:
    @resumable(state=None, store=str(store), key=key)
    def load(state: Any = None) -> Any:
        return state

    return load()


# -- NonRetryableError -------------------------------------------------------------------------


class BadInput(NonRetryableError, ValueError):
    """A user's own error that retrying cannot fix."""


def _deep(value: int) -> None:
    if value < 0:
        raise BadInput(f"{value} is negative")


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(attempts=5, wait=0),
        RetryPolicy(attempts=5, wait=0, retry_on=(ValueError, NonRetryableError)),
        RetryPolicy(attempts=5, wait=0, retry_on=tenacity.retry_if_exception_type(Exception)),
    ],
    ids=["default", "listed in retry_on", "tenacity strategy"],
)
def test_non_retryable_error_is_never_retried(policy: RetryPolicy, tmp_path: Path) -> None:
    """NonRetryableError raised deep in a task fails the call at once, whatever the policy says."""
    tries = []

    @resumable(state=0, store=str(tmp_path), retry=policy)
    def task(value: int, state: int = 0) -> Iterator[int]:
        tries.append(state)
        yield state + 1
        _deep(value)

    with pytest.raises(ValueError, match="-1 is negative"):  # caught as the builtin too
        task(-1)
    assert tries == [0]


def test_non_retryable_error_is_never_retried_in_an_async_task(tmp_path: Path) -> None:
    """The same for a coroutine task."""
    tries = []

    @resumable(state=0, store=str(tmp_path), attempts=5)
    async def task(state: int = 0) -> int:
        tries.append(state)
        raise NonRetryableError("stop now")

    with pytest.raises(NonRetryableError, match="stop now"):
        asyncio.run(task())
    assert tries == [0]


def test_other_errors_are_still_retried(tmp_path: Path) -> None:
    """Errors that are not NonRetryableError are retried as the policy says."""
    tries = []

    @resumable(state=0, store=str(tmp_path), retry=RetryPolicy(attempts=3, wait=0))
    def task(state: int = 0) -> int:
        tries.append(state)
        if len(tries) < 3:
            raise ValueError("transient")
        return len(tries)

    assert task() == 3


def test_non_retryable_error_counts_against_the_snapshot_it_started_from(tmp_path: Path) -> None:
    """A NonRetryableError is the task's own failure: poison_after=1 skips its snapshot."""
    starts: list[int] = []

    @resumable(state=0, store=str(tmp_path), key="p", poison_after=1)
    def task(state: int = 0) -> Iterator[int]:
        starts.append(state)
        if state == 0:
            yield 1
            yield 2
        raise NonRetryableError("bad data in this snapshot")

    for _ in range(3):
        with pytest.raises(NonRetryableError):
            task()
    assert starts == [0, 2, 1]  # the third call fell back from snapshot 2 to snapshot 1
