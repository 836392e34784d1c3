"""Progress of long transfers: a callback protocol and a tqdm bar for those who want one."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from ._errors import ConfigurationError

__all__ = ["Progress", "TqdmProgress", "make_progress"]


class Progress(Protocol):
    """A callback as bytes move.

    ``what`` names the transfer, ``done`` counts bytes so far, ``total`` is the size when
    known, and ``finished`` is true exactly once, at the end.

    Example:
        >>> def show(what, done, total, finished):
        ...     if finished:
        ...         print(f"{what}: {done} bytes")

    """

    def __call__(self, what: str, done: int, total: int | None, finished: bool) -> None:
        """Report progress."""


class TqdmProgress:
    """A tqdm bar per transfer (``pip install "resumable[progress]"``)."""

    def __init__(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:
            raise ConfigurationError(
                'progress=True needs tqdm: pip install "resumable[progress]"'
            ) from exc
        self._tqdm = tqdm
        self._bars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, what: str, done: int, total: int | None, finished: bool) -> None:
        """Create, advance or close the bar of ``what``."""
        with self._lock:
            bar = self._bars.get(what)
            if bar is None:
                bar = self._bars[what] = self._tqdm(
                    desc=what, total=total, unit="B", unit_scale=True, unit_divisor=1024
                )
            bar.update(done - bar.n)
            if finished:
                bar.close()
                del self._bars[what]


def make_progress(progress: bool | Progress | None) -> Progress | None:
    """The callback for a ``progress=`` argument."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return TqdmProgress()
    if callable(progress):
        return progress
    raise ConfigurationError(f"progress must be True, False or a callable, got {progress!r}")
