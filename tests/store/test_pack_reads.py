"""Reading pieces back from a pack, held to slicing the pack's bytes, over streams that read short.

A download-ahead stream or a socket may return fewer bytes than asked at any read: ``fetch``
must read on, and skip gaps by reading, and give exactly what slicing the pack gives.
"""

from __future__ import annotations

import io
import random
import zlib
from typing import BinaryIO

from hypothesis import given, settings
from hypothesis import strategies as st

from resumable._index import Piece
from resumable._pieces import fetch
from resumable._tree import _hash, decode

PACK = "0123456789abcdef0123456789abcdef.pack"


class ShortReads(io.RawIOBase):
    """A stream over ``data`` whose reads return between 1 byte and what was asked."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = data
        self._at = 0
        self._random = random.Random(seed)

    def readable(self) -> bool:
        """Always true."""
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, often fewer."""
        if size < 0:
            size = len(self._data) - self._at
        size = min(size, self._random.randint(1, max(size, 1)))
        out = self._data[self._at : self._at + size]
        self._at += len(out)
        return out


class OnePack:
    """The one call of a backend ``fetch`` makes: open the pack."""

    url = "memory://short-reads"

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = data
        self._seed = seed

    def open_read(self, name: str) -> BinaryIO:
        """The pack, read short."""
        assert name == PACK
        return ShortReads(self._data, self._seed)  # type: ignore[return-value]


def _piece(data: bytes, offset: int, deflate: bool) -> tuple[Piece, bytes]:
    stored = zlib.compress(data, 1)[2:-4] if deflate else data
    codec = "deflate" if deflate else "raw"
    return Piece(_hash(data), len(data), PACK, offset, len(stored), codec), stored


@settings(max_examples=200, deadline=None)
@given(
    contents=st.lists(
        st.tuples(st.binary(min_size=1, max_size=3000), st.booleans(), st.integers(0, 50)),
        min_size=1,
        max_size=8,
    ),
    wanted=st.sets(st.integers(0, 7)),
    seed=st.integers(0, 2**32),
)
def test_fetch_over_short_reads_gives_what_slicing_the_pack_gives(
    contents: list[tuple[bytes, bool, int]], wanted: set[int], seed: int
) -> None:
    """Random pieces, random gaps between them, random short reads: each piece exact."""
    pack = bytearray()
    pieces: list[Piece] = []
    for data, deflate, gap in contents:
        pack += bytes(gap)  # bytes of pieces no snapshot asked for
        piece, stored = _piece(data, len(pack), deflate)
        pack += stored
        pieces.append(piece)
    chosen = [p for i, p in enumerate(pieces) if i in wanted] or pieces[:1]
    got = list(fetch(OnePack(bytes(pack), seed), PACK, chosen))  # type: ignore[arg-type]
    slow = [decode(p, bytes(pack[p.offset : p.offset + p.stored])) for p in chosen]
    assert [p for p, _ in got] == chosen
    assert [data for _, data in got] == slow
