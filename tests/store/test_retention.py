"""Retention runs behind the saves: off the caller's path, in batches, settled by flush and close.

After a commit, the snapshots beyond ``keep`` are deleted on an IO thread, at most one batch
per 50 ms; saves that come faster share a batch. ``flush_sync``, ``close``, exit and the next
listing wait for it and leave exactly ``keep``; a load does not need to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from resumable import (
    Checkpoint,
    Storage,
    resumable,
    testing,
)
from resumable._backend import open_backend

from ..conftest import IO, store_files


def manifests(url: str) -> list[str]:
    return sorted(n for n in store_files(url) if n.endswith(".json"))


class Gate:
    """Holds one storage call of a checkpoint's backend until ``answer`` is set.

    ``entered`` is set once a call waits; ``calls`` holds each call's first argument.
    """

    def __init__(self, cp: Checkpoint, method: str = "delete_many") -> None:
        backend: Any = testing.backend(cp)
        self._real = getattr(backend, method)
        self.entered, self.answer = threading.Event(), threading.Event()
        self.calls: list[Any] = []
        setattr(backend, method, self)

    def __call__(self, *args: Any) -> None:
        self.calls.append(args[0])
        self.entered.set()
        assert self.answer.wait(30)
        self._real(*args)


def test_flush_leaves_exactly_keep_snapshots(store_url: str, io: IO) -> None:
    """However fast the saves come, after flush_sync the store holds the newest ``keep``."""
    with Checkpoint(store_url, storage=Storage(keep=3)) as cp:
        for n in range(25):
            io.save(cp, b"state %d" % n)
        cp.flush_sync()
        assert manifests(store_url) == [f"{n:020d}.json" for n in (22, 23, 24)]
        assert (io.load(cp) / "payload").read_bytes() == b"state 24"


def test_close_leaves_exactly_keep_snapshots(store_url: str, io: IO) -> None:
    """Leaving the ``with`` block waits for the retention still running behind the last save."""
    with Checkpoint(store_url, storage=Storage(keep=1)) as cp:
        for n in range(10):
            io.save(cp, b"%d" % n)
    assert manifests(store_url) == [f"{9:020d}.json"]


def test_a_hanging_delete_does_not_hold_up_saves(tmp_path: Path) -> None:
    """Saves return while retention's delete is blocked; once it answers, flush settles keep."""
    with Checkpoint(tmp_path, storage=Storage(keep=1)) as cp:
        gate = Gate(cp)
        cp.save_sync(b"one")
        cp.save_sync(b"two")  # its retention blocks on the delete of "one"
        assert gate.entered.wait(30)
        for n in range(5):  # none of these waits for that delete
            cp.save_sync(b"more %d" % n)
        assert len(manifests(str(tmp_path))) == 7
        gate.answer.set()
        cp.flush_sync()
        assert manifests(str(tmp_path)) == [f"{6:020d}.json"]


def test_saves_faster_than_deletes_share_a_batch(tmp_path: Path) -> None:
    """While one delete is in flight, the snapshots dropped meanwhile go in one later batch."""
    with Checkpoint(tmp_path, storage=Storage(keep=1)) as cp:
        gate = Gate(cp)
        cp.save_sync(b"0")
        cp.save_sync(b"1")
        assert gate.entered.wait(30)
        for n in range(2, 6):
            cp.save_sync(b"%d" % n)
        gate.answer.set()
        cp.flush_sync()
    assert gate.calls == [[f"{0:020d}.json"], [f"{n:020d}.json" for n in range(1, 5)]]


def test_failed_retention_is_retried_by_the_next_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A delete that fails is logged; the next save's retention deletes what it left."""
    with Checkpoint(tmp_path, storage=Storage(keep=1)) as cp:
        backend: Any = testing.backend(cp)
        real = backend.delete_many
        refused = [True]

        def flaky(names: list[str]) -> None:
            if refused[0]:
                raise PermissionError(13, "refused", names[0])
            real(names)

        backend.delete_many = flaky
        cp.save_sync(b"one")
        cp.save_sync(b"two")
        cp.flush_sync()
        assert len(manifests(str(tmp_path))) == 2
        assert "retention failed" in caplog.text
        refused[0] = False
        cp.save_sync(b"three")
        cp.flush_sync()
        assert manifests(str(tmp_path)) == [f"{2:020d}.json"]


@pytest.mark.parametrize("url", ["memory", "local"])
def test_delete_many_skips_a_missing_name_and_deletes_the_rest(url: str, tmp_path: Path) -> None:
    """A name already gone in the middle of a batch does not stop the names after it."""
    root = f"memory://retention/{tmp_path.name}" if url == "memory" else str(tmp_path / "s")
    backend = open_backend(root, None)
    for name in ("a.json", "c.json", "d.json"):
        backend.create_exclusive(name, b"{}")
    backend.delete_many(["a.json", "b.json", "c.json"])
    assert [e.name for e in backend.entries()] == ["d.json"]


def test_decorated_task_finishing_leaves_keep(tmp_path: Path) -> None:
    """A generator task that yields fast and keeps its snapshots ends with exactly ``keep``."""

    @resumable(state=0, store=tmp_path, key="fast", on_success="keep", storage=Storage(keep=2))
    def count(state: int) -> Any:
        while state < 30:
            state += 1
            yield state
        return state

    assert count() == 30
    # Snapshots 28 and 29 hold the yields of 29 and 30.
    assert manifests(str(tmp_path / "fast")) == [f"{n:020d}.json" for n in (28, 29)]


