"""Background saves for Checkpoint users: captured at the call, flushed, failures surfaced."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from resumable import (
    Checkpoint,
    ResumableError,
)

from ..conftest import IO


def test_checkpoint_background_save_captures_now(store_url: str, io: IO, tmp_path: Path) -> None:
    """save_background captures the file at the call; flush waits; the newest wins."""
    src = tmp_path / "f.bin"
    with Checkpoint(store_url) as cp:
        for i in range(5):
            src.write_bytes(bytes([i]) * 100_000)
            cp.save_background_sync(src)
        src.write_bytes(b"changed after the last save")
        cp.flush_sync()
        assert (io.load(cp) / "payload").read_bytes() == bytes([4]) * 100_000


def test_checkpoint_background_failure_surfaces(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed background save is raised by the next flush, never lost silently."""

    def broken(self: Checkpoint, *args: Any, **kwargs: Any) -> Any:
        raise OSError("no space left")

    cp = Checkpoint(store_url)
    monkeypatch.setattr(Checkpoint, "commit", broken)
    cp.save_background_sync(b"x")
    with pytest.raises(OSError, match="no space left"):
        cp.flush_sync()
    cp.close()


def test_close_flushes_background_saves(store_url: str) -> None:
    """close() waits for pending background saves."""
    with Checkpoint(store_url) as cp:
        cp.save_background_sync(b"last words")
    with Checkpoint(store_url) as again:
        assert (again.load_sync() / "payload").read_bytes() == b"last words"


def test_sync_save_lands_after_pending_background_save(store_url: str) -> None:
    """save_sync after save_background: the synchronous (newer) snapshot is the newest."""
    with Checkpoint(store_url) as cp:
        cp.save_background_sync(b"older")
        cp.save_sync(b"newer")
        assert (cp.load_sync() / "payload").read_bytes() == b"newer"


def test_background_save_after_close_is_refused(store_url: str) -> None:
    """save_background on a closed Checkpoint raises instead of waiting forever."""
    cp = Checkpoint(store_url)
    cp.save_background_sync(b"x")
    cp.close()
    with pytest.raises(ResumableError, match="closed"):
        cp.save_background_sync(b"y")


EXIT_FLUSH = textwrap.dedent(
    """
    import os, sys
    from resumable import Checkpoint
    cp = Checkpoint(sys.argv[1])
    cp.save_background_sync(b"big" * 2_000_000)   # hashed on worker threads: > 64 KiB
    # no flush, no close: interpreter exit must still commit it
    """
)


def test_interpreter_exit_flushes_large_background_saves(tmp_path: Path) -> None:
    """A large background save still pending at exit is committed before the process ends."""
    script = tmp_path / "exit.py"
    script.write_text(EXIT_FLUSH)
    store = str(tmp_path / "store")
    done = subprocess.run(
        [sys.executable, str(script), store], capture_output=True, text=True, check=True
    )
    assert "lost" not in done.stderr
    with Checkpoint(store) as cp:
        assert (cp.load_sync() / "payload").read_bytes() == b"big" * 2_000_000
