"""Run one test server so that it dies with the test process that started it, however that ends.

``python -I tests/server_watchdog.py LIFELINE WORKDIR STOP -- COMMAND...`` is how
``tests/servers.py`` starts every test server (SeaweedFS, fake-gcs-server, Azurite). This
watchdog runs COMMAND as its child and waits, without polling, for one of three events:

- the server exits by itself: the watchdog exits with the server's status (``128 + N`` for
  signal N) and leaves WORKDIR alone, so the test process can quote the server's log and
  start it again;
- the watchdog gets SIGTERM, SIGINT or SIGHUP: the test process stops its server. The watchdog
  sends the server the signal STOP (``TERM``, or ``KILL`` for a server whose graceful stop
  hangs), SIGKILL if it is still there ``GRACE`` seconds later, removes the Unix sockets the
  server had bound in the temp folder and WORKDIR (its data and log), and exits. Doing all of
  it here means that a test process killed in the middle of its own stop leaves nothing either;
- end-of-file on LIFELINE, the read end of a pipe whose only write end the test process holds:
  the test process is gone (SIGKILL, SIGTERM, a crash), since the kernel closes its files
  however it ends. The server is stopped and its files removed as above, and whatever is left
  in the process group is killed, the watchdog included.

The server runs with ``PR_SET_PDEATHSIG`` = SIGKILL (``prctl`` through ctypes), so it dies at
once if the watchdog itself is killed. That signal fires when the *thread* that forked the
server ends, not its process: the watchdog is single-threaded, so that thread is the watchdog.
The test process may start servers from any thread: it relies on the pipe, not on that signal.
No shell sits in between: COMMAND is executed directly (Azurite's ``azurite-blob`` script
execs ``node`` through ``/usr/bin/env``, which keeps the pid and the death signal), so the
process that dies is the server itself.

Standard library only; Linux only (``prctl``, ``pidfd_open``, ``/proc``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

#: ``prctl`` option: the signal the calling process gets when its parent thread ends.
PR_SET_PDEATHSIG = 1
#: Seconds between the STOP signal and SIGKILL.
GRACE = 3.0
#: The signals that tell the watchdog to stop the server.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
USAGE = "usage: server_watchdog.py LIFELINE WORKDIR TERM|KILL -- COMMAND..."


class _Stop(Exception):
    """One of ``STOP_SIGNALS`` arrived."""


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when ``parent`` (single-threaded) ends."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child

    def set_death_signal() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the watchdog died before prctl: nothing would stop us
            os._exit(126)

    return set_death_signal


def _bound_sockets(pid: int, folders: tuple[Path, ...]) -> list[Path]:
    """Paths of the Unix sockets that process ``pid`` has open, inside ``folders``."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    found = set()
    with contextlib.suppress(OSError), open("/proc/net/unix") as table:
        next(table)  # "Num RefCount Protocol Flags Type St Inode Path"
        for line in table:
            fields = line.split(None, 7)
            if len(fields) == 8 and fields[6] in inodes:
                path = Path(fields[7].strip())
                if any(path.parent == folder for folder in folders):
                    found.add(path)
    return sorted(found)


def _stop(server: subprocess.Popen[bytes], how: signal.Signals) -> None:
    """Send ``how`` to the server, then SIGKILL if it is still there after ``GRACE`` seconds."""
    if server.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            server.send_signal(how)
        try:
            server.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            server.wait()


def _status(code: int) -> int:
    """The watchdog's exit status for the server's return code."""
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    """Run the server of ``argv`` under the watchdog; the exit status of the server."""
    if len(argv) < 5 or argv[3] != "--" or argv[2] not in ("TERM", "KILL"):
        print(USAGE, file=sys.stderr)
        return 2
    lifeline, workdir, how = int(argv[0]), Path(argv[1]), signal.Signals[f"SIG{argv[2]}"]
    command = argv[4:]
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_stop_signal)
    orphaned = False
    server: subprocess.Popen[bytes] | None = None
    try:
        server = subprocess.Popen(command, preexec_fn=_die_with(os.getpid()))
        events = select.poll()
        events.register(lifeline, select.POLLIN | select.POLLHUP)
        server_fd = os.pidfd_open(server.pid)  # readable once the server has exited
        events.register(server_fd, select.POLLIN)
        while not orphaned:
            for fd, _ in events.poll():
                if fd == server_fd:
                    return _status(server.wait())
                if not os.read(lifeline, 1):  # end of file: the test process is gone
                    orphaned = True
    except _Stop:
        pass
    finally:
        # More stop signals would only interrupt the stop they ask for.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    # Stopped, or orphaned: stop the server and leave nothing of it behind. The watchdog does
    # it all, so a test process killed in the middle of its own stop leaves nothing either.
    if server is not None:
        sockets = _bound_sockets(server.pid, (Path(tempfile.gettempdir()), workdir))
        _stop(server, how)
        for path in sockets:  # e.g. SeaweedFS's gRPC sockets, at fixed names in /tmp
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
    shutil.rmtree(workdir, ignore_errors=True)
    if orphaned:
        os.killpg(0, signal.SIGKILL)  # stragglers of the server, and this watchdog
    return 0 if server is None else _status(server.wait())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