def test_retention_settles_at_interpreter_exit(tmp_path: Path) -> None:
    """A script that saves fast and exits without closing still leaves exactly ``keep``."""
    script = textwrap.dedent(
        f"""
        from resumable import Checkpoint
        cp = Checkpoint({str(tmp_path / "exit")!r}, keep=2)
        for n in range(40):
            cp.save_sync(b"%d" % n)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert manifests(str(tmp_path / "exit")) == [f"{n:020d}.json" for n in (38, 39)]


def test_a_child_forked_while_retention_runs_saves_and_settles(tmp_path: Path) -> None:
    """A fork taken while a delete is in flight: the child's saves neither hang nor leak."""
    with Checkpoint(tmp_path, storage=Storage(keep=1)) as cp:
        gate = Gate(cp)
        cp.save_sync(b"one")
        cp.save_sync(b"two")
        assert gate.entered.wait(30)
        pid = os.fork()
        if pid == 0:  # the child: its copy of the retention thread does not exist
            code = 1
            try:
                signal.alarm(60)  # a hang fails the test instead of stalling it
                gate.answer.set()
                cp.save_sync(b"child")
                cp.flush_sync()
                code = 0 if manifests(str(tmp_path)) == [f"{2:020d}.json"] else 2
            finally:
                os._exit(code)  # never back into pytest's own code
        _, status = os.waitpid(pid, 0)
        gate.answer.set()
        assert os.waitstatus_to_exitcode(status) == 0


def test_a_child_forked_during_a_background_save_does_not_hang_on_flush(tmp_path: Path) -> None:
    """The child of a fork taken mid background save flushes at once: the parent owns that save."""
    with Checkpoint(tmp_path, storage=Storage(keep=1)) as cp:
        gate = Gate(cp, "create_exclusive")
        cp.save_background_sync(b"in flight")
        assert gate.entered.wait(30)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.alarm(60)
                cp.flush_sync()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        gate.answer.set()
        cp.flush_sync()
        assert os.waitstatus_to_exitcode(status) == 0
        assert (cp.load_sync() / "payload").read_bytes() == b"in flight"


def test_retention_survives_a_base_exception_from_a_delete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A delete raising CancelledError is logged, flush does not raise, the next save retires."""
    with Checkpoint(tmp_path, storage=Storage(keep=1)) as cp:
        backend: Any = testing.backend(cp)
        real = backend.delete_many
        raised = []

        def cancelled_once(names: list[str]) -> None:
            if not raised:
                raised.append(names)
                raise asyncio.CancelledError
            real(names)

        backend.delete_many = cancelled_once
        cp.save_sync(b"one")
        cp.save_sync(b"two")
        cp.flush_sync()
        assert "retention failed" in caplog.text
        cp.save_sync(b"three")
        cp.flush_sync()
        assert (cp.load_sync() / "payload").read_bytes() == b"three"
    assert manifests(str(tmp_path)) == [f"{2:020d}.json"]


def test_settle_gives_up_waiting_after_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung delete bounds how long settle waits; the retention finishes behind it later."""
    with Checkpoint(tmp_path, storage=Storage(keep=1)) as cp:
        gate = Gate(cp)
        cp.save_sync(b"one")
        cp.save_sync(b"two")
        testing.store(cp).settle(timeout=0.05)
        assert "still runs after" in caplog.text
        gate.answer.set()
        cp.flush_sync()
        assert manifests(str(tmp_path)) == [f"{1:020d}.json"]


@pytest.mark.parametrize("style", ["one-liners", "function-local"])
def test_unreferenced_checkpoints_finish_retention_at_exit(tmp_path: Path, style: str) -> None:
    """Checkpoints already garbage-collected at exit still leave exactly ``keep`` snapshots."""
    body = {
        "one-liners": "for n in range(6):\n    Checkpoint(D, keep=1).save_sync(b'%d' % n)",
        "function-local": (
            "def save_all():\n    cp = Checkpoint(D, keep=1)\n"
            "    for n in range(6):\n        cp.save_sync(b'%d' % n)\nsave_all()"
        ),
    }[style]
    script = f"from resumable import Checkpoint\nD = {str(tmp_path / 's')!r}\n{body}\n"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert manifests(str(tmp_path / "s")) == [f"{5:020d}.json"]


def test_delete_many_on_a_dir_filesystem_skips_a_missing_name(tmp_path: Path) -> None:
    """dir:: over memory:// reports itself async, but has no batch delete: name by name too."""
    backend = open_backend(f"dir::memory://retention-dir/{tmp_path.name}", None)
    for name in ("a.json", "c.json", "d.json"):
        backend.create_exclusive(name, b"{}")
    backend.delete_many(["a.json", "b.json", "c.json"])
    assert [e.name for e in backend.entries()] == ["d.json"]


# -- a store that refuses deletes -----------------------------------------------------------------


def test_retention_failure_never_fails_a_committed_save(
    store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that refuses deletes still commits saves; retention failing is only a warning."""
    with Checkpoint(store_url, storage=Storage(keep=1)) as cp:
        cp.save_sync(b"one")

        def refuse(name: object) -> None:
            raise PermissionError(13, "DeleteObject denied", str(name))

        monkeypatch.setattr(testing.backend(cp), "delete", refuse)
        monkeypatch.setattr(testing.backend(cp), "delete_many", refuse)
        with caplog.at_level(logging.WARNING, logger="resumable"):
            cp.save_sync(b"two")
        assert (cp.load_sync() / "payload").read_bytes() == b"two"
    assert any("retention failed" in r.getMessage() for r in caplog.records)
