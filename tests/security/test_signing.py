"""Signed stores: what a signature covers, and what a store with a key refuses.

With a key (``Storage(signing_key=...)`` or ``$RESUMABLE_SIGNING_KEY``), manifests carry an
HMAC; unsigned, wrongly signed or moved snapshots are refused before anything is unpickled.
Signatures cover the checkpoint's name (by default its URL's last segment; ``@resumable``
tasks, their key), so one task's signed files copied into another's folder are refused, while
a whole store moved elsewhere keeps loading. In a signed store unsigned failure marks are not
counted, and old signed files copied back after a clear or a ``resumable rm`` never load. A
task shipped by value never carries its key: the worker resolves its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import fsspec
import pytest

from resumable import (
    Captured,
    Checkpoint,
    ConfigurationError,
    CorruptCheckpointError,
    Storage,
    resumable,
)

from ..conftest import IO, as_format_1, read_object, store_files, write_object

SECRET = b"signing secret"
RM_SECRET = "s3cret-signing-key"
SHIPPED_SECRET = "a-secret-that-must-not-travel-0123456789"

# -- signed snapshots -----------------------------------------------------------------------------


class Exploit:
    """Unpickling this runs code: the attack that signing defends against."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned-by-pickle",))


def test_signed_round_trip(store_url: str, io: IO) -> None:
    """With a key, manifests carry an HMAC and load back."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, b"signed")
        doc = json.loads(read_object(store_url, "00000000000000000000.json"))
        assert len(doc["hmac"]) == 64
        assert (io.load(cp) / "payload").read_bytes() == b"signed"


def test_unsigned_snapshot_refused_with_key(store_url: str, io: IO) -> None:
    """With a key set, an unsigned snapshot is refused; the previous signed one is used."""
    with (
        Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as signed,
        Checkpoint(store_url) as unsigned,
    ):
        io.save(signed, b"good")
        io.save(unsigned, b"planted")
        assert (io.load(signed) / "payload").read_bytes() == b"good"


def test_wrong_key_refused(store_url: str, io: IO) -> None:
    """A snapshot signed with another key is refused with SignatureError."""
    with Checkpoint(store_url, storage=Storage(signing_key=b"other")) as other:
        io.save(other, b"x")
    with (
        Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp,
        pytest.raises(CorruptCheckpointError) as exc,
    ):
        io.load(cp)
    assert "signature is wrong" in str(exc.value)


def test_moved_signature_refused(store_url: str, io: IO) -> None:
    """A valid signature copied onto another manifest does not verify."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, b"first")
        io.save(cp, b"second")
        first = json.loads(read_object(store_url, "00000000000000000000.json"))
        second = json.loads(read_object(store_url, "00000000000000000001.json"))
        second["hmac"] = first["hmac"]
        write_object(store_url, "00000000000000000001.json", json.dumps(second).encode())
        assert (io.load(cp) / "payload").read_bytes() == b"first"


def test_malicious_pickle_never_unpickled_with_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted pickle that runs code is refused before unpickling when a key is set."""
    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "store")
    Checkpoint(f"{store}/victim").commit(Captured("state", lambda: [pickle.dumps(Exploit())]))

    @resumable(state=0, store=store, key="victim", storage=Storage(signing_key=SECRET))
    def task(state: int = 0) -> int:
        return state

    with pytest.raises(CorruptCheckpointError, match="not signed"):
        task()
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_signing_key_from_environment(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """RESUMABLE_SIGNING_KEY turns signing on without code changes."""
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", "from-env")
    with Checkpoint(store_url) as cp:
        cp.save_sync(b"x")
    doc = json.loads(read_object(store_url, "00000000000000000000.json"))
    assert "hmac" in doc
    with pytest.raises(ConfigurationError):
        Checkpoint(store_url, storage=Storage(signing_key=b""))


# -- bound to their checkpoint --------------------------------------------------------------------


def copy_all(src: str, dst: str) -> None:
    fs, path = fsspec.url_to_fs(dst)
    fs.makedirs(path, exist_ok=True)
    for name in store_files(src):
        write_object(dst, name, read_object(src, name))


def test_signed_files_copied_to_another_task_are_refused(store_url: str, io: IO) -> None:
    """Task A's signed snapshot copied into task B's folder does not load as B's."""
    a, b = f"{store_url}/task-a", f"{store_url}/task-b"
    with Checkpoint(b, storage=Storage(signing_key=SECRET)) as cp_b:
        io.save(cp_b, b"b's own state")
    with Checkpoint(a, storage=Storage(signing_key=SECRET)) as cp_a:
        io.save(cp_a, b"a's state")
        io.save(cp_a, b"a's newer state")
    for name in store_files(a):  # A's snapshots 0 and 1 replace B's snapshot 0
        write_object(b, name, read_object(a, name))
    with (
        Checkpoint(b, storage=Storage(signing_key=SECRET)) as cp_b,
        pytest.raises(CorruptCheckpointError, match="another checkpoint"),
    ):
        io.load(cp_b)


