"""clear() and save_background() became async twins: unchanged sync callers still work, warned."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from resumable import Checkpoint


def test_clear_from_sync_code_clears_and_warns(tmp_path: Path) -> None:
    """cp.clear() without a running loop clears at once and names clear_sync in a warning."""
    with Checkpoint(tmp_path / "cp") as cp:
        cp.save_sync(b"x")
        with pytest.warns(DeprecationWarning, match=r"clear_sync\(\)"):
            cp.clear()
        assert not cp.exists_sync()


def test_save_background_from_sync_code_saves_and_warns(tmp_path: Path) -> None:
    """cp.save_background(x) without a running loop saves x and names the _sync twin."""
    with Checkpoint(tmp_path / "cp") as cp:
        with pytest.warns(DeprecationWarning, match=r"save_background_sync\(\)"):
            cp.save_background(b"y")
        cp.flush_sync()
        folder = cp.load_sync()
        assert folder is not None
        assert (folder / "payload").read_bytes() == b"y"


def test_awaited_twins_do_not_warn(tmp_path: Path) -> None:
    """Awaited inside a running loop, clear() and save_background() are plain async twins."""

    async def main(cp: Checkpoint) -> bool:
        await cp.save_background(b"z")
        await cp.flush()
        saved = await cp.exists()
        await cp.clear()
        return saved and not await cp.exists()

    with Checkpoint(tmp_path / "cp") as cp:
        assert asyncio.run(main(cp))  # filterwarnings=error: any warning fails the test
