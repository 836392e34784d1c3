"""latest_checkpoint: the newest match by modification time."""

from __future__ import annotations

import os
from pathlib import Path

from resumable import latest_checkpoint


def test_newest_match_by_mtime(tmp_path: Path) -> None:
    """The most recently modified last.ckpt wins, wherever it is nested."""
    for i, sub in enumerate(["a", "b/c", "d"]):
        f = tmp_path / sub / "last.ckpt"
        f.parent.mkdir(parents=True)
        f.write_text(sub)
        os.utime(
            f, (1000 + i * (1 if sub != "b/c" else 10), 1000 + i * (1 if sub != "b/c" else 10))
        )
    assert latest_checkpoint(tmp_path) == tmp_path / "b" / "c" / "last.ckpt"


def test_custom_pattern(tmp_path: Path) -> None:
    """A glob pattern selects other file names."""
    (tmp_path / "epoch-1.pt").write_text("1")
    (tmp_path / "last.ckpt").write_text("x")
    assert latest_checkpoint(tmp_path, "*.pt") == tmp_path / "epoch-1.pt"


def test_no_match_or_missing_root_is_none(tmp_path: Path) -> None:
    """No match, or a root that does not exist, gives None."""
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_accepts_str_root(tmp_path: Path) -> None:
    """The root may be a str."""
    (tmp_path / "last.ckpt").write_text("x")
    assert latest_checkpoint(str(tmp_path)) == tmp_path / "last.ckpt"
