"""``latest_checkpoint``: the newest file matching a pattern, for frameworks' ``last.ckpt``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

__all__ = ["latest_checkpoint"]


def latest_checkpoint(
    root: str | os.PathLike[str],
    glob_pattern: str = "**/last.ckpt",
    *,
    key: Callable[[Path], SupportsRichComparison | None] | None = None,
) -> Path | None:
    """The newest path under ``root`` matching ``glob_pattern``: by modification time, or ``key``.

    Returns ``None`` when ``root`` does not exist or nothing matches. Ties are broken by
    path, so the answer is stable.

    Args:
        root: the folder to search.
        glob_pattern: a ``pathlib`` glob pattern, relative to ``root``.
        key: ranks the matches instead of their modification time: a callable of each
            matching ``Path`` that returns a sortable value (the highest wins), e.g. the step
            number in the name. A match for which it returns ``None`` is left out.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "epoch1").mkdir(); (root / "epoch1" / "last.ckpt").write_text("w")
        1
        >>> latest_checkpoint(root).name
        'last.ckpt'
        >>> for step in (9, 10): _ = (root / f"step-{step}.pt").write_text("w")
        >>> latest_checkpoint(root, "step-*.pt", key=lambda p: int(p.stem.split("-")[1])).name
        'step-10.pt'

    """
    base = Path(root)
    if not base.is_dir():
        return None
    rank = _mtime if key is None else key
    best: tuple[SupportsRichComparison, str, Path] | None = None
    for match in base.glob(glob_pattern):
        value = rank(match)
        if value is None:  # left out by key=, or removed while we looked
            continue
        if best is None or (value, str(match)) > best[:2]:
            best = (value, str(match), match)
    return None if best is None else best[2]


def _mtime(path: Path) -> float | None:
    """The modification time of ``path``; ``None`` once it is gone."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None
