"""Progress of transfers, reported through fsspec's own callbacks.

``Storage(progress=...)`` takes what fsspec's transfer methods take: an
:class:`fsspec.callbacks.Callback`. One Checkpoint runs many transfers (each save, each load
of a snapshot, each retry), one at a time, and each is reported like one file of fsspec's
multi-file ``put``/``get``:

- a callback that branches (overrides ``branched``, as ``progress=True``'s does) gets
  ``branched(source, destination)`` per transfer, and that child callback reports it;
- one that does not (fsspec's ``Callback`` with hooks, a ``TqdmCallback``) reports each
  transfer itself, from zero.

Either way the transfer's callback gets ``set_size`` (the payload's size: up front for a
load, at the end for a save, whose size is known only once written), ``relative_update``
with each chunk's length, and ``close()`` when the transfer ends, also when it fails.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from fsspec.callbacks import Callback, NoOpCallback, TqdmCallback

from ._errors import ConfigurationError

__all__ = ["Progress", "ProgressArg", "TqdmBars", "make_progress", "transfer"]

#: The callback a Checkpoint reports its transfers to.
Progress: TypeAlias = Callback

#: What ``Storage(progress=...)`` accepts.
ProgressArg: TypeAlias = bool | Callback | None


class TqdmBars(Callback):  # type: ignore[misc]  # fsspec has no type hints
    """``progress=True``: a tqdm bar per transfer, each an fsspec ``TqdmCallback``.

    Needs tqdm (``pip install "resumable-tasks[progress]"``).

    Example:
        >>> import tempfile
        >>> from resumable import Checkpoint, Storage
        >>> bars = Storage(progress=TqdmBars())  # progress=True
        >>> with Checkpoint(tempfile.mkdtemp(), storage=bars) as cp:
        ...     cp.save_sync(b"weights")  # draws "snapshot 0 -> /tmp/..." on stderr

    """

    def __init__(self) -> None:
        try:
            import tqdm  # noqa: F401  # fail now, not at the first transfer
        except ImportError as exc:
            raise ConfigurationError(
                'progress=True needs tqdm: pip install "resumable-tasks[progress]"'
            ) from exc
        super().__init__()

    def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Callback:
        """A new bar for the transfer from ``path_1`` to ``path_2``."""
        return TqdmCallback(
            tqdm_kwargs={
                "desc": f"{path_1} -> {path_2}",
                "unit": "B",
                "unit_scale": True,
                "unit_divisor": 1024,
            }
        )


def make_progress(progress: ProgressArg) -> Progress | None:
    """The callback for a ``progress=`` argument, or None for no progress.

    Example:
        >>> from fsspec.callbacks import Callback
        >>> make_progress(False) is None
        True
        >>> isinstance(make_progress(Callback()), Callback)
        True

    """
    if progress is None or progress is False:
        return None
    if progress is True:
        return TqdmBars()
    if isinstance(progress, Callback):
        return progress
    hint = ""
    if callable(progress):
        hint = (
            "; the (what, done, total, finished) callable form is gone: pass "
            "fsspec.callbacks.Callback(hooks={'name': fn}), whose fn(size, value) is called "
            "as bytes move"
        )
    raise ConfigurationError(
        f"progress must be True, False, None or an fsspec.callbacks.Callback, got "
        f"{progress!r}{hint}"
    )


def transfer(
    progress: Progress | None, source: str, destination: str, size: int | None = None
) -> Callback:
    """The callback that reports one transfer: a branched child, or ``progress`` itself.

    Example:
        >>> from fsspec.callbacks import Callback
        >>> seen = []
        >>> cb = Callback(hooks={"log": lambda size, value: seen.append((size, value))})
        >>> one = transfer(cb, "memory://x", "snapshot 0", size=4)
        >>> one.relative_update(4)
        >>> one.close()
        >>> seen
        [(4, 0), (4, 4)]

    """
    if progress is None:
        return NoOpCallback()
    child = progress.branched(source, destination)
    if not isinstance(child, NoOpCallback):
        child.set_size(size)
        return child
    # It does not branch: it reports this transfer itself. fsspec has no reset; setting
    # the counter directly (a public attribute) keeps a TqdmCallback from drawing its new
    # bar with the last transfer's count.
    progress.value = 0
    progress.set_size(size)
    return progress
