"""ResumableCallback: a transformers Trainer run killed mid-training resumes from the store."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from resumable.huggingface import ResumableCallback

RUN = Path(__file__).resolve().parents[1] / "huggingface_run.py"


def start(workdir: Path, store: Path, max_steps: int) -> subprocess.Popen[str]:
    """tests/huggingface_run.py in a new process, writing into ``workdir/out``."""
    return subprocess.Popen(
        [sys.executable, str(RUN), str(store), "out", str(max_steps)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_sigkill_then_resume_on_a_fresh_machine(tmp_path: Path) -> None:
    """SIGKILL mid-training; a new process with an empty output folder resumes from the store."""
    store = tmp_path / "store"
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    first.mkdir()
    second.mkdir()

    proc = start(first, store, 10_000)
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            if line.startswith("saved step 6"):
                break
        else:
            pytest.fail("the run ended before its second checkpoint")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL

    proc = start(second, store, 15)
    assert proc.stdout is not None
    with proc.stdout:
        output = proc.stdout.read()
    assert proc.wait() == 0, output
    started = re.search(r"^start step (\d+)$", output, re.MULTILINE)
    assert started is not None, output
    assert int(started.group(1)) >= 6, output
    assert re.search(r"^done step 15$", output, re.MULTILINE), output


def test_restore_returns_the_newest_checkpoint(tmp_path: Path) -> None:
    """restore() brings back the newest committed folder under its checkpoint-<step> name."""
    mirror = ResumableCallback(tmp_path / "store")
    assert mirror.restore(tmp_path / "empty") is None
    for step in (3, 6):
        folder = tmp_path / "a" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (folder / "weights.bin").write_bytes(bytes([step]) * 100)
        mirror.checkpoint.save_sync(folder)
    restored = mirror.restore(tmp_path / "b")
    assert restored == str(tmp_path / "b" / "checkpoint-6")
    assert (tmp_path / "b" / "checkpoint-6" / "weights.bin").read_bytes() == bytes([6]) * 100
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint-6"]
    mirror.close()
