"""Who made a file or folder, and whether that maker is provably gone: the one place for it.

Clean-up of what a killed process left (workspaces, staging folders, temp files) must delete
only what this library made, and only once its maker can no longer use it. A name pattern
proves neither: a user's ``runs/resumable-2024-06-01`` looks like ours, and "pid not alive"
is false across PID namespaces (containers) and across hosts that share a folder.

So every such thing carries its maker: a *stamp* ``<machine>-<pid>-<start>`` in a file's name,
or an owner *marker* file inside a folder, where ``<machine>`` is a digest of the host name,
the kernel's boot id and the PID namespace, and ``<start>`` is the process's start time
(which tells a reused pid apart). A maker is gone only when it ran on this very machine, boot
and PID namespace, and its pid is no longer that process; anything made elsewhere is never
judged gone (its own machine sweeps it, or ``resumable gc`` lists it).

Example:
    >>> s = stamp()
    >>> parse_stamp(s) == Owner(machine(), os.getpid(), start_time(os.getpid()))
    True
    >>> gone(parse_stamp(s))
    False
    >>> parse_stamp("2024-06-01") is None
    True

"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MARKER",
    "Owner",
    "gone",
    "machine",
    "me",
    "parse_stamp",
    "read_marker",
    "stamp",
    "start_time",
    "write_marker",
]

#: The owner marker's file name inside a folder this library made.
MARKER = ".resumable-owner"
_STAMP = re.compile(r"^([0-9a-f]{12})-(\d+)-(\d+)$")
_MARKER_MAX = 4096  # a marker is a few dozen bytes; anything larger is not ours


@dataclass(frozen=True, slots=True)
class Owner:
    """A process: the machine it ran on (see :func:`machine`), its pid and start time."""

    machine: str
    pid: int
    start: int


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read(256).strip()
    except (OSError, UnicodeDecodeError):
        return ""


@functools.cache
def machine() -> str:
    """A digest naming this host, boot and PID namespace (12 hex digits).

    Two processes with the same digest see the same process table, so a pid can be judged
    alive or not; a different digest means another host, another boot or another container.
    """
    pid_ns = ""
    with contextlib.suppress(OSError):
        pid_ns = os.readlink("/proc/self/ns/pid")
    parts = (socket.gethostname(), _read_text("/proc/sys/kernel/random/boot_id"), pid_ns)
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=6).hexdigest()


def start_time(pid: int) -> int:
    """The start time of process ``pid`` in clock ticks since boot (Linux); 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # Field 22; the command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def me() -> Owner:
    """The calling process (a forked child is a new owner: its pid differs)."""
    pid = os.getpid()
    return Owner(machine(), pid, start_time(pid))


def stamp() -> str:
    """The calling process's stamp for a file name: ``<machine>-<pid>-<start>``."""
    who = me()
    return f"{who.machine}-{who.pid}-{who.start}"


def parse_stamp(text: str) -> Owner | None:
    """The owner a stamp names; None if ``text`` is not a stamp."""
    found = _STAMP.match(text)
    if found is None:
        return None
    return Owner(found.group(1), int(found.group(2)), int(found.group(3)))


def gone(owner: Owner) -> bool:
    """Whether ``owner`` provably no longer runs: same machine, and its pid is not that process.

    False for an owner of another host, boot or PID namespace (nothing here can tell), for a
    live process, and for another user's process (not ours to judge).
    """
    if owner.machine != machine():
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: alive, another user's
    # The pid is taken; by the same process unless its start time says otherwise. Without
    # a start time (not Linux) a live pid counts as the owner.
    current = start_time(owner.pid)
    return owner.start != 0 and current != 0 and current != owner.start


def write_marker(folder: Path) -> None:
    """Mark ``folder`` (just made by this process) as this process's."""
    who = me()
    data = json.dumps({"machine": who.machine, "pid": who.pid, "start": who.start})
    fd = os.open(folder / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def read_marker(folder: Path) -> Owner | None:
    """The owner marked in ``folder``; None unless it holds a well-formed marker file.

    The marker must be a regular file (not a link, not a FIFO) inside a real folder.
    """
    try:
        fd = os.open(folder / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, _MARKER_MAX + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        who = Owner(data["machine"], data["pid"], data["start"])
    except (ValueError, TypeError, KeyError):
        return None
    if len(raw) > _MARKER_MAX or not (
        isinstance(who.machine, str)
        and isinstance(who.pid, int)
        and isinstance(who.start, int)
        and not isinstance(who.pid, bool)
    ):
        return None
    return who
