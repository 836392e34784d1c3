"""A Checkpoint pointed at one object (flyte's ``_flytecheckpoints``) says so, on every store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import fsspec
import pytest

from resumable import Checkpoint, ConfigurationError, resumable

from ..conftest import IO, read_object, store_files

#: What flyte's checkpoint leaves: one object, where a folder of snapshots was expected.
NAME = "_flytecheckpoints"
CONTENT = b"flyte's own checkpoint bytes"


@pytest.fixture(name="object_url")
def _object_url(store_url: str) -> str:
    """The URL of one object (not a folder) in a fresh store."""
    url = f"{store_url}/{NAME}"
    with fsspec.open(url, "wb", auto_mkdir=True) as f:
        f.write(CONTENT)
    return url


def test_save_to_an_object_is_a_configuration_error(object_url: str, io: IO) -> None:
    """save() at an object's URL says it names a file, not a folder, and leaves the object be."""
    with (
        Checkpoint(object_url) as cp,
        pytest.raises(ConfigurationError, match="names a file, not a folder") as exc,
    ):
        io.save(cp, b"snapshot")
    message = str(exc.value)
    assert object_url in message
    assert "fsspec.open(" in message  # how to read the object itself
    assert isinstance(exc.value, ValueError)
    store = object_url.rsplit("/", 1)[0]
    assert read_object(store, NAME) == CONTENT
    assert store_files(store) == [NAME]


def test_load_of_an_object_is_the_same_error(object_url: str, io: IO) -> None:
    """load() raises the same error as save(), rather than None as if nothing were saved."""
    with (
        Checkpoint(object_url) as cp,
        pytest.raises(ConfigurationError, match="names a file, not a folder"),
    ):
        io.load(cp)


def test_every_operation_says_the_same(object_url: str) -> None:
    """info, exists, clear and a background save raise it too: no call reads it as empty."""
    with Checkpoint(object_url) as cp:
        for call in (cp.info_sync, cp.exists_sync, cp.clear_sync):
            with pytest.raises(ConfigurationError, match="names a file"):
                call()
        cp.save_background_sync(b"snapshot")
        with pytest.raises(ConfigurationError, match="names a file"):
            cp.flush_sync()

    async def twins() -> None:
        with Checkpoint(object_url) as cp:
            with pytest.raises(ConfigurationError, match="names a file"):
                await cp.info()
            with pytest.raises(ConfigurationError, match="names a file"):
                await cp.clear()

    asyncio.run(twins())


def test_a_folder_beside_the_object_works(object_url: str, io: IO) -> None:
    """The way out the message gives: a folder of its own next to the object."""
    beside = f"{object_url.rsplit('/', 1)[0]}/resumable"
    with Checkpoint(beside) as cp:
        io.save(cp, b"snapshot")
        root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"snapshot"


def test_a_task_whose_store_is_a_file_fails_at_once(tmp_path: Path) -> None:
    """@resumable with a file on disk as its store raises the error at once, untried again.

    (An object store holds ``<object>/<key>/...`` beside the object: a prefix, not a folder.)
    """
    store = tmp_path / NAME
    store.write_bytes(CONTENT)
    calls = []

    @resumable(store=store, key="job", attempts=3)
    def job() -> int:
        calls.append(1)
        return 1

    with pytest.raises(ConfigurationError, match=f"is inside {store}, which is a file"):
        job()
    assert len(calls) <= 1


def test_inside_a_file_on_disk_names_the_file(tmp_path: Path, io: IO) -> None:
    """On disk, a URL inside a file names that file: the folder that cannot exist."""
    blocker = tmp_path / NAME
    blocker.write_bytes(CONTENT)
    with Checkpoint(blocker / "task") as cp:
        with pytest.raises(ConfigurationError, match=f"is inside {blocker}, which is a file"):
            io.save(cp, b"snapshot")
        with pytest.raises(ConfigurationError, match="which is a file"):
            io.load(cp)
    assert blocker.read_bytes() == CONTENT


def test_an_emptied_store_is_still_a_folder(store_url: str) -> None:
    """A folder whose snapshots were all cleared is a folder again, never taken for an object."""
    with Checkpoint(store_url) as cp:
        cp.save_sync(b"one")
        cp.clear_sync()
        assert cp.load_sync() is None
        cp.save_sync(b"two")
        assert cp.exists_sync()
