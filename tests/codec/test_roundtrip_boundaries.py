"""States sized around every chunk and buffer boundary come back exactly, in another process.

A ``@resumable`` generator task yields the state in one child process (sync, or with
``background=True``) and a second child process, running the same task, is injected with it
and compares it with the original, rebuilt from the same recipe. On ``memory://`` (which lives
in one process) the second life is an in-process retry instead. The sizes are n-1, n and n+1
for each boundary n the library's read, write, copy and buffer paths have: 64 KiB (inline
manifests, inline hashing), 1 MiB (read chunks, mapped buffers, inline copies), 4 MiB (pickle
pieces), 8 MiB (copy pieces, read blocks), 16 MiB (periodic fdatasync, transfer logging): as
the size of a ``bytes`` value, of a ``bytearray`` (an out-of-band buffer), of the whole state
payload, and of NumPy arrays beside a 2 MB ``bytes`` value; and dicts of many 300 KB values.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import tenacity

from resumable import Checkpoint, RetryPolicy, resumable

from ..servers import SeaweedS3

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is in the test group
    np = None  # type: ignore[assignment]

KIB, MIB = 1 << 10, 1 << 20
#: Every size at which the library's I/O or buffer handling changes path.
BOUNDARIES = [64 * KIB, MIB, 4 * MIB, 8 * MIB, 16 * MIB]
#: The library's constants behind ``BOUNDARIES`` (module, name), checked to still be covered.
LIBRARY_CONSTANTS = [
    ("resumable._store", "INLINE_MAX"),
    ("resumable._store", "_LOG_SIZE"),
    ("resumable._stream", "CHUNK_SIZE"),
    ("resumable._stream", "_INLINE_HASH"),
    ("resumable._statecodec", "_PIECE"),
    ("resumable._statecodec", "_MAP_MIN"),
    ("resumable._capture", "_COPY_PIECE"),
    ("resumable._capture", "_COPY_INLINE"),
    ("resumable._pipe", "_READ_BLOCK"),
]
#: The repository root, put on the children's ``sys.path`` so they import this module.
ROOT = Path(__file__).resolve().parents[2]
#: What the saving child's task returns.
SAVED = "saved"


# -- the states -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One state: its recipe, rebuilt the same way in every process."""

    name: str
    kind: str  # bytes, bytearray, dict (size: how many 300 KB values) or numpy
    size: int

    def build(self) -> Any:
        """The state itself, derived from the case's name."""
        rng = random.Random(self.name)
        if self.kind == "bytes":
            return rng.randbytes(self.size)
        if self.kind == "bytearray":
            return bytearray(rng.randbytes(self.size))
        if self.kind == "dict":
            return {f"value-{i:03d}": rng.randbytes(300_000) for i in range(self.size)}
        assert self.kind == "numpy"
        assert np is not None
        n = self.size

        def array(nbytes: int, dtype: str = "uint8") -> Any:
            return np.frombuffer(rng.randbytes(nbytes), dtype=dtype).copy()

        return {
            "below": array(n - 1),
            "at": array(n),
            "above": array(n + 1),
            "float64": array(n, "float64"),
            "fortran": np.asfortranarray(array(n, "float32").reshape(4, -1)),
            "strided": array(2 * n + 2, "uint8")[::2],  # non-contiguous: n + 1 bytes
            "blob": rng.randbytes(2_000_000),
        }


def same(a: object, b: object) -> str | None:
    """None when ``a`` and ``b`` are exactly equal (types, dtypes, shapes, bits); else where not."""
    if type(a) is not type(b):
        return f"type {type(a).__name__} != {type(b).__name__}"
    if np is not None and isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        if (a.dtype, a.shape) != (b.dtype, b.shape):
            return f"array {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        return None if a.tobytes() == b.tobytes() else "array contents differ"
    if isinstance(a, dict):
        assert isinstance(b, dict)
        if list(a) != list(b):
            return f"keys {list(a)[:5]} != {list(b)[:5]}"
        for key in a:
            if (problem := same(a[key], b[key])) is not None:
                return f"[{key!r}]: {problem}"
        return None
    if isinstance(a, bytes | bytearray):
        assert isinstance(b, bytes | bytearray)
        if len(a) != len(b):
            return f"{len(a)} bytes != {len(b)} bytes"
        return None if a == b else "bytes differ"
    return None if a == b else f"{a!r} != {b!r}"


