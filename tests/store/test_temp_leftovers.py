"""Temp files of killed saves do not pile up: a local store removes those of gone makers.

A temp name carries its maker, and a local store removes the temp files whose maker is
provably gone (never a live writer's, never one made on another machine or named before temp
names carried their maker: those stay and are reported).

The children below are real processes holding a save open in the middle of a large payload
(its temp file on disk), killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resumable import Checkpoint, resumable
from resumable._backend import LocalBackend
from resumable._names import is_temp, temp_maker, temp_name
from resumable._owner import me, parse_stamp

#: The longest a child may take to start and write its payload.
DEADLINE = 120.0
MIB = 1 << 20

HOLDER = textwrap.dedent(
    """
    import sys
    from resumable import Captured, Checkpoint

    cp = Checkpoint(sys.argv[1])
    chunk = b"Z" * (1 << 20)

    def payload():
        for _ in range(int(sys.argv[2])):
            yield chunk
        # Everything so far is in the temp file: hold the save open here until told to
        # go on (or killed).
        print("holding", flush=True)
        sys.stdin.readline()

    cp.commit(Captured("bytes", payload))
    print("committed", flush=True)
    """
)


def temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_temp(p.name)) if folder.exists() else []


def read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next line of output; fails the test if none comes within DEADLINE."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
    assert ready, f"the child printed nothing within {DEADLINE:g} s"
    return proc.stdout.readline()


def spawn_holding(script: Path, folder: Path, mib: int) -> subprocess.Popen[str]:
    """A child process in the middle of saving ``mib`` MiB to ``folder``, its temp file written."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder), str(mib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert read_line(proc) == "holding\n"
    return proc


@pytest.fixture(name="holder")
def _holder(tmp_path: Path) -> Path:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    return script


def kill_mid_save(holder: Path, folder: Path, times: int, mib: int) -> None:
    """``times`` children, each SIGKILLed in the middle of a save of ``mib`` MiB."""
    for _ in range(times):
        with spawn_holding(holder, folder, mib) as proc:
            mine = [t for t in temps(folder) if (o := temp_maker(t.name)) and o.pid == proc.pid]
            assert [t.stat().st_size for t in mine] == [mib * MIB]
            proc.kill()
        assert proc.returncode == -signal.SIGKILL


def test_temp_names_carry_their_maker() -> None:
    """A temp name holds the stamp of the process that made it; old temp names have none."""
    name = temp_name("00000000000000000007.json")
    assert is_temp(name)
    assert name.startswith(".00000000000000000007.json.")
    assert name.endswith(".tmp")
    assert temp_maker(name) == me()
    old = ".00000000000000000007.json.cafe1234.tmp"  # written before names carried a stamp
    assert is_temp(old)
    assert temp_maker(old) is None
    assert temp_maker("00000000000000000007.json") is None
    assert temp_name("x") != temp_name("x")


def test_clear_after_killed_saves_removes_the_folder(holder: Path, tmp_path: Path) -> None:
    """After SIGKILLs mid-save, a clear from another process leaves no temp file and no folder."""
    folder = tmp_path / "store" / "task"
    Checkpoint(folder).save_sync(b"a committed snapshot")
    kill_mid_save(holder, folder, times=3, mib=8)
    assert temps(folder), "a killed save leaves its temp file"
    Checkpoint(folder).clear_sync()
    LocalBackend(folder).remove_root_if_empty()
    assert not folder.exists()


def test_the_next_save_removes_killed_saves_temps(holder: Path, tmp_path: Path) -> None:
    """Killed saves' temp files do not pile up: the next save to the folder removes them."""
    folder = tmp_path / "store" / "task"
    kill_mid_save(holder, folder, times=3, mib=8)
    Checkpoint(folder).save_sync(b"the next save")
    assert temps(folder) == []


