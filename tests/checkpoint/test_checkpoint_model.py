"""A stateful test of ``Checkpoint`` against a model: every load returns what the model says.

The model is the list of committed snapshots (their kind and value), which of them the store
still holds (retention keeps the newest ``keep``) and which were corrupted by hand. Hypothesis
drives a store through saves of bytes (sync, async, background) and of pickled state (through
``@resumable``: ``ctx().save_sync`` and ``yield``), loads (through ``Checkpoint`` and through a
task's injected state), "new processes" (fresh objects, a changed ``keep``, and on local disk a
real child process), saves through a ``faulty://`` store that fails some of its calls, and
corruption of the newest valid snapshot's payload. Runs on ``memory://`` and on local disk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest
import tenacity
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resumable import (
    Checkpoint,
    CorruptCheckpointError,
    RetryPolicy,
    StateError,
    Storage,
    StorageError,
    ctx,
    resumable,
)
from resumable.testing import FaultyFileSystem, read_state

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is in the test group
    np = None  # type: ignore[assignment]

#: The key of the task under the store: the checkpoint's URL is ``<store>/<KEY>``.
KEY = "task"
#: What a task with injected state receives when nothing valid was ever saved.
INITIAL = "initial"
#: Sizes at the store's and the codec's boundaries: inline manifests (64 KiB) and the read
#: chunk, map and copy thresholds (1 MiB).
BOUNDARY_SIZES = [65535, 65536, 65537, (1 << 20) - 1, 1 << 20, (1 << 20) + 1]
_MANIFEST = re.compile(r"^(\d{20})\.json$")
#: Faulty saves give up quickly: no waits between tries, few tries.
_NO_WAIT = tenacity.wait_none()

# -- values and their comparison ------------------------------------------------------------


def same(a: object, b: object) -> bool:
    """Whether ``a`` and ``b`` are exactly equal: same types all the way down, same bits."""
    if type(a) is not type(b):
        return False
    if np is not None and isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@st.composite
def sizes(draw: st.DrawFn) -> int:
    """A payload size: mostly small, sometimes (one in five) at a 64 KiB or 1 MiB boundary."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(BOUNDARY_SIZES))
    return draw(st.integers(0, 3000))


@dataclass(frozen=True)
class Value:
    """A value to save, built from a few drawn numbers (so a failing example prints short)."""

    kind: str  # bytes, bytearray, dict or array
    size: int
    seed: int
    dtype: str = "uint8"
    layout: str = "c"

    def build(self) -> Any:
        """The value itself: the same every time."""
        data = random.Random(self.seed).randbytes(self.size)
        if self.kind == "bytes":
            return data
        if self.kind == "bytearray":
            return bytearray(data)
        if self.kind == "dict":
            return {"step": self.seed, "blob": data, "note": "x" * (self.size % 7)}
        assert np is not None
        itemsize = np.dtype(self.dtype).itemsize
        arr = np.frombuffer(data[: self.size - self.size % itemsize], dtype=self.dtype)
        if self.layout == "fortran" and arr.size % 2 == 0 and arr.size:
            return np.asfortranarray(arr.reshape(2, -1))
        if self.layout == "strided":
            return arr[::2]  # a non-contiguous view: pickled as a copy
        return arr.copy()


@st.composite
def payloads(draw: st.DrawFn) -> Value:
    """Bytes of a drawn size, derived from a seed: cheap even at 1 MiB."""
    return Value("bytes", draw(sizes()), draw(st.integers(0, 2**32)))


@st.composite
def states(draw: st.DrawFn) -> Value:
    """A task state: bytes, bytearray, a small dict, or (with numpy) an array."""
    kinds = ["bytes", "bytearray", "dict"] + (["array"] if np is not None else [])
    kind = draw(st.sampled_from(kinds))
    size, seed = draw(sizes()), draw(st.integers(0, 2**32))
    if kind != "array":
        return Value(kind, size, seed)
    dtype = draw(st.sampled_from(["uint8", "int32", "float64"]))
    return Value(kind, size, seed, dtype, draw(st.sampled_from(["c", "fortran", "strided"])))


