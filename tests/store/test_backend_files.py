"""A local store reads only regular files: a FIFO, a device or a link in place of an object.

Whoever can write into a store folder can plant a FIFO where a payload or a manifest should be.
Opening a FIFO for reading blocks until a writer appears, so a load (and `resumable verify` /
`show`) would hang forever. The local backend opens objects without blocking and without
following a link at the object's own name, and refuses anything but a regular file as a
missing object: the snapshot is corrupt and the previous one loads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TypeVar

import pytest

from resumable import Checkpoint, CorruptCheckpointError, RetryPolicy, Storage, resumable
from resumable._backend import LocalBackend, NotAnObjectError
from resumable.testing import run_command as cli

T = TypeVar("T")

SECRET = b"fifo test secret"
OLD = b"old" * 40_000  # larger than a manifest holds inline: it has a payload object too
NEW = b"new" * 40_000
#: How long a load may take before it counts as hung (it takes milliseconds).
HUNG = 60.0


def _release(fifos: list[Path]) -> None:
    """Let a reader blocked in ``open`` of each FIFO go on (it then reads an empty stream)."""
    for fifo in fifos:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nobody is reading it right now
                raise
        else:
            os.close(fd)


def finishes(fn: Callable[[], T], fifos: list[Path]) -> T:
    """``fn()``'s result; the test fails if it is still blocked after ``HUNG`` seconds.

    A hung ``fn`` is released (each FIFO gets a writer) so that its thread can end.
    """
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(fn)
        try:
            return future.result(HUNG)
        except FutureTimeout:
            while True:  # it may open a FIFO again (the next try, the next snapshot)
                _release(fifos)
                with contextlib.suppress(FutureTimeout, Exception):
                    future.result(1.0)
                if future.done():
                    break
            pytest.fail(f"still blocked after {HUNG:g} s: a FIFO in the store hangs it")


def two_snapshots(store: Path, signed: bool) -> tuple[Checkpoint, Path]:
    """A store holding OLD then NEW; the path of NEW's payload object."""
    cp = Checkpoint(store, storage=Storage(keep=5, signing_key=SECRET if signed else None))
    cp.save_sync(OLD)
    cp.save_sync(NEW)
    (newest,) = store.glob("00000000000000000001.*.blob")
    return cp, newest


def loaded(cp: Checkpoint) -> bytes:
    folder = cp.load_sync()
    assert folder is not None
    return (folder / "payload").read_bytes()


@pytest.mark.parametrize(
    ("signed", "retry"),
    [(False, None), (True, None), (False, RetryPolicy(timeout=30.0))],
    ids=["unsigned", "signed", "with-deadlines"],
)
def test_fifo_payload_falls_back_to_the_previous_snapshot(
    tmp_path: Path, signed: bool, retry: RetryPolicy | None
) -> None:
    """A FIFO in place of the newest payload is a corrupt snapshot: the previous one loads."""
    store = tmp_path / "store"
    _, newest = two_snapshots(store, signed)
    newest.unlink()
    os.mkfifo(newest)
    cp = Checkpoint(
        store, storage=Storage(keep=5, signing_key=SECRET if signed else None, retry=retry)
    )
    assert finishes(lambda: loaded(cp), [newest]) == OLD
    assert stat.S_ISFIFO(newest.lstat().st_mode)  # refused, not removed: it is not ours


@pytest.mark.parametrize("target", ["/dev/zero", "outside"])
def test_symlinked_payload_falls_back_to_the_previous_snapshot(tmp_path: Path, target: str) -> None:
    """A payload that is a symlink (to /dev/zero, or to a good copy outside) is refused."""
    store = tmp_path / "store"
    _, newest = two_snapshots(store, signed=False)
    if target == "outside":
        copy = tmp_path / "outside.blob"
        shutil.copyfile(newest, copy)  # the right bytes: only the link itself is wrong
        target = str(copy)
    newest.unlink()
    newest.symlink_to(target)
    assert finishes(lambda: loaded(Checkpoint(store, storage=Storage(keep=5))), []) == OLD