def test_on_success_clear_after_kills_leaves_nothing(holder: Path, tmp_path: Path) -> None:
    """A task rerun to success with on_success="clear" after 3 SIGKILLed saves leaves no bytes."""
    store = tmp_path / "store"
    kill_mid_save(holder, store / "task", times=3, mib=8)

    @resumable(state=0, store=str(store), key="task", on_success="clear")
    def task(state: int = 0):  # type: ignore[no-untyped-def]
        yield state + 1
        return "done"

    assert task() == "done"
    assert not (store / "task").exists()


def test_a_live_writers_temp_file_stays(holder: Path, tmp_path: Path) -> None:
    """A clear never removes the temp file of a save still running: that save then commits."""
    folder = tmp_path / "store" / "task"
    with spawn_holding(holder, folder, mib=4) as proc:
        (held,) = temps(folder)
        Checkpoint(folder).clear_sync()
        LocalBackend(folder).remove_root_if_empty()
        LocalBackend(folder).create_exclusive("other", b"")  # a first write sweeps too
        assert held.exists()
        assert proc.stdin is not None
        proc.stdin.write("go on\n")
        proc.stdin.flush()
        assert read_line(proc) == "committed\n"
    cp = Checkpoint(folder)  # held: its workspace goes with it
    payload = cp.load_sync()
    assert payload is not None
    assert (payload / "payload").read_bytes() == b"Z" * (4 * MIB)


def test_gc_judges_temp_files_by_their_writer(holder: Path, tmp_path: Path) -> None:
    """`resumable gc --grace 0` keeps a live save's temp file; a killed save's goes at any age."""
    store = tmp_path / "store"
    Checkpoint(store / "task").save_sync(b"committed")
    kill_mid_save(holder, store / "task", times=1, mib=1)
    (dead,) = temps(store / "task")

    def gc(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "resumable", "gc", str(store), *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert done.returncode == 0, done.stderr

    gc()  # the default grace period of an hour: a dead writer's file needs none
    assert not dead.exists()
    with spawn_holding(holder, store / "task", mib=1) as proc:
        (live,) = temps(store / "task")
        gc("--grace", "0")
        assert live.exists()
        proc.kill()


def test_unprovable_temps_stay_and_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Old-format temp names and other machines' temps are kept, and named in a warning."""
    folder = tmp_path / "task"
    folder.mkdir()
    old = folder / ".00000000000000000003.json.cafe1234.tmp"
    foreign = folder / ".00000000000000000004.json.000000000000-1-1.0badf00d.tmp"
    assert parse_stamp("000000000000-1-1") is not None
    for path in (old, foreign):
        path.write_bytes(b"maybe someone's")
    with caplog.at_level(logging.WARNING, logger="resumable"):
        LocalBackend(folder).remove_root_if_empty()
    assert old.exists()
    assert foreign.exists()
    assert old.name in caplog.text
    assert foreign.name in caplog.text
    sweep = LocalBackend(folder).remove_dead_temps()
    assert sweep.removed == []
    assert sorted(sweep.kept) == sorted([old.name, foreign.name])


def test_only_a_gone_makers_temp_is_removed(tmp_path: Path) -> None:
    """remove_dead_temps removes a temp of a dead process of this machine, not of a live one."""
    folder = tmp_path / "task"
    folder.mkdir()
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1
    ) as child:
        who = me()
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            start = int(f.read().rsplit(b")", 1)[1].split()[19])
        dead = folder / f".x.json.{who.machine}-{child.pid}-{start}.00000000.tmp"
        live = folder / f".y.json.{who.machine}-{who.pid}-{who.start}.00000000.tmp"
        dead.write_bytes(b"")
        live.write_bytes(b"")
        assert LocalBackend(folder).remove_dead_temps().removed == []  # both alive yet
        child.kill()
    sweep = LocalBackend(folder).remove_dead_temps()
    assert sweep.removed == [dead.name]
    assert not dead.exists()
    assert live.exists()
    assert os.listdir(folder) == [live.name]