# -- the model ------------------------------------------------------------------------------


@dataclass
class Snap:
    """One committed snapshot, as the model knows it."""

    seq: int
    kind: str  # "bytes" (Checkpoint.save) or "state" (@resumable)
    value: Any
    corrupt: bool = False


class Model:
    """The committed snapshots, which of them the store holds, and what loads must return."""

    def __init__(self) -> None:
        self.snaps: list[Snap] = []
        self.present: set[int] = set()
        self.next_seq = 0

    def held(self) -> list[Snap]:
        """The snapshots the store holds, newest first."""
        return sorted((s for s in self.snaps if s.seq in self.present), key=lambda s: -s.seq)

    def commit(self, kind: str, value: Any, keep: int) -> Snap:
        """A save committed: a new newest snapshot, and retention to the newest ``keep``."""
        snap = Snap(self.next_seq, kind, value)
        self.next_seq += 1
        self.snaps.append(snap)
        self.present.add(snap.seq)
        self.present = {s.seq for s in self.held()[:keep]}
        return snap

    def checkpoint_load(self) -> tuple[str, Any]:
        """What ``Checkpoint.load`` returns: the newest snapshot whose payload verifies."""
        held = self.held()
        for snap in held:
            if not snap.corrupt:
                return snap.kind, snap.value
        return ("error", "CorruptCheckpointError") if held else ("none", None)

    def task_load(self) -> tuple[str, Any]:
        """What a task with ``state=INITIAL`` is injected with (or the error its call raises).

        Each candidate's kind is checked before its payload: a newer ``bytes`` snapshot is
        refused with ``StateError``, corrupt or not.
        """
        held = self.held()
        for snap in held:
            if snap.kind != "state":
                return "error", "StateError"
            if not snap.corrupt:
                return "state", snap.value
        return ("error", "CorruptCheckpointError") if held else ("state", INITIAL)


def outcome(call: Any) -> tuple[str, Any]:
    """``("ok", result)``, or ``("error", name)`` for the library's load errors."""
    try:
        return "ok", call()
    except (CorruptCheckpointError, StateError) as exc:
        return "error", type(exc).__name__


# -- the store, seen from outside -----------------------------------------------------------


class Store:
    """A store root on ``memory://`` or local disk, and raw access to its objects."""

    def __init__(self, where: str, tmp: Path) -> None:
        self.where = where
        if where == "memory":
            self.path = f"/model-{uuid.uuid4().hex}"
            self.root = f"memory://{self.path}"
            self.fs = fsspec.filesystem("memory")
        else:
            self.path = str(tmp / f"model-{uuid.uuid4().hex}")
            self.root = self.path
            self.fs = fsspec.filesystem("file")
        self.url = f"{self.root}/{KEY}"

    def faulty(self, fail_rate: float, seed: int) -> tuple[str, dict[str, Any]]:
        """A ``faulty://`` URL of the same store root, and its storage options."""
        target: dict[str, Any] = {"target_protocol": "memory"}
        if self.where == "local":
            target = {"target_protocol": "file", "target_options": {"auto_mkdir": True}}
        return f"{FaultyFileSystem.protocol}://{self.path}", {
            **target,
            "fail_rate": fail_rate,
            "seed": seed,
        }

    def _name(self, name: str) -> str:
        return f"{self.path}/{KEY}/{name}"

    def manifests(self) -> set[int]:
        """The sequence numbers of the manifests the store holds."""
        self.fs.invalidate_cache()
        try:
            names = self.fs.ls(f"{self.path}/{KEY}", detail=False)
        except FileNotFoundError:
            return set()
        found = (_MANIFEST.match(str(n).rsplit("/", 1)[-1]) for n in names)
        return {int(m.group(1)) for m in found if m}

    def read(self, name: str) -> bytes:
        data: bytes = self.fs.cat_file(self._name(name))
        return data

    def write(self, name: str, data: bytes) -> None:
        if self.where == "local":
            path = Path(self._name(name))
            path.chmod(0o600)  # in case the library made it read-only
            path.write_bytes(data)
        else:
            self.fs.pipe_file(self._name(name), data)
        self.fs.invalidate_cache()

    def corrupt(self, seq: int, position: int) -> None:
        """Flip one byte of snapshot ``seq``'s payload (inline or not); digest left as it was.

        An empty payload gets a byte instead: either way it no longer matches its manifest.
        """
        name = f"{seq:020d}.json"
        doc = json.loads(self.read(name))
        if doc["blob"] is None:
            payload = bytearray(base64.b64decode(doc["inline"]))
        else:
            payload = bytearray(self.read(doc["blob"]))
        if payload:
            payload[position % len(payload)] ^= 0xFF
        else:
            payload = bytearray(b"\0")
        if doc["blob"] is None:
            doc["inline"] = base64.b64encode(payload).decode()
            self.write(name, json.dumps(doc).encode())
        else:
            self.write(doc["blob"], bytes(payload))

    def drop(self) -> None:
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)


