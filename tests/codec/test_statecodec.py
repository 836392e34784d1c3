"""The streamed state codec: out-of-band arrays and tensors, fallback, verify-first when signed."""

from __future__ import annotations

import pickle
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable import Checkpoint, CorruptCheckpointError, StateError, Storage, resumable
from resumable._statecodec import (
    _HEAD,
    MAGIC,
    BufferPool,
    capture_state,
    read_state,
    write_state,
)

np = pytest.importorskip("numpy")
hnp = pytest.importorskip("hypothesis.extra.numpy")


def encode(obj: object, extras: dict[str, Any] | None = None) -> bytes:
    """The streamed payload of ``obj``, joined."""
    out: list[Any] = []
    write_state(obj, out.append, extras=extras)
    return b"".join(bytes(c) for c in out)


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` cut into chunks of ``size`` bytes, as a store streams it."""
    return (data[i : i + size] for i in range(0, len(data), size))


def same(a: Any, b: Any) -> bool:
    """Deep equality that compares arrays by dtype, shape and bytes."""
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


arrays = hnp.arrays(
    dtype=st.one_of(hnp.integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes()),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
)
# Contiguous arrays go out of band; strided views and Fortran order take other paths.
array_views = st.one_of(
    arrays,
    arrays.map(lambda a: a[::2] if a.ndim else a),
    arrays.map(np.asfortranarray),
)
states = st.recursive(
    st.one_of(array_views, st.integers(), st.text(max_size=5), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(state=states, chunk=st.integers(min_value=1, max_value=5000))
def test_numpy_state_round_trips(state: Any, chunk: int) -> None:
    """Any nesting of NumPy arrays survives a write and a read in chunks of any size.

    Exactly as a plain pickle round trip does (which, NumPy's choice, makes strided views of
    byte-swapped arrays native-endian).
    """
    got, extras = read_state(pieces(encode(state), chunk))
    assert same(cloudpickle.loads(cloudpickle.dumps(state)), got)
    assert extras == {}


@settings(max_examples=40, deadline=None)
@given(state=states, rng=st.binary(max_size=64))
def test_capture_equals_stream_and_keeps_extras(state: Any, rng: bytes) -> None:
    """A captured payload (copied buffers) is byte for byte the streamed one, extras included."""
    captured = b"".join(bytes(c) for c in capture_state(state, extras={"rng": rng})())
    assert captured == encode(state, {"rng": rng})
    got, extras = read_state([captured])
    assert same(cloudpickle.loads(cloudpickle.dumps(state)), got)
    assert extras == {"rng": rng}


def test_arrays_go_out_of_band_and_come_back_writable() -> None:
    """An array's bytes are a buffer record, not pickled in band; the result is writable."""
    a = np.arange(1 << 16, dtype=np.float32)
    data = encode({"a": a})
    assert data.startswith(MAGIC)
    assert len(data) < a.nbytes + 1024
    got, _ = read_state(pieces(data, 1 << 12))
    assert np.array_equal(got["a"], a)
    got["a"][0] = 7.0  # owns writable memory


def test_capture_is_immune_to_later_mutation() -> None:
    """A captured state holds copies: changing the array afterwards does not reach it."""
    a = np.zeros(1000)
    captured = capture_state(a)
    a[:] = 1.0
    got, _ = read_state(captured())
    assert not got.any()


@pytest.mark.parametrize(
    "size", [1, (1 << 20) - 1, 1 << 20, (8 << 20) + 3, (20 << 20) + 1], ids=lambda n: f"{n}B"
)
def test_capture_copies_every_size_whole_and_is_immune_to_mutation(size: int) -> None:
    """Buffers below, at and across the parallel copy's piece sizes are copied whole, at once."""
    rng = np.random.default_rng(size)
    state = {
        "big": rng.integers(0, 256, size, dtype=np.uint8),
        "readonly": np.frombuffer(bytes(rng.integers(0, 256, size, dtype=np.uint8)), np.uint8),
        "strided": rng.integers(0, 256, 2 * size, dtype=np.uint8)[::2],
        "floats": rng.random(max(size // 8, 1)),
    }
    expected = {k: v.copy() for k, v in state.items()}
    captured = capture_state(state)
    state["big"][:] = 0
    state["floats"][:] = -1.0
    got, _ = read_state(captured())
    for name, value in expected.items():
        assert np.array_equal(got[name], value), name


def test_pool_reuses_buffers_of_a_written_capture() -> None:
    """A capture closed after writing gives its buffers to the next capture of the same shapes."""
    pool = BufferPool()
    first = capture_state({"a": np.zeros(1000)}, pool=pool)
    before = [id(c) for c in first() if isinstance(c, bytearray) and len(c) == 8000]
    first.close()
    assert first() == []
    second = capture_state({"a": np.ones(1000)}, pool=pool)
    reused = [id(c) for c in second() if isinstance(c, bytearray) and len(c) == 8000]
    assert reused == before
    got, _ = read_state(second())
    assert got["a"].sum() == 1000


def test_old_plain_pickles_still_load() -> None:
    """A payload written before this format (one cloudpickle) loads."""
    assert read_state([cloudpickle.dumps({"old": [1, 2]})]) == ({"old": [1, 2]}, {})


@pytest.mark.parametrize("cut", [3, len(MAGIC) + 4, -12, -1])
def test_truncated_payload_is_a_state_error(cut: int) -> None:
    """A payload cut short anywhere raises StateError, never returns half a state."""
    data = encode({"a": np.arange(100)})
    with pytest.raises(StateError):
        read_state([data[:cut]])


def test_trailing_bytes_are_refused() -> None:
    """Bytes after the end record are refused."""
    with pytest.raises(StateError, match="after its end"):
        read_state([encode([1, 2]) + b"x"])


def test_unpicklable_state_is_a_state_error() -> None:
    """An unpicklable value raises StateError naming its type."""
    import threading

    with pytest.raises(StateError, match="cannot pickle"):
        encode({"lock": threading.Lock()})


# -- through the store ------------------------------------------------------------------------


def big_state(value: float) -> dict[str, Any]:
    """A state large enough to live in its own payload object, not in the manifest."""
    return {"w": np.full(100_000, value), "step": int(value)}


def blobs(store: Path) -> list[Path]:
    """The payload objects under ``store``, oldest first."""
    return sorted(store.rglob("*.blob"))


@pytest.mark.parametrize("where", ["buffer", "pickle"])
def test_corrupt_newest_snapshot_falls_back(tmp_path: Path, where: str) -> None:
    """A flipped byte in the newest payload (in an array or the pickle) loads the previous."""

    @resumable(state=None, store=tmp_path, key="t", on_success="keep", storage=Storage(keep=3))
    def task(state: Any) -> Iterator[Any]:
        yield big_state(1.0)
        yield big_state(2.0)

    task()
    newest = blobs(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    at = len(data) // 2 if where == "buffer" else len(MAGIC) + 12
    data[at] ^= 0xFF
    newest.write_bytes(bytes(data))
    seen: list[Any] = []

    @resumable(state=None, store=tmp_path, key="t", on_success="keep")
    def resume(state: Any) -> None:
        seen.append(state)

    resume()
    assert seen[0]["step"] == 1
    assert np.array_equal(seen[0]["w"], big_state(1.0)["w"])


@pytest.mark.parametrize("signed", [False, True])
def test_signed_store_verifies_before_decoding(tmp_path: Path, signed: bool) -> None:
    """With a signing key a corrupt payload never reaches the decoder; without one, it may."""
    key = b"secret" if signed else None
    with Checkpoint(tmp_path, storage=Storage(signing_key=key, keep=3)) as cp:
        for value in (1.0, 2.0):
            out: list[Any] = []
            write_state(big_state(value), out.append)
            cp.save_sync(b"".join(bytes(c) for c in out))
    newest = blobs(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    decoded: list[int] = []  # one entry per payload handed to the decoder

    def decode(chunks: Iterator[Any]) -> Any:
        decoded.append(0)
        state, _ = read_state(chunks)
        return state

    with Checkpoint(tmp_path, storage=Storage(signing_key=key)) as cp:
        found = cp.read_newest_with(decode)
    assert found is not None
    assert found[1]["step"] == 1
    # Unsigned: the corrupt one was decoded as it streamed, then refused at its digest.
    assert len(decoded) == (1 if signed else 2)


def test_background_capture_copies_arrays(tmp_path: Path) -> None:
    """background=True: mutating the array right after the yield does not reach the snapshot."""

    @resumable(state=None, store=tmp_path, key="bg", background=True, on_success="keep")
    def task(state: Any) -> Iterator[Any]:
        a = np.zeros(200_000)
        yield {"a": a}
        a[:] = 5.0  # while the snapshot may still be written

    task()
    seen: list[Any] = []

    @resumable(state=None, store=tmp_path, key="bg")
    def resume(state: Any) -> None:
        seen.append(state)

    resume()
    assert not seen[0]["a"].any()


# -- torch ----------------------------------------------------------------------------------


def test_torch_tensors_round_trip_sharing_storage() -> None:
    """Tensors, parameters and views come back equal, with shared storages shared again."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 8)).sum().backward()
    opt.step()
    base = torch.randn(6, 5)
    state = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "param": torch.nn.Parameter(torch.ones(3)),
        "base": base,
        "view": base[2:, 1:],
        "half": torch.randn(4, dtype=torch.bfloat16),
        "empty": torch.empty(0, 3),
        "int": torch.arange(10),
    }
    got, _ = read_state(pieces(encode(state), 777))
    for name, t in model.state_dict().items():
        assert torch.equal(got["model"][name], t)
    assert torch.equal(got["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert type(got["param"]) is torch.nn.Parameter
    assert got["param"].requires_grad
    assert torch.equal(got["view"], base[2:, 1:])
    assert got["view"].untyped_storage().data_ptr() == got["base"].untyped_storage().data_ptr()
    assert got["half"].dtype == torch.bfloat16
    assert torch.equal(got["half"], state["half"])
    assert got["empty"].shape == (0, 3)
    assert torch.equal(got["int"], state["int"])


def test_torch_pickled_payload_needs_no_torch_for_numpy_only_state() -> None:
    """A NumPy-only payload loads in a process that never imports torch."""
    import subprocess

    data = encode({"a": np.arange(5)})
    code = (
        "import sys; from resumable._statecodec import read_state\n"
        "state, _ = read_state([sys.stdin.buffer.read()])\n"
        "assert list(state['a']) == [0, 1, 2, 3, 4]\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], input=data, check=True)


def test_an_interrupted_capture_waits_for_its_running_copies() -> None:
    """An interruption while copies run is raised only once none still writes into a buffer."""
    from concurrent.futures import Future

    from resumable._capture import Copies

    interrupted: Future[None] = Future()
    interrupted.set_exception(KeyboardInterrupt())
    running: Future[None] = Future()
    assert running.set_running_or_notify_cancel()
    waiting: Future[None] = Future()  # not started: cancelled, never runs
    copies = Copies()
    copies._pending = [interrupted, running, waiting]
    raised: list[BaseException] = []
    ended = threading.Event()

    def wait() -> None:
        try:
            copies.wait()
        except BaseException as exc:
            raised.append(exc)
        ended.set()

    thread = threading.Thread(target=wait)
    thread.start()
    assert not ended.wait(0.2)  # blocked on the running copy
    assert waiting.cancelled()
    running.set_result(None)
    thread.join(30)
    assert ended.is_set()
    assert isinstance(raised[0], KeyboardInterrupt)


# -- reads that span chunks, records and lengths a payload cannot hold (issue 17) -----------


def records(data: bytes) -> list[tuple[bytes, int, int]]:
    """The records of a payload: (tag, offset of the length field, length)."""
    found, at = [], len(MAGIC)
    while at < len(data):
        tag, n = _HEAD.unpack_from(data, at)
        found.append((tag, at + 1, n))
        at += _HEAD.size + n
    return found


@pytest.mark.parametrize("chunk", [1 << 16, 1 << 20, 999_983])
@pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 1, 3 << 20])
def test_large_bytes_load_across_chunk_boundaries(size: int, chunk: int) -> None:
    """A bytes/bytearray of 1 MiB or more loads from a payload streamed in chunks (one readinto)."""
    state = {"b": bytes(range(256)) * (size // 256), "ba": bytearray(size), "n": 3}
    got, _ = read_state(pieces(encode(state), chunk))
    assert got == state
    assert type(got["ba"]) is bytearray


@pytest.mark.parametrize("count", [12, 20])
def test_many_large_values_load(count: int) -> None:
    """A dict of 300 KB bytes values (20 of them span two P records) loads in 1 MiB chunks."""
    state = {i: bytes([i]) * 300_000 for i in range(count)}
    data = encode(state)
    assert sum(tag == b"P" for tag, _, _ in records(data)) == (1 if count == 12 else 2)
    got, _ = read_state(pieces(data, 1 << 20))
    assert got == state


def test_arrays_beside_large_bytes_load() -> None:
    """NumPy arrays beside a 2 MB bytes value load from 1 MiB chunks."""
    state = {"a": np.arange(300_000), "raw": b"x" * 2_000_000, "b": np.ones((50, 50), order="F")}
    got, _ = read_state(pieces(encode(state), 1 << 20))
    assert same(state, got)


def test_megabyte_bytes_state_resumes(tmp_path: Path) -> None:
    """A task whose state is 1 MiB of bytes resumes from its snapshot (it could never load)."""
    seen: list[int] = []

    @resumable(state=b"", store=tmp_path, key="m", on_success="keep")
    def f(state: bytes = b"") -> Iterator[bytes]:
        seen.append(len(state))
        yield b"\0" * (1 << 20)

    f()
    f()
    assert seen == [0, 1 << 20]


def test_errors_of_the_chunk_source_pass_through_unwrapped() -> None:
    """An error raised by the chunk iterator (a storage or digest failure) is not a StateError."""
    data = encode({"a": np.arange(100_000), "b": b"y" * 300_000})

    def failing(exc: BaseException, after: int) -> Iterator[bytes]:
        yield from pieces(data[:after], 4096)
        raise exc

    for after in (len(MAGIC), 600, 400_000, len(data) - 3):
        with pytest.raises(CorruptCheckpointError, match="digest"):
            read_state(failing(CorruptCheckpointError("digest"), after))
        with pytest.raises(ConnectionResetError):
            read_state(failing(ConnectionResetError("reset"), after))


@pytest.mark.parametrize("tag", [b"B", b"P"])
def test_a_record_longer_than_what_is_left_is_refused(tag: bytes) -> None:
    """A record whose length exceeds the payload's remaining bytes is a StateError, with size."""
    data = bytearray(encode({"a": np.arange(40_000), "t": "x" * 100}))
    _, at, n = next(r for r in records(bytes(data)) if r[0] == tag)
    struct.pack_into("<Q", data, at, n + 10_000_000)
    with pytest.raises(StateError, match="claims"):
        read_state(pieces(bytes(data), 1 << 16), size=len(data))


def same_imports() -> dict[str, str]:
    """An environment in which a child process imports the ``resumable`` under test."""
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


_ALLOCATION_PROBE = """
import resource, sys
from resumable._statecodec import read_state
data = sys.stdin.buffer.read()
size = None if sys.argv[1] == "none" else len(data)
# Room for what the process holds now plus 1 GiB: a 3 GiB buffer cannot be had.
with open("/proc/self/statm") as f:
    pages = int(f.read().split()[0])
limit = pages * resource.getpagesize() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    read_state([data[i : i + 65536] for i in range(0, len(data), 65536)], size=size)
except MemoryError as exc:
    sys.exit(f"allocated for the claim: {exc!r}")
except Exception as exc:
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    if any(isinstance(e, (MemoryError, OSError)) for e in chain):
        sys.exit(f"allocated for the claim: {chain!r}")
    print(type(exc).__name__, exc)
else:
    sys.exit("a corrupt payload loaded")
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
@pytest.mark.parametrize("known", ["size", "none"])
def test_a_3_gib_claim_in_a_300_kb_payload_allocates_nothing_large(known: str) -> None:
    """A buffer record claiming 3 GiB in a 300 KB payload fails without allocating 3 GiB."""
    import subprocess

    data = bytearray(encode({"a": np.arange(300_000 // 8)}))
    _, at, _ = next(r for r in records(bytes(data)) if r[0] == b"B")
    struct.pack_into("<Q", data, at, 3 << 30)
    run = subprocess.run(
        [sys.executable, "-c", _ALLOCATION_PROBE, known],
        input=bytes(data),
        capture_output=True,
        timeout=120,
        env=same_imports(),
    )
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert run.stdout.startswith(b"StateError")


def test_a_payload_one_byte_shorter_than_its_records_is_refused() -> None:
    """Lengths are checked exactly: the true size loads, one byte less is refused up front."""
    data = encode({"a": np.arange(1000), "b": b"z" * 70_000, "s": "text"})
    got, _ = read_state(pieces(data, 4096), size=len(data))
    assert got["b"] == b"z" * 70_000
    with pytest.raises(StateError, match="claims"):
        read_state(pieces(data, 4096), size=len(data) - 1)


def test_an_end_record_with_a_length_is_refused() -> None:
    """The end record has length 0; any other length is a corrupt payload."""
    data = bytearray(encode([1, 2]))
    struct.pack_into("<Q", data, len(data) - 8, 1)
    with pytest.raises(StateError, match="end record"):
        read_state([bytes(data)])


def test_old_plain_pickles_load_from_many_chunks() -> None:
    """A plain cloudpickle payload streamed in small chunks loads whole."""
    state = {"old": list(range(1000)), "b": b"q" * 5000}
    assert read_state(pieces(cloudpickle.dumps(state), 7)) == (state, {})


def test_a_pickle_that_cannot_be_unpickled_is_a_state_error_naming_why() -> None:
    """A payload naming a module this process lacks: StateError naming it, not "delete it"."""
    raw = pickle.dumps(_Gone(), protocol=5).replace(b"test_statecodec", b"no_such_module_")
    payload = MAGIC + _HEAD.pack(b"P", len(raw)) + raw + _HEAD.pack(b"E", 0)
    with pytest.raises(StateError, match=r"cannot unpickle.*no_such_module_.*importable.*fine"):
        read_state(pieces(payload, 5), size=len(payload))


class _Gone:
    """A class whose pickle is made to name a module that does not exist."""


@pytest.mark.parametrize("known", [True, False], ids=["size", "no size"])
def test_a_buffer_above_the_growth_threshold_loads(known: bool) -> None:
    """An array of more than 16 MiB loads, grown as it arrives when the size is unknown."""
    a = np.arange((17 << 20) // 8, dtype=np.int64)
    data = encode({"a": a, "n": 1})
    got, _ = read_state(pieces(data, 1 << 20), size=len(data) if known else None)
    assert np.array_equal(got["a"], a)
    got["a"][0] = -1  # writable


def test_pickle_and_extras_errors_name_the_type() -> None:
    """An unpicklable state or extras raises StateError naming the type and the cause."""
    with pytest.raises(StateError, match=r"cannot pickle the task state \(dict\): .*lock"):
        encode({"lock": threading.Lock()})
    with pytest.raises(StateError, match=r"cannot pickle the task state \(dict\): .*lock"):
        encode([1], extras={"rng": threading.Lock()})