def test_a_store_moved_whole_still_loads(store_url: str, io: IO) -> None:
    """Signatures name the checkpoint, not the store's place: a moved store keeps loading."""
    with Checkpoint(f"{store_url}/old-place/task", storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, b"state")
    copy_all(f"{store_url}/old-place/task", f"{store_url}/new-place/task")
    with Checkpoint(f"{store_url}/new-place/task", storage=Storage(signing_key=SECRET)) as cp:
        root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"state"


def test_explicit_name_binds_signatures(store_url: str, io: IO) -> None:
    """A checkpoint given a name loads only snapshots signed under that name."""
    with Checkpoint(store_url, name="proj/a/run", storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, b"state")
    with (
        Checkpoint(store_url, name="proj/b/run", storage=Storage(signing_key=SECRET)) as cp,
        pytest.raises(CorruptCheckpointError, match="another checkpoint"),
    ):
        io.load(cp)
    with Checkpoint(store_url, name="proj/a/run", storage=Storage(signing_key=SECRET)) as cp:
        assert io.load(cp) is not None


def test_old_signed_files_copied_back_after_clear_never_load(store_url: str, io: IO) -> None:
    """After a clear, replaying the task's own old signed files does not resurrect them."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET, keep=5)) as cp:
        io.save(cp, b"step 1")
        io.save(cp, b"step 2")
        saved = {name: read_object(store_url, name) for name in store_files(store_url)}
        cp.clear_sync()
    for name, data in saved.items():
        write_object(store_url, name, data)
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        assert io.load(cp) is None  # as after the clear: nothing saved
        io.save(cp, b"fresh start")
        root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"fresh start"
        assert cp.newest_seq() == 3  # above the cleared ones


def test_unsigned_clear_leaves_nothing_behind(store_url: str, io: IO) -> None:
    """Without a key, clear deletes everything (there is nothing to guard against)."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"x")
        cp.clear_sync()
    assert store_files(store_url) == []


def plant_marks(url: str, seq: int, count: int) -> None:
    for i in range(count):
        write_object(url, f"{seq:020d}.failed.{i:016x}", b"")


def test_unsigned_marks_do_not_roll_a_signed_task_back(store_url: str, io: IO) -> None:
    """Three planted unsigned failure marks do not make a signed store skip its newest."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET, keep=5)) as cp:
        io.save(cp, b"old")
        io.save(cp, b"newest")
        plant_marks(store_url, 1, 3)
        found = cp.read_newest_with(b"".join, poison_after=3)
        assert found is not None
        assert found[1] == b"newest"


def test_signed_marks_still_count(store_url: str, io: IO) -> None:
    """The store's own (signed) failure marks still make a poison snapshot fall back."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET, keep=5)) as cp:
        io.save(cp, b"old")
        io.save(cp, b"newest")
        for _ in range(3):
            cp.mark_failed(1)
        found = cp.read_newest_with(b"".join, poison_after=3)
        assert found is not None
        assert found[1] == b"old"


def test_unsigned_store_marks_unchanged(store_url: str, io: IO) -> None:
    """Without a key, marks are counted as before (empty files)."""
    with Checkpoint(store_url, storage=Storage(keep=5)) as cp:
        io.save(cp, b"old")
        io.save(cp, b"newest")
        plant_marks(store_url, 1, 3)
        found = cp.read_newest_with(b"".join, poison_after=3)
        assert found is not None
        assert found[1] == b"old"


