"""Fast paths of the codecs' memory handling, each held to a slow, obviously correct twin.

- ``frozen_copy`` (a large buffer copied into new memory by ``ctypes.memmove`` in pieces,
  without the GIL) against ``bytes(data)``, on random contents, sizes around the piece and
  threshold boundaries, writable, read-only and strided views; and the copy must not change
  when the source does afterwards.
- ``anonymous_memory`` / ``new_buffer`` (pages faulted in ahead, without the GIL) against a
  ``bytearray`` of the same size: zeroed, writable, the same length; and a state read through
  them against ``pickle``.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable._statecodec import new_buffer, read_state, write_state
from resumable._stream import (
    _OFF_GIL_MIN,
    _PIECE,
    anonymous_memory,
    frozen_copy,
    frozen_copy_slow,
)

#: Sizes at and around the boundaries the fast paths switch at.
EDGES = [0, 1, _OFF_GIL_MIN - 1, _OFF_GIL_MIN, _OFF_GIL_MIN + 1, _PIECE - 1, _PIECE, _PIECE + 1]
sizes = st.one_of(st.sampled_from(EDGES), st.integers(0, 3 * _PIECE + 17))


def pattern(size: int, seed: int) -> bytearray:
    """``size`` bytes that differ from piece to piece (a misplaced piece shows)."""
    block = bytes((seed + i * 7) % 251 for i in range(4093))  # a prime length: no alignment
    return bytearray((block * (size // len(block) + 1))[:size])


@settings(max_examples=40, deadline=None)
@given(
    size=sizes, seed=st.integers(0, 250), kind=st.sampled_from(["bytearray", "readonly", "bytes"])
)
def test_frozen_copy_matches_bytes(size: int, seed: int, kind: str) -> None:
    """The fast copy holds exactly the bytes of ``bytes(data)``, and later changes miss it."""
    source = pattern(size, seed)
    data: Any = {
        "bytearray": source,
        "readonly": memoryview(source).toreadonly(),
        "bytes": bytes(source),
    }[kind]
    fast, slow = frozen_copy(data), frozen_copy_slow(data)
    assert bytes(fast) == slow
    assert memoryview(fast).readonly
    if size and kind != "bytes":
        source[0] ^= 0xFF
        source[-1] ^= 0xFF
        assert bytes(fast) == slow  # a copy, not a view of the source


def test_frozen_copy_of_a_strided_view_matches_bytes() -> None:
    """A non-contiguous view (every other byte) is copied as ``bytes()`` copies it."""
    source = pattern(3 * _OFF_GIL_MIN, 3)
    view = memoryview(source)[::2]
    assert bytes(frozen_copy(view)) == frozen_copy_slow(view)


def test_frozen_copy_keeps_a_typed_view_s_bytes() -> None:
    """A view with a wider item size (float64) is copied byte for byte."""
    array = pytest.importorskip("array")
    values = array.array("d", range(_OFF_GIL_MIN // 8 + 3))
    view = memoryview(values)
    assert bytes(frozen_copy(view)) == frozen_copy_slow(view)


@settings(max_examples=20, deadline=None)
@given(
    size=st.one_of(
        st.sampled_from([1, 2, _PIECE - 1, _PIECE, _PIECE + 1]), st.integers(1, 2 * _PIECE + 5)
    )
)
def test_anonymous_memory_is_a_zeroed_writable_buffer(size: int) -> None:
    """New memory is ``bytearray(size)``: zeros, the same length, writable at both ends."""
    memory, twin = anonymous_memory(size), bytearray(size)
    assert len(memory) == len(twin)
    assert memory[:] == twin
    for buffer in (memory, twin):
        buffer[size - 1] = 2
        buffer[0] = 1
    assert memory[:] == twin


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3 << 20), min_size=1, max_size=4),
    cut=st.integers(1, 5 << 20),
)
def test_states_read_into_new_buffers_match_pickle(sizes: list[int], cut: int) -> None:
    """Buffers of every size read through ``new_buffer``, chunks cut anywhere, equal pickle's."""
    state = {f"b{i}": pickle.PickleBuffer(pattern(n, i)) for i, n in enumerate(sizes)}
    plain = {k: bytes(v.raw()) for k, v in state.items()}
    out: list[bytes] = []
    write_state({k: bytearray(v) for k, v in plain.items()}, lambda c: out.append(bytes(c)))
    payload = b"".join(out)
    chunks = [payload[i : i + cut] for i in range(0, len(payload), cut)]
    got, _ = read_state(chunks, len(payload))
    assert {k: bytes(v) for k, v in got.items()} == plain
    assert all(len(new_buffer(n)) == n for n in sizes)
