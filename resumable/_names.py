"""The names of the objects in a task's folder: the one place that defines them.

::

    00000000000000000042.json                    manifest of snapshot 42: the commit marker
    00000000000000000042.1f0c9a7e3b2d4c5a.blob   its payload (absent when inlined)
    00000000000000000042.failed.5e1d0c2b9a8f7e6d a failure of the task from snapshot 42
    .<name>.<stamp>.<random>.tmp                 an object being written (local disk), named
                                                 with its maker (``_owner.stamp()``)
    ~pieces/<random>.pack                        pieces of folder snapshots (``_index``)

``~pieces`` cannot be a task's folder: a task key never holds ``~``.

Example:
    >>> manifest_name(42)
    '00000000000000000042.json'
    >>> parse(blob_name(42, "ab12cd34"))
    ObjectName(kind='blob', seq=42)
    >>> from resumable._owner import me
    >>> temp_maker(temp_name("00000000000000000042.json")) == me()
    True

Temp names written before they carried a stamp (``.<name>.<random>.tmp``) are still temp
names, with no known maker.

"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ._owner import Owner, parse_stamp, stamp

__all__ = [
    "PIECES",
    "ObjectName",
    "blob_name",
    "condemned_name",
    "condemned_pack",
    "is_pack",
    "is_temp",
    "manifest_name",
    "manifest_seqs",
    "mark_name",
    "pack_name",
    "parse",
    "seq_prefix",
    "temp_maker",
    "temp_name",
]

_MANIFEST = re.compile(r"^(\d{20})\.json$")
_BLOB = re.compile(r"^(\d{20})\.[0-9a-f]{8,64}\.blob$")
_MARK = re.compile(r"^(\d{20})\.failed\.[0-9a-f]{16}$")
_PACK = re.compile(r"^[0-9a-f]{32}\.pack$")
_TEMP_STAMPED = re.compile(r"^\..+\.([0-9a-f]{12}-\d+-\d+)\.[0-9a-f]{8}\.tmp$")

#: The folder beside a task's snapshots that holds the packs of its folder snapshots.
PIECES = "~pieces"

ObjectKind = Literal["manifest", "blob", "mark"]


@dataclass(frozen=True, slots=True)
class ObjectName:
    """What one object of a task's folder is, and which snapshot it belongs to."""

    kind: ObjectKind
    seq: int


def seq_prefix(seq: int) -> str:
    """The prefix every object of snapshot ``seq`` starts with (``"...0042."``)."""
    return f"{seq:020d}."


def manifest_name(seq: int) -> str:
    """The manifest's object name for ``seq``."""
    return f"{seq:020d}.json"


def blob_name(seq: int, token: str) -> str:
    """A payload's object name: its snapshot and the writer's random token."""
    return f"{seq:020d}.{token}.blob"


def mark_name(seq: int) -> str:
    """A new failure mark's name for snapshot ``seq`` (unique: two may be made at once)."""
    return f"{seq:020d}.failed.{secrets.token_hex(8)}"


def pack_name() -> str:
    """A new pack's object name (in :data:`PIECES`): random, never written twice."""
    return f"{secrets.token_hex(16)}.pack"


def is_pack(name: str) -> bool:
    """Whether ``name`` is a pack's object name.

    Example:
        >>> is_pack(pack_name()), is_pack("../x.pack")
        (True, False)

    """
    return _PACK.match(name) is not None


_CONDEMNED = re.compile(r"^([0-9a-f]{32}\.pack)\.([0-9a-f]{16})\.condemned$")


def condemned_name(pack: str, writer: str) -> str:
    """The marker (in :data:`PIECES`) saying that ``writer``'s retention condemned ``pack``.

    Example:
        >>> condemned_pack(condemned_name("0" * 32 + ".pack", "1" * 16))[1] == "1" * 16
        True

    """
    return f"{pack}.{writer}.condemned"


def condemned_pack(name: str) -> tuple[str, str] | None:
    """The pack and writer a condemnation marker names; None when ``name`` is not one."""
    found = _CONDEMNED.match(name)
    return None if found is None else (found.group(1), found.group(2))


@functools.lru_cache(maxsize=4)
def _stamp_of(pid: int) -> str:
    # Keyed by pid: a forked child is another maker. Cached because a stamp reads /proc,
    # and every save names two temp files.
    del pid
    return stamp()


def temp_name(name: str) -> str:
    """A unique temp name for writing ``name``; hidden, never one of the names above.

    It carries the calling process's stamp, so that a temp file left by a killed save can be
    told apart from one a live save is still writing (see :func:`temp_maker`).
    """
    return f".{name}.{_stamp_of(os.getpid())}.{secrets.token_hex(4)}.tmp"


def temp_maker(name: str) -> Owner | None:
    """The process that made temp name ``name``; None for an unstamped (older) or other name."""
    found = _TEMP_STAMPED.match(name)
    return None if found is None else parse_stamp(found.group(1))


def is_temp(name: str) -> bool:
    """Whether ``name`` is a temp name: a save in progress, or killed mid-way."""
    return name.startswith(".") and name.endswith(".tmp") and len(name) > len("..tmp")


def parse(name: str) -> ObjectName | None:
    """The kind and snapshot of a manifest, payload or mark name; None for anything else."""
    for kind, pattern in (("manifest", _MANIFEST), ("blob", _BLOB), ("mark", _MARK)):
        if match := pattern.match(name):
            return ObjectName(kind, int(match.group(1)))  # type: ignore[arg-type]
    return None


def manifest_seqs(names: Iterable[str]) -> list[int]:
    """Sequence numbers of the manifests among ``names``, newest first."""
    return sorted((int(m.group(1)) for n in names if (m := _MANIFEST.match(n))), reverse=True)
