"""``resumable rm`` on a signed store leaves a signed "cleared" record: old copies never load.

As with ``on_success="clear"``, a signed task that is removed keeps one signed record above
every snapshot it had, so that its old files copied back (a backup, a sync tool) are refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable import Checkpoint, Storage, resumable

SECRET = "s3cret-signing-key"


def _rm(store: Path, key: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RESUMABLE_SIGNING_KEY"}
    if secret is not None:
        env["RESUMABLE_SIGNING_KEY"] = secret
    return subprocess.run(
        [sys.executable, "-m", "resumable", "rm", str(store), key, "--yes"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def _copy_back(backup: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in backup.iterdir():
        shutil.copy2(path, folder / path.name)


def test_rm_of_a_signed_task_refuses_its_old_files_copied_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``rm --yes`` of a signed @resumable task, its files copied back start it afresh."""
    monkeypatch.delenv("RESUMABLE_SIGNING_KEY", raising=False)
    store = tmp_path / "store"
    starts: list[int] = []

    @resumable(
        state=0,
        store=str(store),
        key="train",
        on_success="keep",
        storage=Storage(signing_key=SECRET),
    )
    def train(state: int = 0) -> Iterator[int]:
        starts.append(state)
        yield state + 1
        yield state + 2

    train()
    backup = tmp_path / "backup"
    shutil.copytree(store / "train", backup)
    done = _rm(store, "train", SECRET)
    assert done.returncode == 0, done.stderr
    _copy_back(backup, store / "train")
    train()
    assert starts == [0, 0]  # the copied-back snapshot (state 2) was refused


def test_rm_of_a_signed_checkpoint_refuses_its_old_files_copied_back(tmp_path: Path) -> None:
    """A bare signed Checkpoint (signed under its URL's last segment) gets the record too."""
    folder = tmp_path / "store" / "job"
    with Checkpoint(folder, storage=Storage(signing_key=SECRET)) as cp:
        cp.save_sync(b"one")
        cp.save_sync(b"two")
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    done = _rm(tmp_path / "store", "job", SECRET)
    assert done.returncode == 0, done.stderr
    _copy_back(backup, folder)
    with Checkpoint(folder, storage=Storage(signing_key=SECRET)) as cp:
        assert cp.load_sync() is None
        cp.save_sync(b"three")  # a new snapshot supersedes the record
        found = cp.read_newest_with(b"".join)
    assert found is not None
    assert found[1] == b"three"


@pytest.mark.parametrize("secret", [None, "another key"])
def test_rm_of_a_signed_task_without_its_key_is_refused(tmp_path: Path, secret: str | None) -> None:
    """Without the task's signing key rm can leave no record: it refuses and removes nothing."""
    folder = tmp_path / "store" / "job"
    with Checkpoint(folder, storage=Storage(signing_key=SECRET)) as cp:
        cp.save_sync(b"one")
    before = sorted(p.name for p in folder.iterdir())
    done = _rm(tmp_path / "store", "job", secret)
    assert done.returncode == 2
    assert "RESUMABLE_SIGNING_KEY" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_rm_of_a_signed_task_leaves_only_the_record(tmp_path: Path) -> None:
    """After rm of a signed task its folder holds one manifest, the record: no payload, no mark."""
    folder = tmp_path / "store" / "job"
    with Checkpoint(folder, storage=Storage(signing_key=SECRET)) as cp:
        cp.save_sync(os.urandom(200_000))  # a payload object of its own
        cp.save_sync(b"two")
        cp.mark_failed(1)
    done = _rm(tmp_path / "store", "job", SECRET)
    assert done.returncode == 0, done.stderr
    assert "cleared" in done.stdout
    assert [p.name for p in folder.iterdir()] == ["00000000000000000002.json"]
