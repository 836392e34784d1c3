"""``latest_checkpoint``: the newest file matching a pattern, for frameworks' ``last.ckpt``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["latest_checkpoint"]


def latest_checkpoint(
    root: str | os.PathLike[str], glob_pattern: str = "**/last.ckpt"
) -> Path | None:
    """The newest path under ``root`` matching ``glob_pattern``, by modification time.

    Returns ``None`` when ``root`` does not exist or nothing matches. Ties are broken by
    path, so the answer is stable.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "epoch1").mkdir(); (root / "epoch1" / "last.ckpt").write_text("w")
        1
        >>> latest_checkpoint(root).name
        'last.ckpt'

    """
    base = Path(root)
    if not base.is_dir():
        return None
    best: tuple[float, str, Path] | None = None
    for match in base.glob(glob_pattern):
        try:
            mtime = match.stat().st_mtime
        except FileNotFoundError:  # removed while we looked
            continue
        key = (mtime, str(match), match)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]
