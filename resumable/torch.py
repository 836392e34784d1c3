"""Helpers for resuming PyTorch training loops bit-identically.

A training step draws from three places a snapshot must capture: the model, optimizer and
scheduler (their ``state_dict()``), the global random number generators (dropout, noise:
:func:`capture_rng` / :func:`restore_rng`) and the data loader's position (which samples,
in which order, are still to come this epoch: :class:`ResumableSampler`). With all three in
the state a generator task yields, a run killed at any moment resumes to the same bits as a
run never interrupted. docs/howto-pytorch.md walks through the whole loop.

:func:`map_location` loads a snapshot's tensors onto another device than the one they were
saved on: a snapshot of CUDA tensors resumed on a machine without CUDA.

This module imports torch only where it needs it (:meth:`ResumableSampler.generator`,
:func:`map_location`);
install it with ``pip install "resumable-tasks[torch]"``.

Example:
    >>> from resumable.torch import ResumableSampler
    >>> list(ResumableSampler(6, seed=1, epoch=0, start=4)) == list(
    ...     ResumableSampler(6, seed=1, epoch=0)
    ... )[4:]
    True

"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import random
from collections.abc import Callable, Iterator
from typing import Any

from ._rng import capture_rng, restore_rng
from ._statecodec import tensor_location

__all__ = ["ResumableSampler", "capture_rng", "map_location", "restore_rng"]


@contextlib.contextmanager
def map_location(location: Any) -> Iterator[None]:
    """Load the tensors of resumed task state onto ``location``, as ``torch.load`` would.

    A snapshot records the device each tensor was on: by default a resume puts it back there,
    which fails on a machine without that device (a snapshot of CUDA tensors resumed on a
    CPU-only machine raises a ``StateError`` that says so). Inside this block, state loaded
    from a snapshot (by a resumed call or a retry of a ``@resumable`` task, or
    ``resumable.testing.read_state``) puts its tensors where ``location`` says. It takes what
    ``torch.load``'s ``map_location`` takes, with the same meaning:

    - a device (``"cpu"``, ``"cuda:0"``, a ``torch.device``): every tensor goes there;
    - a dict from saved device to device (``{"cuda:1": "cuda:0"}``): the devices it names
      move, the others stay; keys are devices as torch names them, with their index;
    - a function ``f(storage, saved_device)`` that returns the storage placed (the storage
      is given on the CPU), or None to leave it on its saved device;
    - None: where each tensor was saved (the default).

    The setting holds for the thread or async task that enters the block (and the threads the
    library loads state on for it); it covers tensors in task state only: the RNG states of
    :func:`capture_rng` are plain bytes, and files a task keeps in ``Dir()`` state are read by
    its own code. Tensors on the ``meta`` device have no data and stay there.

    Raises:
        ImportError: torch is not installed.
        TypeError: a ``location`` that is none of the above.
        RuntimeError: a device name torch does not know (``"cdua"``).

    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> from resumable import Checkpoint, resumable
        >>> from resumable.testing import read_state
        >>> @resumable(state=None, store="memory://doc-map", key="t", on_success="keep")
        ... def task(state=None):
        ...     yield {"w": torch.ones(2)}
        >>> task()
        >>> with Checkpoint("memory://doc-map/t") as cp, map_location("meta"):
        ...     read_state(cp.load_sync() / "payload")["w"]
        tensor(..., device='meta', size=(2,))

        Resuming, on a CPU-only machine, a run whose snapshots hold CUDA tensors::

            with map_location("cpu"):
                final = train()

    """
    token = tensor_location.set(_placer(location))
    try:
        yield
    finally:
        tensor_location.reset(token)


def _placer(location: Any) -> Callable[[Any, str], Any] | None:
    """``location`` as a function ``(storage, saved_device) -> storage``, torch's rules."""
    if location is None:
        return None
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(
            'map_location() needs torch: pip install "resumable-tasks[torch]"'
        ) from exc
    restore = torch.serialization.default_restore_location
    if isinstance(location, dict):
        table = {str(saved): str(torch.device(to)) for saved, to in location.items()}
        return lambda storage, saved: restore(storage, table.get(saved, saved))
    if isinstance(location, (str, torch.device)):
        device = str(torch.device(location))  # a misspelt device fails here, not at the load
        return lambda storage, saved: restore(storage, device)
    if callable(location):

        def placed(storage: Any, saved: str) -> Any:
            moved = location(storage, saved)
            return restore(storage, saved) if moved is None else moved

        return placed
    raise TypeError(
        "map_location() takes a device, a dict from saved device to device, or a function "
        f"(storage, saved_device) -> storage, as torch.load does; got {location!r}"
    )


