"""latest_checkpoint: the newest match by modification time, or by key=."""

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


def test_key_ranks_by_step_number_not_mtime(tmp_path: Path) -> None:
    """key= ranks matches by what it returns (the step in the name), not modification time."""
    for step, mtime in ((9, 3000), (10, 1000), (2, 2000)):
        f = tmp_path / f"step-{step}.pt"
        f.write_text(str(step))
        os.utime(f, (mtime, mtime))
    assert latest_checkpoint(tmp_path, "*.pt") == tmp_path / "step-9.pt"  # newest mtime
    by_step = latest_checkpoint(tmp_path, "*.pt", key=lambda p: int(p.stem.split("-")[1]))
    assert by_step == tmp_path / "step-10.pt"  # a string sort would pick step-9


def test_key_returning_none_leaves_a_match_out(tmp_path: Path) -> None:
    """A match for which key returns None is not a candidate; all left out gives None."""
    (tmp_path / "step-3.pt").write_text("3")
    (tmp_path / "best.pt").write_text("b")

    def step(path: Path) -> int | None:
        _, _, number = path.stem.partition("-")
        return int(number) if number.isdigit() else None

    assert latest_checkpoint(tmp_path, "*.pt", key=step) == tmp_path / "step-3.pt"
    assert latest_checkpoint(tmp_path, "best.pt", key=step) is None


def test_key_ties_are_broken_by_path(tmp_path: Path) -> None:
    """Equal keys: the greatest path wins, so the answer does not depend on listing order."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "last.ckpt").write_text(sub)
    assert latest_checkpoint(tmp_path, key=lambda p: 0) == tmp_path / "b" / "last.ckpt"
