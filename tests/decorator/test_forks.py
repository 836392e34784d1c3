"""Forked children: what registers with resumable._forks is reset there, and hashing works.

A process forked after the library hashed on several threads can still save and load:
BLAKE3's multi-threaded hashing runs on a native (rayon) thread pool that a forked child does
not inherit; a child that hashed on it again waited forever. Each of those tests runs the
child with a deadline and fails, rather than hangs, if it does not answer.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import Checkpoint, _forks, resumable
from resumable._stream import Digest


class _Held:
    def __init__(self) -> None:
        self.state = "parent"

    def _after_fork(self) -> None:
        self.state = "reset"


def _in_child(check: object) -> int:
    """Fork; the child exits 0 when ``check()`` is true, 1 otherwise; the child's code."""
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's atexit hooks
        try:
            code = 0 if check() else 1  # type: ignore[operator]
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_tracked_objects_and_functions_reset_in_a_child() -> None:
    """A tracked object's _after_fork and an at_fork function run in the child, not the parent."""
    held = _Held()
    _forks.track(held)
    calls: list[int] = []
    _forks.at_fork(lambda: calls.append(os.getpid()))
    assert (
        _in_child(lambda: held.state == "reset" and calls == [os.getpid()] and _forks.forked()) == 0
    )
    assert held.state == "parent"
    assert calls == []
    assert not _forks.forked()


def test_a_collected_object_is_skipped() -> None:
    """An object tracked and then garbage-collected is not kept alive nor called."""
    _forks.track(_Held())
    assert _in_child(lambda: True) == 0


def test_a_background_saver_forked_mid_save_starts_afresh_in_the_child() -> None:
    """A child forked while a job runs and another waits saves its own; the parent keeps its."""
    import threading

    from resumable._background import Background

    bg = Background("fork")
    release = threading.Event()
    started = threading.Event()
    done: list[str] = []

    def running() -> None:
        started.set()
        release.wait(30)
        done.append("running")

    bg.submit(running)
    assert started.wait(10)
    bg.submit(lambda: done.append("waiting"))

    def child() -> bool:
        bg.submit(lambda: done.append("child"))
        bg.flush(timeout=10)
        return done == ["child"]

    try:
        assert _in_child(child) == 0
    finally:
        release.set()
    bg.flush(timeout=10)
    assert done == ["running", "waiting"]


# -- hashing after a fork -------------------------------------------------------------------------


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


#: How long a forked child may take before it counts as hung.
DEADLINE = 60.0


def run_in_fork(child: Any) -> bytes:
    """``child()`` in a forked process; its bytes, or a failure if it does not answer in time."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's exit hooks
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, child())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], DEADLINE)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the forked child did not answer within {DEADLINE:g} s: it hangs")
        out = b""
        while chunk := os.read(read_end, 1 << 16):
            out += chunk
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def test_child_forked_after_a_save_saves_and_loads(tmp_path: Path) -> None:
    """After the parent saved 200 KB (hashed on native threads), a forked child saves and loads."""
    with Checkpoint(tmp_path / "parent") as cp:
        cp.save_sync(os.urandom(200_000))
        (cp.load_sync() / "payload").read_bytes()

    def child() -> bytes:
        data = os.urandom(200_000)
        with Checkpoint(tmp_path / "child") as mine:
            mine.save_sync(data)
            ok = (mine.load_sync() / "payload").read_bytes() == data
        with Checkpoint(tmp_path / "parent") as theirs:
            theirs.load_sync()
        return b"ok" if ok else b"wrong bytes"

    assert run_in_fork(child) == b"ok"


def test_digest_in_a_forked_child_matches_the_parent() -> None:
    """A forked child's BLAKE3 of a large buffer finishes and equals the parent's."""
    data = os.urandom(4 << 20)
    digest = Digest("blake3")
    digest.update(data)
    expected = digest.hexdigest().encode()

    def child() -> bytes:
        again = Digest("blake3")
        again.update(data)
        return again.hexdigest().encode()

    assert run_in_fork(child) == expected


def save_in_worker(store: str, n: int) -> int:
    """A ``@resumable`` task run in a pool worker: saves 200 KB, resumes, returns the length."""

    @resumable(state=b"", store=store, key=f"w{n}", on_success="keep")
    def task(state: bytes = b"") -> Iterator[bytes]:
        yield os.urandom(200_000)

    task()
    with Checkpoint(f"{store}/w{n}") as cp:
        return len((cp.load_sync() / "payload").read_bytes())


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_pool_runs_a_resumable_task_after_the_parent_saved(tmp_path: Path) -> None:
    """A fork-context Pool worker runs a @resumable task after its parent hashed 200 KB."""
    with Checkpoint(tmp_path / "parent") as cp:
        cp.save_sync(os.urandom(200_000))
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        results = [pool.apply_async(save_in_worker, (str(tmp_path), n)) for n in range(2)]
        lengths = [r.get(timeout=DEADLINE) for r in results]
    finally:
        pool.terminate()
        pool.join()
    assert all(length > 200_000 for length in lengths)