def test_manifests_signed_by_the_previous_version_still_load(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """A store signed before signatures named the checkpoint stays loadable, with a warning."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, b"old format")
    doc = as_format_1(store_url, 0)
    fields = [1, doc["seq"], doc["kind"], doc["size"], doc["sha256"], doc["compression"], ""]
    message = "\n".join(str(f) for f in fields).encode()
    doc["hmac"] = hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    write_object(store_url, f"{0:020d}.json", json.dumps(doc).encode())
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        with caplog.at_level(logging.WARNING, logger="resumable"):
            root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"old format"
    assert "old signature" in caplog.text


def test_decorated_tasks_sign_their_whole_key(tmp_path: Path) -> None:
    """Nested task keys that share a last segment do not accept each other's signed files."""
    from resumable import resumable

    store = str(tmp_path / "store")

    def task_for(key: str) -> Any:
        @resumable(
            state=0, store=store, key=key, on_success="keep", storage=Storage(signing_key=SECRET)
        )
        def count(n: int, state: int = 0) -> Any:
            for i in range(state, n):
                yield i + 1
            return state

        return count

    assert task_for("proj/b/run")(2) == 0  # b's own snapshots: state 2
    assert task_for("proj/a/run")(5) == 0  # a's: state 5
    copy_all(f"{store}/proj/a/run", f"{store}/proj/b/run")  # a's newer files land in b
    # b's next call refuses a's files (signed for another key) and resumes from its own 2.
    assert task_for("proj/b/run")(2) == 2


def test_cli_verify_checks_a_decorated_task_under_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resumable verify` with the signing key finds a nested task's own snapshots ok."""
    from resumable import resumable
    from resumable.testing import run_command as main

    store = str(tmp_path / "store")

    @resumable(
        state=0,
        store=store,
        key="proj/a/run",
        on_success="keep",
        storage=Storage(signing_key=SECRET),
    )
    def count(n: int, state: int = 0) -> Any:
        for i in range(state, n):
            yield i + 1
        return n

    count(3)
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", SECRET.decode())
    assert main(["verify", store, "proj/a/run"]) == 0
    assert main(["verify", store]) == 0


# -- resumable rm of a signed task ----------------------------------------------------------------


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
        storage=Storage(signing_key=RM_SECRET),
    )
    def train(state: int = 0) -> Iterator[int]:
        starts.append(state)
        yield state + 1
        yield state + 2

    train()
    backup = tmp_path / "backup"
    shutil.copytree(store / "train", backup)
    done = _rm(store, "train", RM_SECRET)
    assert done.returncode == 0, done.stderr
    _copy_back(backup, store / "train")
    train()
    assert starts == [0, 0]  # the copied-back snapshot (state 2) was refused


def test_rm_of_a_signed_checkpoint_refuses_its_old_files_copied_back(tmp_path: Path) -> None:
    """A bare signed Checkpoint (signed under its URL's last segment) gets the record too."""
    folder = tmp_path / "store" / "job"
    with Checkpoint(folder, storage=Storage(signing_key=RM_SECRET)) as cp:
        cp.save_sync(b"one")
        cp.save_sync(b"two")
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    done = _rm(tmp_path / "store", "job", RM_SECRET)
    assert done.returncode == 0, done.stderr
    _copy_back(backup, folder)
    with Checkpoint(folder, storage=Storage(signing_key=RM_SECRET)) as cp:
        assert cp.load_sync() is None
        cp.save_sync(b"three")  # a new snapshot supersedes the record
        found = cp.read_newest_with(b"".join)
    assert found is not None
    assert found[1] == b"three"


@pytest.mark.parametrize("secret", [None, "another key"])
def test_rm_of_a_signed_task_without_its_key_is_refused(tmp_path: Path, secret: str | None) -> None:
    """Without the task's signing key rm can leave no record: it refuses and removes nothing."""
    folder = tmp_path / "store" / "job"
    with Checkpoint(folder, storage=Storage(signing_key=RM_SECRET)) as cp:
        cp.save_sync(b"one")
    before = sorted(p.name for p in folder.iterdir())
    done = _rm(tmp_path / "store", "job", secret)
    assert done.returncode == 2
    assert "RESUMABLE_SIGNING_KEY" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_rm_of_a_signed_task_leaves_only_the_record(tmp_path: Path) -> None:
    """After rm of a signed task its folder holds one manifest, the record: no payload, no mark."""
    folder = tmp_path / "store" / "job"
    with Checkpoint(folder, storage=Storage(signing_key=RM_SECRET)) as cp:
        cp.save_sync(os.urandom(200_000))  # a payload object of its own
        cp.save_sync(b"two")
        cp.mark_failed(1)
    done = _rm(tmp_path / "store", "job", RM_SECRET)
    assert done.returncode == 0, done.stderr
    assert "cleared" in done.stdout
    assert [p.name for p in folder.iterdir()] == ["00000000000000000002.json"]


# -- shipped tasks resolve their key where they run -----------------------------------------------


def make_signed_task(store: str, signing_key: str | None) -> Any:
    """A local (by-value) generator task on ``store`` that signs with ``signing_key``."""

    @resumable(
        state=0,
        store=store,
        key="signed",
        on_success="keep",
        storage=Storage(signing_key=signing_key),
    )
    def task(n: int, state: int = 0) -> Any:
        for i in range(state, n):
            yield i + 1
        return state

    return task


def test_pickled_task_does_not_hold_the_key(tmp_path: Path) -> None:
    """The bytes of a task pickled by value do not contain its signing key."""
    task = make_signed_task(str(tmp_path / "store"), SHIPPED_SECRET)
    data = cloudpickle.dumps(task)
    assert SHIPPED_SECRET.encode() not in data
    assert SHIPPED_SECRET.encode("utf-16-le") not in data


def test_worker_resolves_the_key_from_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipped signed task signs and verifies with the worker's $RESUMABLE_SIGNING_KEY."""
    task = make_signed_task(str(tmp_path / "store"), SHIPPED_SECRET)
    assert task(3) == 0
    data = cloudpickle.dumps(task)
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", SHIPPED_SECRET)
    shipped = pickle.loads(data)
    assert shipped(5) == 3  # resumed from the original's signed snapshot


def test_worker_without_the_key_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped signed task on a worker without the key fails clearly, never runs unsigned."""
    task = make_signed_task(str(tmp_path / "store"), SHIPPED_SECRET)
    data = cloudpickle.dumps(task)
    monkeypatch.delenv("RESUMABLE_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="RESUMABLE_SIGNING_KEY"):
        pickle.loads(data)


def test_unsigned_task_ships_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task without a signing key ships and runs as before, whatever the worker's env."""
    monkeypatch.delenv("RESUMABLE_SIGNING_KEY", raising=False)
    task = make_signed_task(str(tmp_path / "store"), None)
    assert task(2) == 0
    assert pickle.loads(cloudpickle.dumps(task))(4) == 2
