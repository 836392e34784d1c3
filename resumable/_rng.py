"""The global random number generators' states, as plain picklable data.

:func:`capture_rng` records the state of every global generator a training loop draws from —
Python's :mod:`random`, NumPy's global generator (``numpy.random.*``), torch's CPU generator
and each CUDA device's generator — and :func:`restore_rng` puts them back, so that the steps
after a resume draw the same numbers (dropout masks, shuffles, noise) as the uninterrupted
run would have.

A library is captured only if it is already imported (found in :data:`sys.modules`): capturing
never imports torch or NumPy. The states are plain Python data (tuples, ints, floats, bytes,
lists): they pickle, and unpickle without torch or NumPy installed.

Generators that are not global — a ``numpy.random.Generator`` from ``default_rng()``, a
``torch.Generator`` handed to a ``DataLoader``, a ``random.Random`` instance — are the
task's own objects: keep them (or their ``get_state()``) in the task's state.
"""

from __future__ import annotations

import importlib
import random
import sys
from typing import Any

__all__ = ["capture_rng", "restore_rng"]

#: The format of the dictionary :func:`capture_rng` returns.
_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """The states of the global random number generators of the libraries in use.

    Returns a dictionary with the key ``"random"`` (always) and ``"numpy"``, ``"torch"``,
    ``"torch.cuda"`` for the libraries already imported (CUDA only when available). Pass it
    to :func:`restore_rng` to continue every generator from this point.

    Returns:
        Plain picklable data; store it in the task's state next to what it protects.

    Example:
        >>> import random
        >>> from resumable.torch import capture_rng, restore_rng
        >>> states = capture_rng()
        >>> first = random.random()
        >>> restore_rng(states)
        >>> random.random() == first
        True

    """
    states: dict[str, Any] = {"version": _VERSION, "random": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = _numpy_state(numpy)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):  # a fully imported torch
        states["torch"] = bytes(torch.get_rng_state().tolist())  # no NumPy needed
        if torch.cuda.is_available():
            states["torch.cuda"] = [bytes(s.tolist()) for s in torch.cuda.get_rng_state_all()]
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Put the global random number generators back where :func:`capture_rng` found them.

    Each library recorded in ``states`` is restored; one that is not imported yet is imported
    first (it was in use when the states were captured). CUDA states are restored for the
    devices present (a machine with fewer GPUs restores the first ones). Libraries not in
    ``states`` are left alone.

    Args:
        states: a dictionary returned by :func:`capture_rng`, possibly after a pickle round
            trip or a resume in another process.

    Raises:
        ValueError: ``states`` was not made by :func:`capture_rng`.

    Example:
        >>> import random
        >>> from resumable.torch import capture_rng, restore_rng
        >>> random.seed(7)
        >>> states = capture_rng()
        >>> before = [random.random() for _ in range(3)]
        >>> restore_rng(states)
        >>> [random.random() for _ in range(3)] == before
        True

    """
    if not isinstance(states, dict) or states.get("version") != _VERSION:
        raise ValueError("restore_rng() takes the dictionary capture_rng() returned")
    random.setstate(states["random"])
    if "numpy" in states:
        numpy = importlib.import_module("numpy")
        numpy.random.set_state(_numpy_value(numpy, states["numpy"]))
    if "torch" in states:
        torch = importlib.import_module("torch")
        torch.set_rng_state(_byte_tensor(torch, states["torch"]))
        cuda = states.get("torch.cuda") or []
        if cuda and torch.cuda.is_available():
            for device, state in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(_byte_tensor(torch, state), device)


def _numpy_state(numpy: Any) -> Any:
    """NumPy's global state, its key array as bytes (MT19937, the default generator)."""
    state = numpy.random.get_state()
    if isinstance(state, tuple):  # ('MT19937', keys, pos, has_gauss, cached_gaussian)
        _, keys, pos, has_gauss, cached = state
        return ("MT19937", keys.astype("<u4").tobytes(), int(pos), int(has_gauss), float(cached))
    return state  # another bit generator: its dict (which may hold arrays) as it is


def _numpy_value(numpy: Any, state: Any) -> Any:
    """The argument ``numpy.random.set_state`` takes for a state from :func:`_numpy_state`."""
    if isinstance(state, tuple) and state and state[0] == "MT19937":
        name, keys, pos, has_gauss, cached = state
        return (name, numpy.frombuffer(keys, dtype="<u4").copy(), pos, has_gauss, cached)
    return state


def _byte_tensor(torch: Any, data: bytes) -> Any:
    """A ``torch.uint8`` tensor holding ``data``, the form torch's generator states take."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)
