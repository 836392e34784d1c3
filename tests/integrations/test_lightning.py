"""ResumableCheckpointIO: a Lightning run killed mid-training resumes from the store elsewhere."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from resumable.lightning import ResumableCheckpointIO

RUN = Path(__file__).resolve().parents[1] / "lightning_run.py"


def start(workdir: Path, store: Path, dirpath: str, max_steps: int) -> subprocess.Popen[str]:
    """tests/lightning_run.py in a new process."""
    return subprocess.Popen(
        [sys.executable, str(RUN), str(store), dirpath, str(max_steps)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_sigkill_then_resume_on_a_fresh_machine(tmp_path: Path) -> None:
    """SIGKILL mid-training; a new process with an empty folder resumes via ckpt_path="last"."""
    store = tmp_path / "store"
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    first.mkdir()
    second.mkdir()

    proc = start(first, store, "ckpts", 10_000)
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            if line.startswith("saved last.ckpt step 6"):
                break
        else:
            pytest.fail("the run ended before its second checkpoint")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL

    # A fresh machine: nothing local, the same store.
    proc = start(second, store, "ckpts", 24)
    with proc.stdout:
        output = proc.stdout.read()
    assert proc.wait() == 0, output
    started = re.search(r"^start step (\d+)$", output, re.MULTILINE)
    assert started is not None, output
    assert int(started.group(1)) >= 6
    assert int(started.group(1)) % 3 == 0
    assert re.search(r"^done step 24$", output, re.MULTILINE), output
    assert (second / "ckpts").is_dir()


def test_restore_last_picks_up_commit_times(tmp_path: Path) -> None:
    """restore_last writes each last*.ckpt with its commit time, so the newest wins."""
    store = tmp_path / "store"
    io = ResumableCheckpointIO(store)
    io.save_checkpoint({"global_step": 1}, tmp_path / "a" / "last.ckpt")
    io.save_checkpoint({"global_step": 2}, tmp_path / "a" / "last-v1.ckpt")
    io.save_checkpoint({"global_step": 0}, tmp_path / "a" / "epoch=0-step=1.ckpt")
    fresh = ResumableCheckpointIO(store, dirpath=tmp_path / "b")
    restored = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert restored == ["last-v1.ckpt", "last.ckpt"]
    newest = max((tmp_path / "b").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert fresh.load_checkpoint(newest)["global_step"] == 2
    io.teardown()
    fresh.teardown()


def test_store_is_the_truth(tmp_path: Path) -> None:
    """A load reads the store's verified copy, not a local file changed behind its back."""
    io = ResumableCheckpointIO(tmp_path / "store")
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"global_step": 5}, path)
    path.write_bytes(b"torn")
    assert io.load_checkpoint(path)["global_step"] == 5
    io.remove_checkpoint(path)
    assert not path.exists()
    assert io.stored_names() == []
    io.teardown()
