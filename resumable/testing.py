"""Test helpers for code that uses resumable: a filesystem that fails on purpose.

Importing this module registers the fsspec protocol ``faulty``: a wrapper around another
filesystem that fails a chosen fraction of calls, truncates writes, or hangs.

Example:
    >>> from resumable import Checkpoint
    >>> from resumable.testing import FaultyFileSystem
    >>> cp = Checkpoint(
    ...     "faulty:///doc-faults",
    ...     storage_options={"target_protocol": "memory", "fail_rate": 0.1, "seed": 7},
    ... )
    >>> for step in range(20):
    ...     cp.save_sync(str(step).encode())
    >>> (cp.load_sync() / "payload").read_bytes()
    b'19'

"""

from __future__ import annotations

from ._faults import FaultyFileSystem, InjectedFault

__all__ = ["FaultyFileSystem", "InjectedFault"]
