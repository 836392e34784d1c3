"""The names of the objects in a task's folder: the one place that defines them.

::

    00000000000000000042.json                    manifest of snapshot 42: the commit marker
    00000000000000000042.1f0c9a7e3b2d4c5a.blob   its payload (absent when inlined)
    00000000000000000042.failed.5e1d0c2b9a8f7e6d a failure of the task from snapshot 42
    .<name>.<random>.tmp                         an object being written (local disk)

Example:
    >>> manifest_name(42)
    '00000000000000000042.json'
    >>> parse(blob_name(42, "ab12cd34"))
    ObjectName(kind='blob', seq=42)

"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ObjectName",
    "blob_name",
    "is_temp",
    "manifest_name",
    "manifest_seqs",
    "mark_name",
    "parse",
    "seq_prefix",
    "temp_name",
]

_MANIFEST = re.compile(r"^(\d{20})\.json$")
_BLOB = re.compile(r"^(\d{20})\.[0-9a-f]{8,64}\.blob$")
_MARK = re.compile(r"^(\d{20})\.failed\.[0-9a-f]{16}$")

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


def temp_name(name: str) -> str:
    """A unique temp name for writing ``name``; hidden, and never one of the names above."""
    return f".{name}.{secrets.token_hex(4)}.tmp"


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
