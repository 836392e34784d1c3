"""Progress of transfers, reported through fsspec's own callbacks.

``Storage(progress=...)`` takes what fsspec's transfer methods take: an
:class:`fsspec.callbacks.Callback`. One Checkpoint runs many transfers (each save, each load
of a snapshot, each retry), one at a time, and each is reported like one file of fsspec's
multi-file ``put``/``get``:

- a callback that branches (overrides ``branched``, as ``progress=True``'s does) gets
  ``branched(source, destination)`` per transfer, source first as in fsspec's ``put`` and
  ``get``, and that child callback reports it. A save goes from ``"local"`` to
  ``"snapshot 3 of <store URL>"``, a load from ``"snapshot 3 of <store URL>"`` to
  ``"local"`` (:func:`saving`, :func:`loading`);
- one that does not (fsspec's ``Callback`` with hooks, a ``TqdmCallback``) reports each
  transfer itself, from zero.

Either way the transfer's callback gets ``set_size`` (the payload's size: up front for a
load, at the end for a save, whose size is known only once written), ``relative_update``
with each chunk's length, and ``close()`` when the transfer ends, also when it fails.

Sizes are in binary units everywhere, bars and log lines alike: ``B``, ``KiB``, ``MiB``,
``GiB``, ``TiB`` (:func:`format_bytes`).
"""

from __future__ import annotations

import functools
from typing import Any, TypeAlias

from fsspec.callbacks import Callback, NoOpCallback, TqdmCallback

from ._errors import ConfigurationError

__all__ = [
    "LOCAL",
    "Progress",
    "ProgressArg",
    "TqdmBars",
    "format_bytes",
    "loading",
    "make_progress",
    "saving",
    "snapshot_label",
    "transfer",
]

#: The callback a Checkpoint reports its transfers to.
Progress: TypeAlias = Callback

#: What ``Storage(progress=...)`` accepts.
ProgressArg: TypeAlias = bool | Callback | None

#: The local end of a transfer: the process that saves or loads.
LOCAL = "local"

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units (powers of 1024), one decimal above 1 KiB: a bar's sizes.

    Example:
        >>> format_bytes(512), format_bytes(3 << 20), format_bytes(1.5 * 2**40)
        ('512 B', '3.0 MiB', '1.5 TiB')

    """
    if n < 1024:
        return f"{n:.0f} B"
    for unit in _UNITS:
        n /= 1024
        if n < 1024 or unit == _UNITS[-1]:
            break
    return f"{n:.1f} {unit}"


@functools.cache
def _bar_class() -> Any:
    """A tqdm bar whose counts and rate are in binary units (tqdm's own say ``M`` for MiB)."""
    from tqdm import tqdm

    class BinaryBar(tqdm):  # type: ignore[misc]  # tqdm has no type hints
        @property
        def format_dict(self) -> dict[str, Any]:
            fields: dict[str, Any] = super().format_dict
            n, total, elapsed = fields["n"], fields["total"], fields["elapsed"]
            rate = fields["rate"] or ((n - fields["initial"]) / elapsed if elapsed else None)
            fields["done"] = format_bytes(n)
            fields["speed"] = f"{format_bytes(rate)}/s" if rate else "? B/s"
            if total:
                fields["size"] = format_bytes(total)
                fields["bar_format"] = (
                    "{desc}: {percentage:3.0f}%|{bar}| {done}/{size} "
                    "[{elapsed}<{remaining}, {speed}]"
                )
            else:  # a save's size is known only at its end: no bar until then
                fields["bar_format"] = "{desc}: {done} [{elapsed}, {speed}]"
            return fields

    return BinaryBar


class TqdmBars(Callback):  # type: ignore[misc]  # fsspec has no type hints
    """``progress=True``: a tqdm bar per transfer, each an fsspec ``TqdmCallback``.

    Needs tqdm (``pip install "resumable-tasks[progress]"``).

    Example:
        >>> import tempfile
        >>> from resumable import Checkpoint, Storage
        >>> bars = Storage(progress=TqdmBars())  # progress=True
        >>> with Checkpoint(tempfile.mkdtemp(), storage=bars) as cp:
        ...     cp.save_sync(b"weights")  # a bar on stderr: "... 7 B/7 B [00:00<00:00, ...]"

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
        """A new bar for the transfer from ``path_1`` to ``path_2``, in binary units."""
        return TqdmCallback(tqdm_kwargs={"desc": f"{path_1} -> {path_2}"}, tqdm_cls=_bar_class())


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

    ``source`` and ``destination`` name the transfer's two ends, where the bytes come from
    first (:func:`saving` and :func:`loading` name a snapshot's).

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


def snapshot_label(seq: int, url: str) -> str:
    """How a transfer names the store's end: ``"snapshot <seq> of <url>"``.

    Example:
        >>> snapshot_label(3, "s3://bucket/runs/a")
        'snapshot 3 of s3://bucket/runs/a'

    """
    return f"snapshot {seq} of {url}"


def saving(progress: Progress | None, seq: int, url: str) -> Callback:
    """The callback that reports the save of snapshot ``seq`` to the store at ``url``.

    Its size is set when the payload is written; labelled ``local -> snapshot <seq> of <url>``.

    Example:
        >>> from fsspec.callbacks import Callback
        >>> class Names(Callback):
        ...     def branched(self, path_1, path_2, **kwargs):
        ...         print(path_1, "->", path_2)
        ...         return Callback()
        >>> _ = saving(Names(), 0, "memory://runs/a")
        local -> snapshot 0 of memory://runs/a

    """
    return transfer(progress, LOCAL, snapshot_label(seq, url))


def loading(progress: Progress | None, seq: int, url: str, size: int | None) -> Callback:
    """The callback that reports the load of snapshot ``seq`` (``size`` bytes) from ``url``.

    Labelled ``snapshot <seq> of <url> -> local``, source first.

    Example:
        >>> from fsspec.callbacks import Callback
        >>> class Names(Callback):
        ...     def branched(self, path_1, path_2, **kwargs):
        ...         print(path_1, "->", path_2)
        ...         return Callback()
        >>> _ = loading(Names(), 0, "memory://runs/a", 5)
        snapshot 0 of memory://runs/a -> local

    """
    return transfer(progress, snapshot_label(seq, url), LOCAL, size)