def test_fifo_payload_of_a_task_state_falls_back(tmp_path: Path) -> None:
    """A task whose newest state payload is a FIFO resumes from the previous state."""
    store = tmp_path / "store"
    size = 100_000  # a payload object, not inlined

    @resumable(state="", store=str(store), key="fifo-task", on_success="keep")
    def task(state: str = ""):  # type: ignore[no-untyped-def]
        if not state:
            yield "a" * size
            yield "b" * size
        return state[:1]

    assert task() == ""
    assert task() == "b"
    (newest,) = (store / "fifo-task").glob("00000000000000000001.*.blob")
    newest.unlink()
    os.mkfifo(newest)
    assert finishes(task, [newest]) == "a"


def test_fifo_manifest_is_not_a_snapshot(tmp_path: Path) -> None:
    """A FIFO named like the newest manifest is not listed: the newest real snapshot loads."""
    store = tmp_path / "store"
    two_snapshots(store, signed=False)
    fifo = store / "00000000000000000002.json"
    os.mkfifo(fifo)
    assert finishes(lambda: loaded(Checkpoint(store, storage=Storage(keep=5))), [fifo]) == NEW


@pytest.mark.parametrize("command", ["verify", "show"])
def test_cli_reports_a_fifo_payload_as_bad(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resumable verify` and `show` report a FIFO payload as a bad snapshot instead of hanging."""
    store = tmp_path / "store"
    task = store / "task"
    _, newest = two_snapshots(task, signed=False)
    newest.unlink()
    os.mkfifo(newest)
    (task / "00000000000000000002.json").unlink(missing_ok=True)
    os.mkfifo(task / "00000000000000000002.json")
    code = finishes(lambda: cli([command, str(store), "task"]), [newest])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "bad" in out.lower()
    assert "payload 00000000000000000001." in out


def test_symlinked_store_root_keeps_working(tmp_path: Path) -> None:
    """A store folder reached through a symlink saves and loads: only objects must not be links."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    cp = Checkpoint(link / "task", storage=Storage(keep=2))
    cp.save_sync(NEW)
    assert loaded(Checkpoint(link / "task")) == NEW
    assert loaded(Checkpoint(real / "task")) == NEW


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder", "missing"])
def test_local_backend_opens_regular_files_only(tmp_path: Path, kind: str) -> None:
    """LocalBackend.read and open_read refuse at once a name that is not a regular file."""
    backend = LocalBackend(tmp_path)
    (tmp_path / "real").write_bytes(b"data")
    name = "object"
    if kind == "fifo":
        os.mkfifo(tmp_path / name)
    elif kind == "symlink":
        (tmp_path / name).symlink_to(tmp_path / "real")
    elif kind == "folder":
        (tmp_path / name).mkdir()
    fifos = [tmp_path / name] if kind == "fifo" else []
    for call in (lambda: backend.read(name), lambda: backend.open_read(name).close()):
        with pytest.raises(FileNotFoundError) as caught:
            finishes(call, fifos)
        if kind != "missing":
            assert isinstance(caught.value, NotAnObjectError)
            assert "not a regular file" in str(caught.value)
    assert backend.read("real") == b"data"
    with backend.open_read("real") as stream:
        assert stream.read() == b"data"


def test_no_valid_snapshot_left_raises_corrupt(tmp_path: Path) -> None:
    """With its only payload a FIFO, a load raises CorruptCheckpointError and does not hang."""
    store = tmp_path / "store"
    Checkpoint(store).save_sync(NEW)
    (payload,) = store.glob("*.blob")
    payload.unlink()
    os.mkfifo(payload)

    def load() -> None:
        with pytest.raises(CorruptCheckpointError, match="snapshot 0"):
            Checkpoint(store).load_sync()

    finishes(load, [payload])
