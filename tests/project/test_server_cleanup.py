"""Test servers die with the test process that started them, however it ends.

The first tests drive ``tests/server_watchdog.py`` around a stand-in server (a Python process
waiting for a signal): no real server, fast. The last one starts a pytest process that starts
the three real servers (SeaweedFS, fake-gcs-server, Azurite), ends that pytest with SIGKILL (also
with a pytest-xdist worker) or Ctrl-C (SIGINT to its process group), and checks that nothing
of the servers' process groups survives and that their temp folders are gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from ..servers import WATCHDOG

REPO = Path(__file__).resolve().parents[2]

#: A stand-in server: prints its pid, then waits for a signal.
STAND_IN = [
    sys.executable,
    "-c",
    "import os, signal; print(os.getpid(), flush=True); signal.pause()",
]

#: A stand-in server that fails at once, with status 3.
EXIT_3 = [sys.executable, "-c", "raise SystemExit(3)"]

#: Seconds any process here gets to go away.
DEADLINE = 30.0
#: Seconds the inner pytest gets to start the three servers.
STARTUP = 180.0
#: Seconds the inner pytest gets to end once signalled (its teardown stops the servers).
TEARDOWN = 120.0


class PidFd:
    """A pidfd of a process: readable once it has exited (for ``select``)."""

    def __init__(self, pid: int) -> None:
        self.fd = os.pidfd_open(pid)

    def fileno(self) -> int:
        """The descriptor, for ``select``."""
        return self.fd

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)


def live_members(groups: Iterable[int]) -> list[int]:
    """Pids of the processes in ``groups`` that have not exited (zombies count as exited)."""
    wanted = set(groups)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z" and int(pgrp) in wanted:
            found.append(int(entry.name))
    return found


def wait_until_gone(pids: list[int], timeout: float = DEADLINE) -> None:
    """Return once none of ``pids`` runs any more; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    waiting = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            waiting.append(os.pidfd_open(pid))  # readable once the process has exited
    try:
        while waiting:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(waiting)} of {list(pids)} still run after {timeout} s"
            readable, _, _ = select.select(waiting, [], [], remaining)
            for fd in readable:
                waiting.remove(fd)
                os.close(fd)
    finally:
        for fd in waiting:
            os.close(fd)


def wait_until_groups_empty(groups: Iterable[int], timeout: float = DEADLINE) -> None:
    """Return once no process of ``groups`` runs any more; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while members := live_members(groups):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"processes of {sorted(groups)} outlived the deadline: {members}"
        wait_until_gone(members, remaining)


def under_watchdog(lifeline: int, workdir: Path, command: list[str]) -> list[str]:
    """``command`` run by the watchdog, as ``tests/servers.py`` runs a server."""
    return [
        sys.executable,
        "-I",
        str(WATCHDOG),
        str(lifeline),
        str(workdir),
        "TERM",
        "--",
        *command,
    ]


class Watched:
    """A stand-in server under the watchdog, started as ``tests/servers.py`` starts one."""

    def __init__(self, workdir: Path) -> None:
        lifeline, self._lifeline = os.pipe()
        try:
            self.proc = subprocess.Popen(
                under_watchdog(lifeline, workdir, STAND_IN),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
                pass_fds=(lifeline,),
            )
        finally:
            os.close(lifeline)
        assert self.proc.stdout is not None
        #: The stand-in server's pid, which it prints first.
        self.server = int(self.proc.stdout.readline())

    def end_lifeline(self) -> None:
        """Close the lifeline's write end, as the kernel does when the test process dies."""
        lifeline, self._lifeline = self._lifeline, -1
        if lifeline >= 0:
            os.close(lifeline)

    def close(self) -> None:
        """Kill whatever is left and reap the watchdog."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=DEADLINE)
        self.end_lifeline()


@contextlib.contextmanager
def watched(workdir: Path) -> Iterator[Watched]:
    """A stand-in server under the watchdog, cleaned up at the end."""
    started = Watched(workdir)
    try:
        yield started
    finally:
        started.close()


def test_watchdog_exits_with_the_servers_status(tmp_path: Path) -> None:
    """A server that exits by itself makes its watchdog exit with the same status."""
    lifeline, keep = os.pipe()
    try:
        done = subprocess.run(
            under_watchdog(lifeline, tmp_path, EXIT_3),
            pass_fds=(lifeline,),
            timeout=DEADLINE,
            check=False,
        )
    finally:
        os.close(lifeline)
        os.close(keep)
    assert done.returncode == 3
    assert tmp_path.is_dir()  # the caller's to remove: it may start the server again


def test_server_dies_when_its_watchdog_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the watchdog kills the server too (its parent-death signal)."""
    with watched(tmp_path) as run:
        os.kill(run.proc.pid, signal.SIGKILL)
        wait_until_gone([run.server])


