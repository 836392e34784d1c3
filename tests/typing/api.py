"""Checked by mypy --strict, never run: the public API's types as users see them."""

from __future__ import annotations

from pathlib import Path

from resumable import Checkpoint, latest_checkpoint


def checkpoint_types() -> None:
    cp = Checkpoint("memory://typing")
    root: Path | None = cp.load_sync()
    cp.save_sync(b"x")
    cp.save_sync("a/path")
    cp.save_sync(Path("a/path"))
    newest: Path | None = latest_checkpoint(".")
    del root, newest
