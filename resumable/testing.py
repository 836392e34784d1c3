"""Test helpers for code that uses resumable: a filesystem that fails on purpose, and a look inside.

Importing this module registers the fsspec protocol ``faulty``: a wrapper around another
filesystem that fails a chosen fraction of calls, truncates writes, or hangs.

Example:
    >>> from resumable import Checkpoint, Storage
    >>> from resumable.testing import FaultyFileSystem
    >>> faulty = {"target_protocol": "memory", "fail_rate": 0.1, "seed": 7}
    >>> cp = Checkpoint("faulty:///doc-faults", storage=Storage(storage_options=faulty))
    >>> for step in range(20):
    ...     cp.save_sync(str(step).encode())
    >>> (cp.load_sync() / "payload").read_bytes()
    b'19'
    >>> sum(filesystem(cp).faults.values()) > 0  # the faults it met and retried
    True

:func:`store`, :func:`backend` and :func:`filesystem` reach into a ``Checkpoint`` for tests
that plant, break or count what is stored: the one sanctioned way in. What they return is
internal (its methods may change between releases), so they are typed ``Any``.
:func:`read_state` decodes a state payload a test finds in a store, and :func:`run_command`
runs the ``resumable`` command in the test's own process.

"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._backend import ForwardingBackend
from ._checkpoint import Checkpoint
from ._cli import main
from ._faults import FaultyFileSystem, InjectedFault
from ._statecodec import read_state as _read_state

__all__ = [
    "FaultyFileSystem",
    "InjectedFault",
    "backend",
    "filesystem",
    "read_state",
    "run_command",
    "store",
]


def store(cp: Checkpoint) -> Any:
    """The snapshot store under ``cp`` (``commit``, ``settle``, ``manifest``, ``payload``...)."""
    return vars(cp)["_store"]


def backend(cp: Checkpoint) -> Any:
    """The backend the store of ``cp`` writes through (retrying and pipelining, if any)."""
    return store(cp).backend


def filesystem(cp: Checkpoint) -> Any:
    """The fsspec filesystem under ``cp``, below every wrapper (``faulty://``'s counters)."""
    found = backend(cp)
    while isinstance(found, ForwardingBackend):
        found = found.backend
    return found.fs


def read_state(payload: bytes | os.PathLike[str]) -> Any:
    """The state a ``"state"`` snapshot holds: its payload (bytes, or the loaded file) decoded.

    What a task would be given back, read from a snapshot a test saved, planted or loaded.
    Unpickling runs code: read only payloads the test made.

    Example:
        >>> from resumable import Checkpoint, resumable
        >>> from resumable.testing import read_state
        >>> @resumable(state=None, store="memory://doc-read-state", key="t", on_success="keep")
        ... def task(state=None):
        ...     yield {"step": 3}
        >>> task()
        >>> with Checkpoint("memory://doc-read-state/t") as cp:
        ...     read_state(cp.load_sync() / "payload")
        {'step': 3}

    """
    data = payload if isinstance(payload, bytes) else Path(payload).read_bytes()
    return _read_state([data], len(data))[0]


def run_command(argv: Sequence[str]) -> int:
    """Run the ``resumable`` command with ``argv`` in this process; its exit status.

    The same as the console script (output on ``sys.stdout`` and ``sys.stderr``), without a
    new interpreter: fast, and what it does is visible to the test (patches, captured output).

    Example:
        >>> from resumable.testing import run_command
        >>> run_command(["verify", "memory://doc-run-command-none"])
        2

    """
    return main(list(argv))
