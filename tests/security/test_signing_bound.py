"""Signatures bind a snapshot to its checkpoint, and a cleared task stays cleared.

Signatures cover the checkpoint's name (by default its URL's last segment; ``@resumable``
tasks, their key), so one task's signed files copied into another's folder are refused, while
a whole store moved elsewhere keeps loading. In a signed store unsigned failure marks are not
counted, and old signed files copied back after a clear are never loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import fsspec
import pytest

from resumable import Checkpoint, CorruptCheckpointError, Storage

from ..conftest import IO, as_format_1, read_object, store_files, write_object

SECRET = b"signing secret"


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
    from resumable._cli import main

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