def test_sigterm_stops_the_server_and_removes_its_folder(tmp_path: Path) -> None:
    """The test process's own stop (SIGTERM to the watchdog) ends both and removes the folder."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    with watched(workdir) as run:
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=DEADLINE) == 128 + signal.SIGTERM
        wait_until_gone([run.server])
        assert not workdir.exists()


def test_end_of_the_lifeline_stops_the_server_and_removes_its_folder(tmp_path: Path) -> None:
    """When the test process is gone (its pipe end closed), server and folder go too."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    (workdir / "server.log").write_text("data of the server")
    with watched(workdir) as run:
        run.end_lifeline()
        run.proc.wait(timeout=DEADLINE)
        wait_until_groups_empty([run.proc.pid])
        wait_until_gone([run.server])
    assert not workdir.exists()


INNER_TEST = textwrap.dedent(
    """
    import json
    import os
    import signal
    import socket

    import pytest

    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when this pytest was started from
    # a shell's background job: those ignore SIGINT, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from tests.servers import s3_server, s3_session_server
    from tests.servers_gcs_azure import (
        azure_server, azure_session_server, gcs_server, gcs_session_server,
    )


    @pytest.mark.remote
    def test_hold_the_servers(s3_server, gcs_server, azure_server):
        servers = [s3_server, gcs_server, azure_server]
        report = [[server.process_group, str(server.workdir)] for server in servers]
        with socket.socket(socket.AF_UNIX) as outer:
            outer.connect(os.environ["RESUMABLE_TEST_REPORT"])
            outer.sendall(json.dumps(report).encode() + b"\\n")
            outer.recv(1)  # held here until the outer test ends this pytest
    """
)


@pytest.mark.remote
@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "workers"),
    # SIGTERM takes SIGKILL's path: Python does not handle it, the process just ends.
    [(signal.SIGKILL, 0), (signal.SIGINT, 0), (signal.SIGKILL, 1)],
    ids=["SIGKILL", "Ctrl-C", "SIGKILL-xdist"],
)
def test_no_server_outlives_its_pytest(tmp_path: Path, how: signal.Signals, workers: int) -> None:
    """Ended by SIGKILL or Ctrl-C, a pytest run (with xdist too) leaves no server running."""
    if workers:
        pytest.importorskip("xdist", reason="pytest-xdist is not installed (the test group)")
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    report = tmp_path / "report.sock"
    args = ["-q", "-p", "no:cacheprovider", "-c", str(REPO / "pyproject.toml")]
    args += ["--rootdir", str(tmp_path), "test_inner.py"]
    if workers:
        args += ["-n", str(workers)]
    log = tmp_path / "inner.log"
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_UNIX))
        listener.bind(str(report))
        listener.listen(1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO), "RESUMABLE_TEST_REPORT": str(report)},
            stdin=subprocess.DEVNULL,
            stdout=stack.enter_context(log.open("wb")),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal: Ctrl-C hits it all
        )
        groups: list[int] = []

        @stack.callback
        def _clean_up() -> None:  # a failed check must leave nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)

        # Wait for the inner test's report, or for the inner pytest to end without one.
        inner_ended = stack.enter_context(contextlib.closing(PidFd(proc.pid)))
        ready, _, _ = select.select([listener, inner_ended], [], [], STARTUP)
        assert listener in ready, "no report from the inner pytest:\n" + log.read_text()
        connection = stack.enter_context(listener.accept()[0])
        connection.settimeout(DEADLINE)
        servers = json.loads(stack.enter_context(connection.makefile()).readline())
        groups += [group for group, _ in servers]
        for group in groups:  # each group: the watchdog and its server
            assert len(live_members([group])) >= 2, (group, live_members([group]))

        if how == signal.SIGINT:
            os.killpg(proc.pid, how)  # what a terminal does on Ctrl-C
        else:
            proc.send_signal(how)  # `kill` of the pytest process alone
        try:
            # Ctrl-C runs pytest's teardown, which stops the three servers one by one: on
            # two cores busy with other tests that has taken over 30 s.
            proc.wait(timeout=TEARDOWN)
        except subprocess.TimeoutExpired:
            # pytest's faulthandler prints every thread's stack on SIGABRT: where it hangs.
            os.kill(proc.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=DEADLINE)
            pytest.fail(f"the inner pytest did not end:\n{log.read_text()[-8000:]}")
        wait_until_groups_empty(groups)
        for _, workdir in servers:
            assert not Path(workdir).exists()