#: A child process that loads the checkpoint and writes what it found to a file.
CHILD_LOAD = """
import pickle, sys
from resumable import Checkpoint, CorruptCheckpointError
url, out = sys.argv[1], sys.argv[2]
try:
    with Checkpoint(url) as cp:
        root = cp.load_sync()
        found = ("none", None) if root is None else ("ok", (root / "payload").read_bytes())
except CorruptCheckpointError as exc:
    found = ("error", type(exc).__name__)
with open(out, "wb") as f:
    pickle.dump(found, f)
"""


# -- the state machine ----------------------------------------------------------------------


class CheckpointMachine(RuleBasedStateMachine):
    """Drives one store; ``WHERE`` and ``TMP`` are set by the test that runs it."""

    WHERE = "memory"
    TMP = Path(".")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.store = Store(self.WHERE, self.TMP)
        self.keep = 2
        self._cp: Checkpoint | None = None
        self.children = 0

    # -- helpers --------------------------------------------------------------------------

    @property
    def cp(self) -> Checkpoint:
        """The Checkpoint of this "process"; a fresh one after another writer committed."""
        if self._cp is None:
            self._cp = Checkpoint(self.store.url, storage=Storage(keep=self.keep))
        return self._cp

    def forget_cp(self) -> None:
        """Close this process's Checkpoint: it would not know what another writer committed."""
        if self._cp is not None:
            self._cp.close()
            self._cp = None

    def check_held(self) -> None:
        """After a clean commit and its retention, the store holds exactly the model's."""
        assert self.store.manifests() == self.model.present

    def reconcile(self) -> None:
        """After a faulty save: the store holds every snapshot the model must, maybe more.

        Retention that met a fault leaves old snapshots behind (until the next commit); those
        are held from now on, and a later fallback may reach them.
        """
        listed = self.store.manifests()
        assert self.model.present <= listed, (self.model.present, listed)
        assert listed <= {s.seq for s in self.model.snaps}, "a snapshot the model never made"
        self.model.present = listed

    def task(
        self,
        *,
        background: bool = False,
        store: str | None = None,
        storage_options: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """A generator task with injected state: returns what it got, yields what it is sent."""

        @resumable(
            state=INITIAL,
            store=store or self.store.root,
            key=KEY,
            on_success="keep",
            background=background,
            storage=Storage(keep=self.keep, storage_options=storage_options, retry=retry),
        )
        def run(new: Any, state: Any = INITIAL) -> Any:
            got = state
            if new is not None:
                yield new
            return got

        return run

    def check_payload(self, kind: str, payload: bytes, expected: tuple[str, Any]) -> None:
        """A loaded payload is the expected snapshot's (a state payload decodes to its value)."""
        want_kind, want = expected
        assert kind == "ok", (kind, expected[0])
        if want_kind == "bytes":
            assert payload == want, f"loaded {len(payload)} bytes, model says {len(want)}"
        else:
            assert want_kind == "state", expected
            assert same(read_state(payload), want)

    # -- rules ----------------------------------------------------------------------------

    @initialize(keep=st.integers(1, 3))
    def start(self, keep: int) -> None:
        self.keep = keep

    @rule(data=payloads(), how=st.sampled_from(["sync", "async", "background"]))
    def save_bytes(self, data: Value, how: str) -> None:
        """Checkpoint.save commits bytes: the new newest snapshot."""
        value = data.build()
        cp = self.cp
        if how == "sync":
            cp.save_sync(value)
        elif how == "async":
            asyncio.run(cp.save(value))
        else:
            cp.save_background_sync(value)
            cp.flush_sync()
        snap = self.model.commit("bytes", value, self.keep)
        assert cp.newest_seq() == snap.seq  # waits for retention too
        self.check_held()

    @rule(spec=states())
    def save_state(self, spec: Value) -> None:
        """ctx().save_sync in a task without injected state commits a state snapshot."""
        value = spec.build()

        @resumable(
            store=self.store.root, key=KEY, on_success="keep", storage=Storage(keep=self.keep)
        )
        def put() -> None:
            ctx().save_sync(value)

        put()
        self.forget_cp()
        self.model.commit("state", value, self.keep)
        self.check_held()

    @precondition(lambda self: self.model.task_load()[0] == "state")
    @rule(spec=states(), background=st.booleans())
    def yield_state(self, spec: Value, background: bool) -> None:
        """A generator task is injected with the model's state, and its yield commits."""
        value = spec.build()
        got = self.task(background=background)(value)
        assert same(got, self.model.task_load()[1])
        self.forget_cp()
        self.model.commit("state", value, self.keep)
        self.check_held()

    @rule(how=st.sampled_from(["sync", "async"]))
    def load(self, how: str) -> None:
        """Checkpoint.load returns the newest snapshot that verifies, or None, or refuses."""
        expected = self.model.checkpoint_load()

        def do() -> Path | None:
            return self.cp.load_sync() if how == "sync" else asyncio.run(self.cp.load())

        kind, root = outcome(do)
        if root is None:
            assert expected == ("none", None)
        elif expected[0] == "error":
            assert (kind, root) == expected
        else:
            self.check_payload(kind, (root / "payload").read_bytes(), expected)

    @rule()
    def load_in_task(self) -> None:
        """A task is injected with the newest valid state snapshot, or its call says why not."""
        expected = self.model.task_load()
        kind, got = outcome(lambda: self.task()(None))
        if expected[0] == "error":
            assert (kind, got) == expected
        else:
            assert kind == "ok", (kind, got, expected[0])
            assert same(got, expected[1])

    @rule(keep=st.integers(1, 3))
    def new_process(self, keep: int) -> None:
        """A fresh Checkpoint (maybe with another keep) takes over the same store."""
        self.forget_cp()
        self.keep = keep

    @precondition(lambda self: self.WHERE == "local" and self.children < 2)
    @rule()
    def load_in_child(self) -> None:
        """A real child process loads what the model says (local disk only)."""
        self.children += 1
        out = Path(self.store.path + f".child-{self.children}")
        proc = subprocess.run(
            [sys.executable, "-c", CHILD_LOAD, self.store.url, str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        kind, found = pickle.loads(out.read_bytes())
        out.unlink()
        expected = self.model.checkpoint_load()
        if expected[0] in ("none", "error"):
            assert (kind, found) == expected
        else:
            self.check_payload(kind, found, expected)

    @rule(
        via=st.sampled_from(["checkpoint", "task"]),
        spec=states(),
        fail_rate=st.sampled_from([0.2, 0.5, 1.0]),
        attempts=st.integers(1, 4),
        seed=st.integers(0, 2**16),
    )
    def faulty_save(
        self, via: str, spec: Value, fail_rate: float, attempts: int, seed: int
    ) -> None:
        """A save through a failing store commits, or fails with StorageError and changes nothing.

        Bytes go through ``Checkpoint.save``, states through a task's ``ctx().save_sync``.
        """
        url, options = self.store.faulty(fail_rate, seed)
        policy = RetryPolicy(attempts=attempts, wait=_NO_WAIT, timeout=30.0)
        kind = "bytes" if via == "checkpoint" else "state"
        data = Value("bytes", spec.size, spec.seed).build() if kind == "bytes" else spec.build()
        self.forget_cp()
        try:
            if kind == "bytes":
                with Checkpoint(
                    f"{url}/{KEY}",
                    storage=Storage(keep=self.keep, storage_options=options, retry=policy),
                ) as cp:
                    cp.save_sync(data)
            else:

                @resumable(
                    store=url,
                    key=KEY,
                    on_success="keep",
                    storage=Storage(keep=self.keep, storage_options=options, retry=policy),
                )
                def put() -> None:
                    ctx().save_sync(data)

                put()
        except StorageError:
            pass  # failed cleanly: the model is unchanged
        else:
            self.model.commit(kind, data, self.keep)
        self.reconcile()

    @rule(
        via=st.sampled_from(["checkpoint", "task"]),
        fail_rate=st.sampled_from([0.2, 0.5, 1.0]),
        attempts=st.integers(1, 4),
        seed=st.integers(0, 2**16),
    )
    def faulty_load(self, via: str, fail_rate: float, attempts: int, seed: int) -> None:
        """A load through a failing store says StorageError, or returns what the model says.

        A transient read error is never taken for a corrupt snapshot: no fallback to an older
        one, no CorruptCheckpointError.
        """
        url, options = self.store.faulty(fail_rate, seed)
        policy = RetryPolicy(attempts=attempts, wait=_NO_WAIT, timeout=30.0)
        try:
            if via == "checkpoint":
                expected = self.model.checkpoint_load()
                with Checkpoint(
                    f"{url}/{KEY}", storage=Storage(storage_options=options, retry=policy)
                ) as cp:
                    kind, root = outcome(cp.load_sync)
                    if root is None:
                        assert expected == ("none", None)
                    elif expected[0] == "error":
                        assert (kind, root) == expected
                    else:
                        self.check_payload(kind, (root / "payload").read_bytes(), expected)
                return
            expected = self.model.task_load()
            task = self.task(store=url, storage_options=options, retry=policy)
            kind, got = outcome(lambda: task(None))
        except StorageError:
            return  # failed cleanly
        if expected[0] == "error":
            assert (kind, got) == expected
        else:
            assert kind == "ok", (kind, got, expected[0])
            assert same(got, expected[1])

    @precondition(lambda self: any(not s.corrupt for s in self.model.held()))
    @rule(position=st.integers(0, 2**31))
    def corrupt_newest(self, position: int) -> None:
        """Flip a byte of the newest valid snapshot's payload: loads fall back past it."""
        snap = next(s for s in self.model.held() if not s.corrupt)
        self.store.corrupt(snap.seq, position)
        snap.corrupt = True

    @invariant()
    def never_more_than_it_should(self) -> None:
        """The store never holds a manifest the model does not know."""
        assert self.store.manifests() <= {s.seq for s in self.model.snaps}

    def teardown(self) -> None:
        self.forget_cp()
        self.store.drop()


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(name="machine")
def _machine(tmp_path: Path) -> Iterator[type[CheckpointMachine]]:
    """The state machine class, its temp folder set for this test."""
    CheckpointMachine.TMP = tmp_path
    yield CheckpointMachine
    CheckpointMachine.WHERE = "memory"


@pytest.mark.parametrize("where", ["memory", "local"])
def test_checkpoint_matches_its_model(machine: type[CheckpointMachine], where: str) -> None:
    """Through saves, faults, retention, new processes and corruption, every load is the model's."""
    machine.WHERE = where
    run_state_machine_as_test(machine, settings=SETTINGS)
