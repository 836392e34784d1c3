"""Differential tests: the state codec against ``pickle``, the folder codec against ``tarfile``.

Whatever a state payload is made of, and however a store happens to cut it into chunks,
``read_state`` must give back what a plain ``pickle`` round trip gives. The cuts are drawn by
Hypothesis (1 byte to 8 MiB, and right at record boundaries), because a reader that only
meets whole records or one big chunk hides exactly the bugs that lose a user's state. The
folder codec is held against ``tarfile``: what we pack, it reads; what it extracts from our
archive, we extract too, from any cut of the stream.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import Limits
from resumable._archive import extract_tar, gunzip_members, gzip_members, iter_tar
from resumable._statecodec import _HEAD, MAGIC, capture_state, read_state, write_state

np = pytest.importorskip("numpy")

KiB, MiB = 1 << 10, 1 << 20
#: Sizes at and around the boundaries of the store's chunks, the codec's pieces and its maps.
BOUNDARIES = [n + d for n in (64 * KiB, MiB, 4 * MiB) for d in (-1, 0, 1)]


# -- comparing ------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Deep equality of what a pickle round trip gives: arrays and tensors by dtype and bytes."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.flags.c_contiguous != b.flags.c_contiguous:
            return False
        if a.flags.f_contiguous != b.flags.f_contiguous or a.flags.writeable != b.flags.writeable:
            return False
        if a.dtype.hasobject:
            return same(a.tolist(), b.tolist())
        return a.tobytes() == b.tobytes()
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.stride() == b.stride()
            and a.requires_grad == b.requires_grad
            and getattr(a, "__dict__", {}) == getattr(b, "__dict__", {})
            and _tensor_bytes(a) == _tensor_bytes(b)
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def _tensor_bytes(t: Any) -> bytes:
    """A tensor's elements as bytes, in logical order (lazy conjugates and negations applied)."""
    import torch

    flat = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy())


def _torch() -> Any:
    import sys

    return sys.modules.get("torch")


# -- cutting a payload the way a store might --------------------------------------------------


