"""Faults around a state payload: storage errors while it streams out, bit rot in its records."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tenacity

from resumable import Checkpoint, RetryPolicy, StateError, Storage, StorageError, resumable
from resumable._statecodec import _HEAD, MAGIC, write_state
from resumable.testing import FaultyFileSystem

np = pytest.importorskip("numpy")

# A 32 MB state streams out in about a dozen faultable calls (open, 4 MiB writes, close), so
# at a fifth failing a whole try succeeds about 7 % of the time: 300 tries leave ~1e-9.
PATIENT = RetryPolicy(attempts=300, wait=tenacity.wait_none(), timeout=60.0)


def faulty(seed: int, **options: Any) -> dict[str, Any]:
    """Options of a ``faulty://`` store (:class:`FaultyFileSystem`) over memory."""
    assert FaultyFileSystem.protocol == "faulty"  # imported: the protocol is registered
    return {"target_protocol": "memory", "seed": seed, **options}


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
@pytest.mark.parametrize("seed", [1, 2])
def test_storage_faults_while_a_large_array_state_streams_are_retried(
    seed: int, background: bool
) -> None:
    """A 32 MB NumPy state saved through a store failing 20 % of calls is retried and lands."""
    store = f"faulty:///state-{uuid.uuid4().hex}"
    weights = np.random.default_rng(seed).random(4 << 20)  # 32 MiB of float64

    @resumable(
        state=None,
        store=store,
        key="big",
        background=background,
        on_success="keep",
        storage=Storage(storage_options=faulty(seed, fail_rate=0.2), retry=PATIENT),
    )
    def task(state: Any = None) -> Iterator[Any]:
        yield {"w": weights, "step": 1}

    task()
    seen: list[Any] = []

    @resumable(state=None, store=store, key="big", storage=Storage(storage_options=faulty(seed)))
    def resume(state: Any = None) -> None:
        seen.append(state)

    resume()
    assert seen[0]["step"] == 1
    assert np.array_equal(seen[0]["w"], weights)


def test_a_write_error_while_streaming_state_is_not_a_state_error() -> None:
    """An exception raised by ``write`` while buffers stream out propagates unchanged."""
    fault = ConnectionResetError("the server went away")
    for fail_at in (0, 1, 2, 3, 5):
        calls = [0]

        def write(chunk: Any, fail_at: int = fail_at, calls: list[int] = calls) -> None:
            calls[0] += 1
            if calls[0] > fail_at:
                raise fault

        with pytest.raises(ConnectionResetError) as raised:
            write_state({"a": np.arange(1 << 20), "b": b"x" * 100}, write)
        assert raised.value is fault


def test_a_storage_error_out_of_write_stays_a_storage_error() -> None:
    """A StorageError (tries spent) raised by ``write`` mid-pickle is not turned into StateError."""

    def write(chunk: Any) -> None:
        if len(chunk) > 1000:
            raise StorageError("writing: out of volumes")

    with pytest.raises(StorageError, match="out of volumes"):
        write_state([np.zeros(10_000)], write)


def test_store_that_fails_every_call_raises_storage_error_for_array_state() -> None:
    """Tries spent while an array streams: the task raises StorageError, not StateError."""
    store = f"faulty:///down-{uuid.uuid4().hex}"
    few = RetryPolicy(attempts=3, wait=tenacity.wait_none(), timeout=10.0)

    @resumable(
        state=None,
        store=store,
        key="down",
        attempts=1,
        storage=Storage(storage_options=faulty(0, fail_rate=1.0), retry=few),
    )
    def task(state: Any = None) -> Iterator[Any]:
        yield np.zeros(1 << 20)

    with pytest.raises(StorageError) as raised:
        task()
    assert not isinstance(raised.value, StateError)


# -- bit rot in a record's length -------------------------------------------------------------


def first_buffer_length_at(data: bytes) -> int:
    """Offset of the length field of the payload's first B record."""
    at = len(MAGIC)
    while True:
        tag, n = _HEAD.unpack_from(data, at)
        if tag == b"B":
            return at + 1
        at += _HEAD.size + n


@pytest.mark.parametrize(
    "options",
    [{}, {"poison_after": 1, "attempts": 3}],
    ids=["plain", "poison_after"],
)
def test_bit_rot_in_a_buffer_length_falls_back_to_the_older_snapshot(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """A newest payload whose first buffer length grew by 10,000,000 loads the previous one."""

    @resumable(state=None, store=tmp_path, key="t", on_success="keep", storage=Storage(keep=3))
    def task(state: Any = None) -> Iterator[Any]:
        yield {"a": np.full(300_000 // 8, 1.0), "step": 1}
        yield {"a": np.full(300_000 // 8, 2.0), "step": 2}

    task()
    newest = sorted(tmp_path.rglob("*.blob"))[-1]
    data = bytearray(newest.read_bytes())
    at = first_buffer_length_at(bytes(data))
    (n,) = struct.unpack_from("<Q", data, at)
    struct.pack_into("<Q", data, at, n + 10_000_000)  # the digest is left as it was
    newest.write_bytes(bytes(data))
    seen: list[Any] = []

    @resumable(state=None, store=tmp_path, key="t", on_success="keep", **options)
    def resume(state: Any = None) -> None:
        seen.append(state)

    resume()
    assert seen[0]["step"] == 1
    assert (seen[0]["a"] == 1.0).all()


@pytest.mark.parametrize("claim", [10_000_000, 3 << 30])
def test_checkpoint_read_with_read_state_falls_back_on_a_bad_length(
    tmp_path: Path, claim: int
) -> None:
    """read_state handed to read_newest_with lets a digest mismatch fall back, any length."""
    from resumable._statecodec import read_state

    with Checkpoint(tmp_path, storage=Storage(keep=3)) as cp:
        for step in (1, 2):
            out: list[Any] = []
            write_state({"a": np.full(40_000, float(step)), "step": step}, out.append)
            cp.save_sync(b"".join(bytes(c) for c in out))
    newest = sorted(tmp_path.rglob("*.blob"))[-1]
    data = bytearray(newest.read_bytes())
    at = first_buffer_length_at(bytes(data))
    (n,) = struct.unpack_from("<Q", data, at)
    struct.pack_into("<Q", data, at, n + claim)
    newest.write_bytes(bytes(data))
    with Checkpoint(tmp_path) as cp:
        found = cp.read_newest_with(read_state)
    assert found is not None
    assert found[1][0]["step"] == 1
