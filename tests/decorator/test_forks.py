"""One fork mechanism: what registers with resumable._forks is reset in a forked child."""

from __future__ import annotations

import os
import sys

import pytest

from resumable import _forks

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fork")


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