def record_starts(data: bytes) -> list[int]:
    """Offsets at which the payload's records (and its magic) begin and end."""
    starts, at = [0, len(MAGIC)], len(MAGIC)
    while at + _HEAD.size <= len(data):
        _, n = _HEAD.unpack_from(data, at)
        starts += [at + 1, at + _HEAD.size]  # inside the head, and where the record's bytes start
        at += _HEAD.size + n
        starts.append(at)
    return starts


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[int]:
    """Cut points of ``data``: some at or near record heads, the rest at drawn piece sizes."""
    points: set[int] = set()
    starts = record_starts(data)
    for _ in range(draw(st.integers(0, 6))):
        near = draw(st.sampled_from(starts))
        points.add(near + draw(st.integers(-9, 9)))
    # Pieces of one drawn size from 1 byte to 8 MiB; never more than ~4,000 of them.
    piece = draw(
        st.one_of(
            st.integers(1, 64),
            st.integers(1, 8 * MiB),
            st.sampled_from([64 * KiB, MiB, MiB - 1, 4 * MiB + 1, 8 * MiB]),
        )
    )
    piece = max(piece, len(data) // 4000)
    points.update(range(piece, len(data), piece))
    return sorted(p for p in points if 0 < p < len(data))


def split(data: bytes, at: list[int]) -> Iterator[memoryview]:
    """``data`` cut at ``at``, as views (a store hands out chunks of whatever type)."""
    view = memoryview(data)
    last = 0
    for point in [*at, len(data)]:
        yield view[last:point]
        last = point


def payload(obj: object, how: str) -> bytes:
    """The state payload of ``obj``: streamed (``write_state``) or captured (``capture_state``)."""
    if how == "write":
        out: list[Any] = []
        write_state(obj, out.append)
        return b"".join(bytes(c) for c in out)
    captured = capture_state(obj)
    try:
        return b"".join(bytes(c) for c in captured())
    finally:
        captured.close()


def check_round_trip(obj: object, how: str, data_draw: st.DataObject) -> None:
    """``read_state`` of ``obj``'s payload, cut as drawn, equals a pickle round trip of it."""
    expected = pickle.loads(pickle.dumps(obj, protocol=5))
    data = payload(obj, how)
    at = data_draw.draw(cuts(data), label="cuts")
    sized = data_draw.draw(st.booleans(), label="size known")
    got, extras = read_state(split(data, at), size=len(data) if sized else None)
    assert extras == {}
    assert same(expected, got)


# -- what states are made of ------------------------------------------------------------------


def filled(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes (cheap: Hypothesis draws the size, not the content)."""
    return random.Random(seed).randbytes(size)


sizes = st.one_of(st.integers(0, 3000), st.sampled_from(BOUNDARIES))
large_bytes = st.builds(filled, sizes, st.integers(0, 2**32))
large_bytearrays = large_bytes.map(bytearray)

dtypes = st.sampled_from(
    [
        "u1",
        "i1",
        "<u2",
        ">i2",
        "<i4",
        ">u4",
        "<i8",
        ">f4",
        "<f8",
        "f2",
        "<c8",
        ">c16",
        "?",
        "M8[ns]",
        "m8[s]",
        "S5",
        "<U3",
        "V4",
        [("a", "<i4"), ("b", ">f8")],
        [("x", "u1"), ("y", "<i2", (2,))],
    ]
)


@st.composite
def arrays(draw: st.DrawFn) -> Any:
    """NumPy arrays of many dtypes and layouts: C, Fortran, strided, reversed, 0-d, empty."""
    dtype = np.dtype(draw(dtypes))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=3)))
    raw = filled(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, draw(st.integers(0, 99)))
    a = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed", "transposed", "readonly"]))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        a = a[..., ::2]
    elif layout == "reversed" and a.ndim:
        a = a[::-1]
    elif layout == "transposed":
        a = a.T
    elif layout == "readonly":
        a.flags.writeable = False
    return a


big_arrays = st.builds(
    lambda size, seed, dtype: np.frombuffer(filled(size, seed), dtype=np.uint8).view(dtype),
    st.sampled_from([n for n in BOUNDARIES if n % 8 == 0]),
    st.integers(0, 99),
    st.sampled_from(["u1", "<f8", ">i4"]),
)
object_arrays = st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=5).map(
    lambda items: np.array([*items, None], dtype=object)
)

leaves = st.one_of(
    st.integers(),
    st.text(max_size=20),
    st.none(),
    st.binary(max_size=100),
    arrays(),
    object_arrays,
)
containers = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
    ),
    max_leaves=10,
)


# -- the state codec against pickle -----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    obj=st.one_of(large_bytes, large_bytearrays),
    how=st.sampled_from(["write", "capture"]),
    data=st.data(),
)
def test_large_bytes_round_trip_like_pickle(
    obj: bytes | bytearray, how: str, data: st.DataObject
) -> None:
    """A bytes or bytearray state of any size near a boundary reads back from any cut."""
    check_round_trip(obj, how, data)


@settings(max_examples=60, deadline=None)
@given(
    obj=st.lists(st.one_of(large_bytes, large_bytearrays, st.integers()), max_size=3).map(
        lambda items: {"items": items, "pair": tuple(items[:2]), "n": len(items)}
    ),
    how=st.sampled_from(["write", "capture"]),
    data=st.data(),
)
def test_containers_of_large_bytes_round_trip_like_pickle(
    obj: dict[str, Any], how: str, data: st.DataObject
) -> None:
    """Nested containers of large bytes and bytearrays read back from any cut."""
    check_round_trip(obj, how, data)


@settings(max_examples=150, deadline=None)
@given(obj=containers, how=st.sampled_from(["write", "capture"]), data=st.data())
def test_arrays_in_containers_round_trip_like_pickle(
    obj: Any, how: str, data: st.DataObject
) -> None:
    """NumPy arrays of many dtypes and layouts, nested in containers, read back from any cut."""
    check_round_trip(obj, how, data)


@settings(max_examples=25, deadline=None)
@given(
    obj=st.lists(st.one_of(big_arrays, large_bytes, arrays()), min_size=1, max_size=3),
    how=st.sampled_from(["write", "capture"]),
    data=st.data(),
)
def test_large_arrays_beside_bytes_round_trip_like_pickle(
    obj: list[Any], how: str, data: st.DataObject
) -> None:
    """Arrays and bytes around 64 KiB, 1 MiB and 4 MiB, side by side, read back from any cut."""
    check_round_trip(obj, how, data)


@st.composite
def tensors(draw: st.DrawFn) -> Any:
    """Dense CPU tensors: dtypes, views sharing a storage, transposes, 0-d, empty, parameters."""
    import torch

    dtype = draw(
        st.sampled_from(
            [torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool, torch.bfloat16]
        )
    )
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    numel = int(np.prod(shape, dtype=np.int64))
    raw = filled(numel * torch.empty(0, dtype=dtype).element_size(), draw(st.integers(0, 99)))
    if numel:
        flat = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy())
        base = flat.view(dtype).reshape(shape)
    else:
        base = torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        base = base.clone().view(torch.uint8).remainder(2).bool()
    kind = draw(
        st.sampled_from(
            ["plain", "view", "transposed", "parameter", "big", "attribute", "grad", "conj", "neg"]
        )
    )
    floating = dtype.is_floating_point
    if kind == "attribute":
        base = base.clone()
        base.note = draw(st.text(max_size=3))  # torch's own pickling keeps it
        return base
    if kind == "grad" and floating:
        return base.clone().requires_grad_()
    if kind == "conj":
        return torch.complex(base.float(), base.float()).conj()  # a lazy conjugate view
    if kind == "neg" and floating:
        return torch._neg_view(base)  # a lazy negation view
    if kind == "parameter" and floating:
        return torch.nn.Parameter(base.clone(), requires_grad=draw(st.booleans()))
    if kind == "view" and base.ndim and base.shape[0] > 1:
        return {"base": base, "view": base[1:]}
    if kind == "transposed":
        return base.t() if base.ndim == 2 else base
    if kind == "big":
        size = draw(st.sampled_from([n for n in BOUNDARIES if n % 4 == 0]))
        return torch.frombuffer(bytearray(filled(size, 7)), dtype=torch.float32)
    return base


@settings(max_examples=40, deadline=None)
@given(how=st.sampled_from(["write", "capture"]), data=st.data())
def test_torch_tensors_round_trip_like_pickle(how: str, data: st.DataObject) -> None:
    """Torch tensors (storage-shared views, parameters, large ones) read back from any cut."""
    pytest.importorskip("torch")
    obj = data.draw(st.lists(tensors(), min_size=1, max_size=3), label="tensors")
    check_round_trip(obj, how, data)


def test_large_bytes_at_a_chunk_boundary_needs_a_whole_readinto() -> None:
    """One 1 MiB bytes value in 1 MiB chunks: the unpickler's single readinto spans chunks."""
    obj = filled(MiB, 1)
    data = payload(obj, "write")
    got, _ = read_state(split(data, list(range(MiB, len(data), MiB))))
    assert got == obj


@settings(max_examples=80, deadline=None)
@given(
    obj=st.one_of(containers, st.binary(max_size=5000)),
    protocol=st.integers(0, 5),
    data=st.data(),
)
def test_a_pickle_cut_into_records_anywhere_loads(
    obj: Any, protocol: int, data: st.DataObject
) -> None:
    """Any pickle (protocols 0-5) in P records cut at any points, in any chunks, loads.

    Our writer cuts where the pickler writes, so a read never spans two records there; the
    format allows any cut, and a reader must not care.
    """
    raw = pickle.dumps(obj, protocol=protocol)
    points = sorted(set(data.draw(st.lists(st.integers(1, max(len(raw) - 1, 1)), max_size=8))))
    payload = bytearray(MAGIC)
    last = 0
    for point in [*points, len(raw)]:
        payload += _HEAD.pack(b"P", point - last) + raw[last:point]
        last = point
    payload += _HEAD.pack(b"E", 0)
    at = data.draw(cuts(bytes(payload)), label="cuts")
    got, _ = read_state(split(bytes(payload), at), size=len(payload))
    assert same(pickle.loads(raw), got)


# -- the folder codec against tarfile ---------------------------------------------------------

names = st.text(alphabet="abcxyz_-.é", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """A small folder: (kind, relative path, content or link target) entries, parents first."""
    entries: list[tuple[str, str, Any]] = []
    folders = [""]
    taken: set[str] = set()

    def fresh(parent: str) -> str:
        while True:
            path = f"{parent}/{draw(names)}" if parent else draw(names)
            if path not in taken:
                taken.add(path)
                return path

    for _ in range(draw(st.integers(0, 4))):
        path = fresh(draw(st.sampled_from(folders)))
        folders.append(path)
        entries.append(("dir", path, draw(st.sampled_from([0o755, 0o700, 0o750]))))
    files = []
    for _ in range(draw(st.integers(0, 6))):
        path = fresh(draw(st.sampled_from(folders)))
        size = draw(st.one_of(st.just(0), st.integers(1, 2000), st.sampled_from([511, 512, 513])))
        content = filled(size, draw(st.integers(0, 99)))
        if draw(st.integers(0, 9)) == 0:  # past the small-file batch, with holes in it
            content = bytes(128 * KiB) + content + bytes(192 * KiB) + b"end"
        files.append(path)
        entries.append(("file", path, (content, draw(st.sampled_from([0o644, 0o600, 0o755])))))
    targets = files + folders[1:]
    for _ in range(draw(st.integers(0, 3)) if targets else 0):
        path = fresh(draw(st.sampled_from(folders)))
        entries.append(("link", path, draw(st.sampled_from(targets))))
    return entries


def build(root: Path, tree: list[tuple[str, str, Any]]) -> None:
    """Make ``tree`` under ``root`` (links relative, pointing inside the tree)."""
    for kind, rel, value in tree:
        path = root / rel
        if kind == "dir":
            path.mkdir()
            path.chmod(value)
        elif kind == "file":
            content, mode = value
            path.write_bytes(content)
            path.chmod(mode)
        else:
            os.symlink(os.path.relpath(root / value, path.parent), path)


def on_disk(root: Path) -> dict[str, Any]:
    """What a folder holds: per path its kind, and a file's bytes and mode, a link's target."""
    seen: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st_ = path.lstat()
            if stat.S_ISLNK(st_.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                seen[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                seen[rel] = ("file", path.read_bytes(), stat.S_IMODE(st_.st_mode))
    return seen


def without_modes(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` of :func:`on_disk` with the modes left out."""
    return {rel: entry[:1] if entry[0] == "dir" else entry[:2] for rel, entry in tree.items()}


def in_archive(data: bytes, mode: str) -> dict[str, Any]:
    """What ``tarfile`` reads from an archive, in the form of :func:`on_disk`."""
    seen: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:
        for member in tar:
            if member.issym():
                seen[member.name] = ("link", member.linkname)
            elif member.isdir():
                seen[member.name] = ("dir", member.mode)
            else:
                assert member.isreg(), member.name
                source = tar.extractfile(member)
                assert source is not None
                seen[member.name] = ("file", source.read(), member.mode)
    return seen


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees(), gzip=st.booleans(), data=st.data())
def test_folder_codec_agrees_with_tarfile(
    tmp_path: Path, tree: list[tuple[str, str, Any]], gzip: bool, data: st.DataObject
) -> None:
    """Our tar of a random tree reads in tarfile as the tree; our extraction from any cut too."""
    work = Path(os.path.realpath(tmp_path)) / os.urandom(6).hex()
    source = work / "src"
    source.mkdir(parents=True)
    build(source, tree)
    expected = on_disk(source)

    chunk = data.draw(st.sampled_from([512, 4096, 10_000, MiB]), label="tar chunk size")
    raw = list(iter_tar(source, chunk_size=chunk))
    stream = [bytes(c) for c in (gzip_members(raw) if gzip else raw)]
    archive = b"".join(stream)
    assert in_archive(archive, "r:gz" if gzip else "r:") == expected

    # Extracted, modes are what tarfile's "data" filter makes of them (folders get the
    # default mode): our extraction must give exactly tarfile's, and the source's contents.
    theirs = work / "tarfile"
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz" if gzip else "r:") as tar:
        tar.extractall(theirs, filter="data")
    ours = work / "ours"
    ours.mkdir()
    pieces = list(split(archive, data.draw(cuts(archive), label="cuts")))
    extract_tar(gunzip_members(pieces) if gzip else pieces, ours, Limits())
    restored = on_disk(ours)
    assert restored == on_disk(theirs)
    assert without_modes(restored) == without_modes(expected)
    for rel, (kind, *_) in expected.items():  # file times survive to the second as well
        if kind == "file":
            assert int((ours / rel).stat().st_mtime) == int((source / rel).stat().st_mtime)