def around(n: int) -> list[int]:
    return [n - 1, n, n + 1]


@functools.cache
def payload_size(length: int) -> int:
    """The size of the state payload of a ``bytes`` value of ``length`` bytes."""
    url = f"memory:///overhead-{uuid.uuid4().hex}"

    @resumable(state=None, store=url, key="k", on_success="keep")
    def save(state: bytes | None = None) -> Any:
        yield bytes(length)

    save()
    with Checkpoint(f"{url}/k") as cp:
        info = cp.info_sync()
        cp.clear_sync()
    assert info is not None
    return info.size


@functools.cache
def payload_sized(total: int) -> int:
    """The length of a ``bytes`` state whose whole payload is ``total`` bytes."""
    length = total
    for _ in range(5):  # the overhead depends a little on the length (pickle framing)
        size = payload_size(length)
        if size == total:
            return length
        length += total - size
    raise AssertionError(f"no bytes state makes a payload of {total} bytes")


def cases(group: str) -> list[Case]:
    """The states of one group, named after what they are sized at."""
    if group == "bytes":
        return [Case(f"bytes-{n}", "bytes", n) for b in BOUNDARIES for n in around(b)]
    if group == "payload":
        return [
            Case(f"payload-{n}", "bytes", payload_sized(n))
            for b in BOUNDARIES[:4]
            for n in around(b)
        ]
    if group == "bytearray":
        return [Case(f"bytearray-{n}", "bytearray", n) for b in BOUNDARIES[:4] for n in around(b)]
    if group == "dict":
        return [Case(f"dict-{n}x300KB", "dict", n) for n in (12, 30)]
    assert group == "numpy"
    return [Case(f"numpy-{b}", "numpy", b) for b in BOUNDARIES[:4]]


GROUPS = ["bytes", "payload", "bytearray", "dict", "numpy"]


def group_param(group: str) -> Any:
    """A group as a test parameter; NumPy's is skipped without NumPy."""
    if group == "numpy" and np is None:
        return pytest.param(group, marks=pytest.mark.skip(reason="numpy is not installed"))
    return group


# -- the task, in the children and in this process -------------------------------------------


def task_for(store: str, case: Case, background: bool, **options: Any) -> Any:
    """The task of ``case``: yields the state and returns ``SAVED``, or returns what it got."""

    @resumable(
        state=None,
        store=store,
        key=case.name,
        on_success="keep",
        background=background,
        **options,
    )
    def task(state: Any = None) -> Any:
        if state is not None:
            return state  # resumed: hand back what was injected
        yield case.build()
        return SAVED

    return task


