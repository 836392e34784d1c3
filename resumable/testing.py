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

"""

from __future__ import annotations

from typing import Any

from ._backend import ForwardingBackend
from ._checkpoint import Checkpoint
from ._faults import FaultyFileSystem, InjectedFault

__all__ = ["FaultyFileSystem", "InjectedFault", "backend", "filesystem", "store"]


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
