"""A local store is private: objects 0600, folders the library makes 0700, whatever the umask.

A task's state often holds secrets (tokens, customer data), and a snapshot of a 0600 file kept
in a 0700 folder must not become readable by every user of the machine. Like ``tempfile``,
the local backend creates each object 0600 and each folder it makes 0700; folders that already
exist keep their mode.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable import Checkpoint, resumable
from resumable._backend import LocalBackend


@pytest.fixture(name="umask", params=[0o000, 0o022], ids=["umask-0", "umask-022"])
def _umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under this umask (the process's; restored after)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_snapshot_objects_are_0600(tmp_path: Path, umask: int) -> None:
    """Payloads, manifests and failure marks of a local store are created 0600."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(200_000))  # a payload object, not inlined
    secret.chmod(0o600)
    store = tmp_path / "store"
    cp = Checkpoint(store)
    cp.save_sync(secret)
    cp.save_sync(b"small: inlined in its manifest")
    cp.mark_failed(1)
    names = sorted(p.name for p in store.iterdir())
    assert any(n.endswith(".blob") for n in names)
    assert any(n.endswith(".json") for n in names)
    assert any(".failed." in n for n in names)
    assert {n: oct(mode(store / n)) for n in names} == {n: oct(0o600) for n in names}


def test_temp_files_are_0600(tmp_path: Path, umask: int) -> None:
    """An object still being written (its temp file) is 0600 too."""
    backend = LocalBackend(tmp_path)
    writer = backend.writer("00000000000000000000.0123456789abcdef.blob")
    try:
        writer.write(b"secret")
        (temp,) = tmp_path.iterdir()
        assert temp.name.endswith(".tmp")
        assert mode(temp) == 0o600
    finally:
        writer.abort()


def test_every_new_folder_level_is_0700(tmp_path: Path, umask: int) -> None:
    """Each folder a save creates (all missing levels of a nested key) is 0700."""
    store = tmp_path / "a" / "b"
    before = mode(tmp_path)

    @resumable(state=0, store=str(store), key="proj/exp/run", on_success="keep")
    def task(state: int = 0):  # type: ignore[no-untyped-def]
        yield state + 1

    task()
    made = [tmp_path / "a", store, store / "proj", store / "proj" / "exp", store / "proj/exp/run"]
    assert {str(p): oct(mode(p)) for p in made} == {str(p): oct(0o700) for p in made}
    assert mode(tmp_path) == before


def test_existing_folders_keep_their_mode(tmp_path: Path, umask: int) -> None:
    """A store folder that exists already keeps its mode; only the folders made are 0700."""
    store = tmp_path / "shared-store"
    store.mkdir()
    store.chmod(0o755)
    team = store / "team"
    team.mkdir()
    team.chmod(0o750)
    Checkpoint(team / "run").save_sync(b"state")
    assert mode(store) == 0o755
    assert mode(team) == 0o750
    assert mode(team / "run") == 0o700