def run_cases(role: str, store: str, background: bool, todo: list[Case]) -> dict[str, str]:
    """Save or load each case; a problem per case that went wrong (empty: all went right)."""
    problems: dict[str, str] = {}
    for case in todo:
        try:
            got = task_for(store, case, background)()
        except Exception as exc:
            problems[case.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        if role == "save":
            if got != SAVED:
                problems[case.name] = f"the first run was injected a state: {type(got).__name__}"
        elif (problem := same(got, case.build())) is not None:
            problems[case.name] = problem
    return problems


def child_main(argv: list[str]) -> int:
    """A child's entry point: ``ROLE STORE BACKGROUND CASES_JSON OUT``."""
    role, store, background, todo, out = argv
    problems = run_cases(
        role, store, background == "1", [Case(**c) for c in json.loads(Path(todo).read_text())]
    )
    Path(out).write_text(json.dumps(problems))
    return 0


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.codec.test_roundtrip_boundaries import child_main
sys.exit(child_main(sys.argv[2:]))
"""


def in_child(
    tmp: Path, role: str, store: str, background: bool, todo: list[Case]
) -> dict[str, str]:
    """Run ``role`` (save or load) over ``todo`` in a fresh Python process."""
    spec, out = tmp / f"{role}-cases.json", tmp / f"{role}-problems.json"
    spec.write_text(json.dumps([dataclasses.asdict(c) for c in todo]))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(ROOT),
            role,
            store,
            str(int(background)),
            str(spec),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"the {role} child failed:\n{proc.stderr[-3000:]}"
    problems: dict[str, str] = json.loads(out.read_text())
    return problems


def cross_process(tmp: Path, store: str, background: bool, todo: list[Case]) -> None:
    """Save every case in one child, load each in another; each loads exactly as saved."""
    saving = in_child(tmp, "save", store, background, todo)
    assert not saving, f"saves failed: {saving}"
    loading = in_child(tmp, "load", store, background, todo)
    assert not loading, "states that did not come back exactly:\n" + "\n".join(
        f"  {name}: {problem}" for name, problem in loading.items()
    )


class Crash(Exception):
    """The first attempt dies after its save."""


def retry_in_process(store: str, background: bool, todo: list[Case]) -> dict[str, str]:
    """Each case's task saves, dies, and is retried in this process; what came back wrong."""
    problems: dict[str, str] = {}
    for case in todo:

        @resumable(
            state=None,
            store=store,
            key=case.name,
            on_success="keep",
            background=background,
            retry=RetryPolicy(attempts=2, wait=tenacity.wait_none()),
        )
        def task(state: Any = None, case: Case = case) -> Any:
            if state is not None:
                return state
            yield case.build()
            raise Crash("died after its save")

        try:
            got = task()
        except Exception as exc:
            problems[case.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        if (problem := same(got, case.build())) is not None:
            problems[case.name] = problem
    return problems


# -- the tests ------------------------------------------------------------------------------

MODES = [pytest.param(False, id="sync"), pytest.param(True, id="background")]


def test_boundaries_cover_the_library_constants() -> None:
    """Every size threshold the library's I/O uses today is one of the boundaries tested here."""
    for module, name in LIBRARY_CONSTANTS:
        value = getattr(importlib.import_module(module), name, None)
        if isinstance(value, int):
            assert value in BOUNDARIES, f"{module}.{name} = {value} is not tested"


def test_payload_sized_cases_hit_their_sizes() -> None:
    """The payload-sized states make payloads of exactly n-1, n and n+1 bytes."""
    url = f"memory:///sized-{uuid.uuid4().hex}"
    for b in BOUNDARIES[:4]:
        for n in around(b):
            case = Case(f"payload-{n}", "bytes", payload_sized(n))
            assert task_for(url, case, False)() == SAVED
            with Checkpoint(f"{url}/{case.name}") as cp:
                info = cp.info_sync()
                assert info is not None
                assert info.size == n


@pytest.mark.parametrize("background", MODES)
@pytest.mark.parametrize("group", [group_param(g) for g in GROUPS])
def test_local_disk_round_trip(tmp_path: Path, group: str, background: bool) -> None:
    """A state saved by one process on local disk loads exactly in the next one."""
    cross_process(tmp_path, str(tmp_path / "store"), background, cases(group))


@pytest.mark.parametrize("background", MODES)
@pytest.mark.parametrize("group", [group_param(g) for g in GROUPS])
def test_memory_retry_round_trip(group: str, background: bool) -> None:
    """A state saved on memory:// is injected exactly into the retry of the task."""
    store = f"memory:///boundaries-{uuid.uuid4().hex}"
    problems = retry_in_process(store, background, cases(group))
    assert not problems, "states that did not come back exactly:\n" + "\n".join(
        f"  {name}: {problem}" for name, problem in problems.items()
    )


@pytest.mark.remote
@pytest.mark.parametrize("background", MODES)
@pytest.mark.parametrize("group", [group_param(g) for g in GROUPS])
def test_s3_round_trip(tmp_path: Path, s3_server: SeaweedS3, group: str, background: bool) -> None:
    """A state saved by one process on S3 loads exactly in the next one."""
    store = f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"
    cross_process(tmp_path, store, background, cases(group))
