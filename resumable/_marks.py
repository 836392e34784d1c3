"""Failure marks: a record, per failure, that a task failed from a snapshot (poison snapshots).

A task that fails from snapshot ``seq`` before saving a newer one leaves a mark
``<seq>.failed.<random>``; a load with ``poison_after=N`` skips a snapshot with N marks.
In a signed store a mark holds its HMAC (``_manifest.mark_signature``) and only signed marks
count: a mark anyone can plant must not roll a signed task back.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter

from ._backend import Backend, Entry
from ._manifest import mark_signature
from ._names import mark_name, parse

__all__ = ["FailureMarks"]

log = logging.getLogger("resumable")

#: A failure mark holds at most a signature (64 hex digits); a larger one is not ours.
_MARK_MAX = 64


class FailureMarks:
    """The failure marks of one checkpoint, signed for ``name`` when there is a key."""

    def __init__(self, backend: Backend, signing_key: bytes | None, name: str) -> None:
        self._backend = backend
        self._key = signing_key
        self._name = name

    def _signature(self, mark: str) -> bytes:
        return mark_signature(self._key, self._name, mark).encode()

    def add(self, seq: int) -> None:
        """Record that a task started from snapshot ``seq`` failed before saving a newer one."""
        name = mark_name(seq)
        self._backend.create_exclusive(name, self._signature(name))

    def count(self, entries: list[Entry]) -> Counter[int]:
        """How many failure marks each snapshot has among ``entries`` (signed ones if signed)."""
        marks: Counter[int] = Counter()
        for e in entries:
            kind = parse(e.name)
            if kind is not None and kind.kind == "mark" and self._counts(e):
                marks[kind.seq] += 1
        return marks

    def _counts(self, e: Entry) -> bool:
        if self._key is None:
            return True
        if e.size > _MARK_MAX:
            log.warning("ignoring failure mark %s: larger than any mark", e.name)
            return False
        try:
            found = self._backend.read(e.name)
        except FileNotFoundError:
            return False
        if not hmac.compare_digest(found, self._signature(e.name)):
            log.warning("ignoring unsigned or forged failure mark %s", e.name)
            return False
        return True

    def clear(self) -> None:
        """Forget every failure mark (signed or not): the task got past its snapshots."""
        for e in self._backend.entries():
            kind = parse(e.name)
            if kind is not None and kind.kind == "mark":
                self._backend.delete(e.name)