class ResumableSampler:
    """A data loader sampler whose order depends only on ``(seed, epoch)`` and that can start late.

    Pass it as a ``DataLoader``'s ``sampler=`` (instead of ``shuffle=True``): it yields the
    indices ``0 .. dataset_len - 1`` in an order fixed by ``seed`` and ``epoch`` alone —
    never by a generator whose state a crash loses — and skips the first ``start`` of them,
    the samples the epoch already went through before the snapshot. Make a new sampler (and
    loader) per epoch, or call :meth:`set_epoch`.

    The order does not depend on torch (it is a Python ``random.Random`` shuffle), so it is
    the same in every process, on every machine, and across torch versions.

    Args:
        dataset_len: the number of samples, ``len(dataset)``.
        seed: the run's seed; the same seed and epoch always give the same order.
        epoch: the epoch (0-based) whose order to produce.
        start: how many samples of this epoch to skip: ``batches_done * batch_size``.
        shuffle: ``False`` for the identity order ``0, 1, 2, ...`` (evaluation).

    Raises:
        ValueError: a negative length, epoch or start, or a start past the end.
        TypeError: a seed that is not an int.

    Example:
        >>> sampler = ResumableSampler(5, seed=0, epoch=2)
        >>> sorted(sampler)
        [0, 1, 2, 3, 4]
        >>> list(ResumableSampler(5, seed=0, epoch=2, start=3)) == list(sampler)[3:]
        True
        >>> len(ResumableSampler(5, seed=0, epoch=2, start=3))
        2

        In a training loop (``batch`` counts the batches of the epoch already done)::

            sampler = ResumableSampler(len(data), seed=0, epoch=epoch, start=batch * 32)
            loader = DataLoader(data, batch_size=32, sampler=sampler,
                                generator=sampler.generator())
            for batch, (x, y) in enumerate(loader, start=batch):
                ...

    """

    def __init__(
        self,
        dataset_len: int,
        seed: int = 0,
        *,
        epoch: int = 0,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        for name, value in (("dataset_len", dataset_len), ("epoch", epoch), ("start", start)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if start > dataset_len:
            raise ValueError(f"start={start} is past the end of {dataset_len} samples")
        self.dataset_len = dataset_len
        self.seed = seed
        self.epoch = epoch
        self.start = start
        self.shuffle = shuffle

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Produce ``epoch``'s order from now on, skipping its first ``start`` samples.

        Example:
            >>> sampler = ResumableSampler(4, seed=3)
            >>> sampler.set_epoch(1)
            >>> list(sampler) == list(ResumableSampler(4, seed=3, epoch=1))
            True

        """
        if not isinstance(epoch, int) or epoch < 0 or not isinstance(start, int) or start < 0:
            raise ValueError(f"epoch and start must be whole numbers >= 0: {epoch!r}, {start!r}")
        if start > self.dataset_len:
            raise ValueError(f"start={start} is past the end of {self.dataset_len} samples")
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """The epoch's whole order, the skipped samples included.

        Example:
            >>> ResumableSampler(4, shuffle=False).order()
            [0, 1, 2, 3]

        """
        indices = list(range(self.dataset_len))
        if self.shuffle:
            random.Random(self._epoch_seed()).shuffle(indices)
        return indices

    def generator(self) -> Any:
        """A ``torch.Generator`` seeded from ``(seed, epoch)``, for the ``DataLoader``.

        Pass it as ``DataLoader(..., generator=sampler.generator())``: the loader then draws
        its workers' base seed from it instead of from torch's global generator, so that
        making the loader at a resume does not shift the global random stream (dropout)
        against the uninterrupted run, and workers are seeded by ``(seed, epoch)``.

        Example:
            >>> import pytest; torch = pytest.importorskip("torch")
            >>> a = ResumableSampler(4, seed=3, epoch=1).generator()
            >>> b = ResumableSampler(4, seed=3, epoch=1).generator()
            >>> torch.equal(a.get_state(), b.get_state())
            True

        """
        try:
            torch = importlib.import_module("torch")
        except ImportError as exc:
            raise ImportError(
                'ResumableSampler.generator() needs torch: pip install "resumable-tasks[torch]"'
            ) from exc
        return torch.Generator().manual_seed(self._epoch_seed() % 2**63)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return self.dataset_len - self.start

    def __repr__(self) -> str:
        return (
            f"ResumableSampler({self.dataset_len}, seed={self.seed}, epoch={self.epoch}, "
            f"start={self.start}, shuffle={self.shuffle})"
        )

    def _epoch_seed(self) -> int:
        """A 64-bit seed that depends on ``(seed, epoch)`` only."""
        digest = hashlib.sha256(f"resumable-sampler:{self.seed}:{self.epoch}".encode()).digest()
        return int.from_bytes(digest[:8], "big")
