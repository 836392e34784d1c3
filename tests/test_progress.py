"""Progress reporting: callbacks as bytes move, a tqdm bar on request, a log line for big ones."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from resumable import Checkpoint, ConfigurationError

from .conftest import IO


def test_callback_sees_save_and_load(store_url: str, io: IO, tmp_path: Path) -> None:
    """A progress callable gets growing byte counts and one finished call per transfer."""
    events: list[tuple[str, int, int | None, bool]] = []
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    with Checkpoint(store_url, progress=lambda *e: events.append(e)) as cp:
        io.save(cp, src)
        io.load(cp)
    saves = [e for e in events if e[0].startswith("save")]
    loads = [e for e in events if e[0].startswith("load")]
    assert [e[1] for e in saves] == sorted(e[1] for e in saves)
    assert saves[-1] == (saves[-1][0], 3 << 20, 3 << 20, True)
    assert loads[-1][1:] == (3 << 20, 3 << 20, True)
    assert sum(e[3] for e in events) == 2


def test_tqdm_bar(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """progress=True draws a tqdm bar on stderr."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2 << 20))
    with Checkpoint(store_url, progress=True) as cp:
        cp.save_sync(src)
        cp.load_sync()
    err = capsys.readouterr().err
    assert "save" in err
    assert "load" in err
    assert "2.00M" in err


def test_bad_progress_argument() -> None:
    """Progress must be a bool or a callable."""
    with pytest.raises(ConfigurationError, match="progress"):
        Checkpoint("memory://x", progress="yes")  # type: ignore[arg-type]


def test_large_transfers_log_size_and_rate(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Saves and loads of 16 MiB or more log one INFO line with size and rate."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 << 20))
    with caplog.at_level(logging.INFO, logger="resumable"), Checkpoint(store_url) as cp:
        cp.save_sync(src)
        cp.load_sync()
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("saved snapshot 0") and "MiB/s" in m for m in lines)
    assert any(m.startswith("loaded snapshot 0") and "16.0 MiB" in m for m in lines)
