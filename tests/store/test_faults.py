"""Storage faults: the fault-injecting filesystem, retries and deadlines, and the public API.

Flaky stores are survived, hung ones time out, and a store that gives up leaves the previous
snapshot intact.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import tenacity

from resumable import Checkpoint, Limits, RetryPolicy, Storage, StorageError, resumable, testing
from resumable._backend import BlobWriter, Entry, FsspecBackend, open_backend
from resumable._faults import InjectedFault
from resumable._inspect import snapshot_infos
from resumable._retry import DeadlineExceeded, RetryingBackend, retry_call
from resumable._store import SnapshotStore
from resumable.testing import FaultyFileSystem

FAST = RetryPolicy(attempts=15, wait=tenacity.wait_none())


@pytest.fixture(name="root")
def _root() -> Iterator[str]:
    """A fresh folder in fsspec's (process-wide) memory filesystem, removed afterwards."""
    root = f"/faults-{uuid.uuid4().hex}"
    yield root
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


def faulty(root: str, **options: Any) -> tuple[FsspecBackend, FaultyFileSystem]:
    """A backend over ``faulty://<root>`` on memory, and its fault-injecting filesystem."""
    backend = open_backend(f"faulty://{root}", {"target_protocol": "memory", **options})
    assert isinstance(backend, FsspecBackend)
    assert isinstance(backend.fs, FaultyFileSystem)
    return backend, backend.fs


def test_fails_the_chosen_fraction_of_calls(root: str) -> None:
    """With fail_rate=0.2, about a fifth of the calls raise InjectedFault, all of them counted."""
    fs = fsspec.filesystem("faulty", target_protocol="memory", fail_rate=0.2, seed=1)
    fsspec.filesystem("memory").pipe_file(f"{root}/x", b"data")
    raised = 0
    for _ in range(1000):
        try:
            assert fs.cat_file(f"{root}/x") == b"data"
        except InjectedFault:
            raised += 1
    assert fs.calls["cat_file"] == 1000
    assert fs.faults["cat_file"] == raised
    assert 150 <= raised <= 250


def test_same_seed_same_faults(root: str) -> None:
    """Two filesystems with the same seed fail the same calls."""
    runs = []
    for _ in range(2):
        fs = fsspec.filesystem("faulty", target_protocol="memory", fail_rate=0.5, seed=7)
        outcome = []
        for _ in range(50):
            try:
                outcome.append(fs.exists(f"{root}/x"))
            except InjectedFault:
                outcome.append(None)
        runs.append(outcome)
    assert runs[0] == runs[1]
    assert None in runs[0]


def test_passes_everything_through_without_faults(root: str) -> None:
    """At zero rates every method the backend uses behaves as the inner filesystem does."""
    fs = fsspec.filesystem("faulty", target_protocol="memory")
    fs.pipe_file(f"{root}/a", b"alpha")
    with fs.open(f"{root}/b", "wb") as f:
        f.write(b"be")
        f.write(b"ta")
    with fs.open(f"{root}/c", "xb") as f:
        f.write(b"gamma")
    with pytest.raises(FileExistsError), fs.open(f"{root}/c", "xb") as f:
        f.write(b"other")
    fs.invalidate_cache(root)
    assert sorted(i["name"] for i in fs.ls(root, detail=True)) == [f"{root}/{n}" for n in "abc"]
    assert fs.info(f"{root}/b")["size"] == 4
    with fs.open(f"{root}/c", "rb") as f:
        assert f.read() == b"gamma"
    assert fs.cat_file(f"{root}/b") == b"beta"
    fs.rm_file(f"{root}/a")
    assert not fs.exists(f"{root}/a")
    assert sum(fs.faults.values()) == fs.hangs == fs.truncations == 0


def test_fresh_instance_per_open() -> None:
    """Equal options still give each store its own filesystem, counters and random state."""
    _, first = faulty("/same", fail_rate=0.2, seed=1)
    _, second = faulty("/same", fail_rate=0.2, seed=1)
    assert first is not second


def test_truncates_written_files(root: str) -> None:
    """With truncate_rate=1, every written file is published shorter, and close says nothing."""
    fs = fsspec.filesystem("faulty", target_protocol="memory", truncate_rate=1.0, seed=3)
    memory = fsspec.filesystem("memory")
    for i in range(10):
        with fs.open(f"{root}/open{i}", "wb") as f:
            f.write(b"x" * 100)
        fs.pipe_file(f"{root}/pipe{i}", b"y" * 100)
    assert fs.truncations == 20
    assert all(memory.info(p)["size"] < 100 for p in memory.find(root))


def test_failed_write_publishes_nothing(root: str) -> None:
    """A write that faults aborts the upload: nothing appears, and a new try can create it."""
    fs = fsspec.filesystem("faulty", target_protocol="memory")
    path = f"{root}/m.json"
    f = fs.open(path, "xb")
    fs.fail_rate = 1.0
    with pytest.raises(InjectedFault), f:
        f.write(b"{}")
    assert fs.faults["write"] == 1
    fs.fail_rate = 0.0
    assert not fsspec.filesystem("memory").exists(path)
    with fs.open(path, "xb") as f:
        f.write(b"{}")
    assert fsspec.filesystem("memory").cat_file(path) == b"{}"


def test_failed_close_publishes_nothing(root: str) -> None:
    """A close that faults (the upload itself) publishes nothing."""
    fs = fsspec.filesystem("faulty", target_protocol="memory")
    f = fs.open(f"{root}/blob", "wb")
    f.write(b"payload")
    fs.fail_rate = 1.0
    with pytest.raises(InjectedFault):
        f.close()
    assert fs.faults["close"] == 1
    assert not fsspec.filesystem("memory").exists(f"{root}/blob")


def test_hangs_until_released(root: str) -> None:
    """A hanging call blocks until release(), then completes normally."""
    fs = fsspec.filesystem("faulty", target_protocol="memory", hang_rate=1.0, hang_seconds=60)
    fsspec.filesystem("memory").pipe_file(f"{root}/x", b"late")
    result: list[bytes] = []
    caller = threading.Thread(target=lambda: result.append(fs.cat_file(f"{root}/x")))
    caller.start()
    try:
        assert fs.wait_hanging(1)
        assert caller.is_alive()
        assert result == []
    finally:
        fs.release()
        caller.join(10)
    assert result == [b"late"]
    assert fs.hangs == 1
    assert fs.wait_idle()


def test_retrying_backend_survives_a_fifth_of_calls_failing(root: str) -> None:
    """read/entries/create_exclusive/delete all succeed with 20 % of storage calls failing.

    create_exclusive is three faultable calls (open, write, close), so one try fails about
    half the time: the policy allows 15 tries to make giving up vanishingly rare.
    """
    inner, fs = faulty(root, fail_rate=0.2, seed=1)
    backend = RetryingBackend(inner, RetryPolicy(attempts=15, wait=tenacity.wait_none()))
    names = [f"{i:04d}.json" for i in range(50)]
    for name in names:
        backend.create_exclusive(name, name.encode())
    for _ in range(20):
        assert sorted(e.name for e in backend.entries()) == names
    for name in names:
        assert backend.read(name) == name.encode()
    for name in names:
        backend.delete(name)
    assert backend.entries() == []
    assert fs.faults["open"] > 0
    assert fs.faults["write"] > 0
    assert fs.faults["close"] > 0
    assert fs.faults["cat_file"] > 0
    assert fs.faults["rm_file"] > 0
    assert fs.faults["ls"] > 0


def test_gives_up_with_storage_error(root: str) -> None:
    """After the last try, StorageError names the call and the object and keeps the cause."""
    inner, fs = faulty(root, fail_rate=1.0)
    backend = RetryingBackend(inner, RetryPolicy(attempts=3, wait=tenacity.wait_none()))
    with pytest.raises(
        StorageError, match=r"reading faulty://.*/x\.json failed after 3 tries"
    ) as e:
        backend.read("x.json")
    assert "the previous snapshot is intact" in str(e.value)
    assert isinstance(e.value.__cause__, InjectedFault)
    assert fs.calls["cat_file"] == 3


def test_hang_ends_in_storage_error(root: str) -> None:
    """A call that never answers raises StorageError after the policy's tries and timeout."""
    inner, fs = faulty(root, hang_rate=1.0, hang_seconds=60)
    fsspec.filesystem("memory").pipe_file(f"{root}/x.json", b"{}")
    backend = RetryingBackend(
        inner, RetryPolicy(attempts=2, timeout=0.2, wait=tenacity.wait_none())
    )
    try:
        with pytest.raises(StorageError, match=r"x\.json did not answer within 0\.2 s") as e:
            backend.read("x.json")
        assert isinstance(e.value, DeadlineExceeded)
        assert isinstance(e.value, TimeoutError)
        assert fs.calls["cat_file"] == 2
    finally:
        fs.release()
    assert fs.wait_idle()


def test_abandoned_call_does_not_keep_the_process_alive(root: str) -> None:
    """A process whose storage call never answered still exits once its work is done."""
    script = textwrap.dedent(
        f"""
        import tenacity
        from resumable import StorageError
        from resumable._backend import open_backend
        from resumable._faults import FaultyFileSystem
        from resumable._retry import RetryingBackend, RetryPolicy

        inner = open_backend(
            "faulty://{root}",
            {{"target_protocol": "memory", "hang_rate": 1.0, "hang_seconds": 3600}},
        )
        policy = RetryPolicy(attempts=1, timeout=0.1, wait=tenacity.wait_none())
        try:
            RetryingBackend(inner, policy).entries()
        except StorageError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "did not answer within 0.1 s" in done.stdout


def test_file_exists_is_not_retried(root: str) -> None:
    """FileExistsError from create_exclusive is an answer: raised at once, not retried."""
    inner, fs = faulty(root)
    backend = RetryingBackend(inner, FAST)
    backend.create_exclusive("m.json", b"first")
    with pytest.raises(FileExistsError):
        backend.create_exclusive("m.json", b"second")
    assert fs.calls["open"] == 2
    assert fsspec.filesystem("memory").cat_file(f"{root}/m.json") == b"first"


@pytest.mark.parametrize(
    "error", [FileNotFoundError(), PermissionError(), IsADirectoryError(), NotADirectoryError()]
)
def test_answers_are_not_retried(error: OSError) -> None:
    """Missing, forbidden and wrong-type answers pass through after one try."""
    stub = _Stub(error)
    with pytest.raises(type(error)):
        RetryingBackend(stub, FAST).read("x")
    assert stub.calls == 1


def test_lost_reply_of_own_create_counts_as_created() -> None:
    """A create whose reply was lost, found on the next try with our bytes, is a success."""
    stub = _Stub(ConnectionResetError("reply lost"), create_then_fail=True)
    RetryingBackend(stub, FAST).create_exclusive("m.json", b"ours")
    assert stub.objects == {"m.json": b"ours"}
    with pytest.raises(FileExistsError):
        RetryingBackend(stub, FAST).create_exclusive("m.json", b"another writer's")


def test_stream_calls_have_a_deadline_and_close_after_a_stray_call() -> None:
    """A timed-out write is not retried; abort waits for the stray write instead of racing it."""
    slow = _SlowWriter()
    backend = RetryingBackend(_Stub(None, writer=slow), RetryPolicy(timeout=0.2))
    writer = backend.writer("x.blob")
    try:
        with pytest.raises(DeadlineExceeded, match=r"write stub://store/x\.blob did not answer"):
            writer.write(b"chunk")
        with pytest.raises(StorageError, match="still running"):
            writer.write(b"more")
        writer.abort()
        assert not slow.aborted.is_set()
    finally:
        slow.release.set()
    assert slow.aborted.wait(10)
    assert slow.writes == 1


def test_streamed_read_through_retries(root: str) -> None:
    """open_read retries the open, and the stream it returns reads the whole object."""
    inner, fs = faulty(root, fail_rate=0.5, seed=5)
    fsspec.filesystem("memory").pipe_file(f"{root}/x.blob", b"z" * 5000)
    policy = RetryPolicy(attempts=20, wait=tenacity.wait_none())
    for _ in range(10):
        with RetryingBackend(inner, policy).open_read("x.blob") as stream:
            assert stream.read(4096) + stream.read() == b"z" * 5000
    assert fs.faults["open"] > 0


def test_retry_call_redoes_the_whole_operation_but_not_after_a_timeout() -> None:
    """retry_call retries transient errors from the start; a deadline is final."""
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise InjectedFault("reset")
        return "done"

    assert retry_call(flaky, FAST, "flaky") == "done"
    assert len(tries) == 3

    timeouts: list[int] = []

    def stuck() -> None:
        timeouts.append(1)
        raise DeadlineExceeded("stuck did not answer within 1 s")

    with pytest.raises(DeadlineExceeded):
        retry_call(stuck, FAST, "stuck")
    assert len(timeouts) == 1


def test_policy_refuses_nonsense() -> None:
    """A policy needs at least one try and a positive timeout."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="timeout"):
        RetryPolicy(timeout=0)


def test_a_thousand_commits_through_a_fifth_of_calls_failing(root: str, tmp_path: Path) -> None:
    """1,000 retried commits at 20 % failing calls: the newest is the last, all kept verify."""
    inner, fs = faulty(root, fail_rate=0.2, seed=1)
    # A create is three calls, so a try fails half the time here; retention draws from the
    # same seeded faults on its own thread, so the sequence is not fixed: 30 tries make
    # running out about 1e-9 per commit.
    patient = RetryPolicy(attempts=30, wait=tenacity.wait_none())
    store = SnapshotStore(RetryingBackend(inner, patient), keep=2)
    for i in range(1000):
        payload = str(i).encode()
        retry_call(functools.partial(store.commit, "bytes", [payload]), patient, f"commit {i}")
    store.settle()  # retention runs behind the commits
    assert sum(fs.faults.values()) > 1000
    restored = retry_call(lambda: store.restore_into(tmp_path, Limits()), FAST, "restore")
    assert restored is not None
    assert (tmp_path / "payload").read_bytes() == b"999"
    infos = retry_call(lambda: snapshot_infos(store), FAST, "verify")
    assert len(infos) >= 2
    assert [i.status for i in infos] == ["ok"] * len(infos)


class _SlowWriter:
    """A writer whose first write blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.aborted = threading.Event()
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.release.wait(60)
        self.writes += 1

    def commit(self) -> None:
        raise AssertionError("commit after a failed write")

    def abort(self) -> None:
        self.aborted.set()


class _Stub:
    """A backend whose reads raise ``error``; creates may store and then raise it."""

    url = "stub://store"
    exclusive = True

    def __init__(
        self,
        error: OSError | None,
        *,
        create_then_fail: bool = False,
        writer: BlobWriter | None = None,
    ) -> None:
        self.error = error
        self.create_then_fail = create_then_fail
        self._writer = writer
        self.objects: dict[str, bytes] = {}
        self.calls = 0

    def entries(self) -> list[Entry]:
        return [Entry(name, len(data), None) for name, data in self.objects.items()]

    def read(self, name: str) -> bytes:
        self.calls += 1
        if self.error is not None and not self.create_then_fail:
            raise self.error
        return self.objects[name]

    def open_read(self, name: str) -> Any:
        raise NotImplementedError

    def writer(self, name: str) -> BlobWriter:
        assert self._writer is not None
        return self._writer

    def create_exclusive(self, name: str, data: bytes) -> None:
        if name in self.objects:
            raise FileExistsError(name)
        self.objects[name] = data
        if self.create_then_fail and self.error is not None:
            error, self.error = self.error, None
            raise error

    def delete(self, name: str) -> None:
        self.objects.pop(name, None)

    def list_children(self) -> list[str]:
        return []


# -- through the public API -----------------------------------------------------------------------


# Many tries: a manifest's create is three calls, so at a fifth of calls failing a try fails
# half the time, and retention draws from the same seeded faults on a thread of its own (the
# sequence is not fixed): 30 tries make running out about 1e-9 per save.
PATIENT = RetryPolicy(attempts=30, wait=tenacity.wait_none(), timeout=30.0)


def save(cp: Checkpoint, mode: str, data: bytes) -> None:
    """Save through the sync method or its async twin."""
    if mode == "sync":
        cp.save_sync(data)
    else:
        asyncio.run(cp.save(data))


def faulty_options(**options: Any) -> dict[str, Any]:
    return {"target_protocol": "memory", "seed": 3, **options}


def test_thousand_steps_with_a_fifth_of_storage_calls_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 1,000-step task whose store fails 20% of calls finishes right, every step saved."""
    store = f"faulty:///faults-{uuid.uuid4().hex}"
    seen: list[int] = []

    @resumable(
        state=0,
        store=store,
        key="steps",
        on_success="keep",
        storage=Storage(storage_options=faulty_options(fail_rate=0.2), retry=PATIENT),
    )
    def steps(n: int, state: int = 0) -> Any:
        for i in range(state, n):
            seen.append(i)
            yield i + 1
        return n

    with caplog.at_level(logging.ERROR, logger="resumable"):
        assert steps(1000) == 1000
    assert seen == list(range(1000))
    with Checkpoint(
        f"{store}/steps", storage=Storage(storage_options=faulty_options(), retry=PATIENT)
    ) as cp:
        cp.load_sync()
        assert testing.read_state(cp.path / "payload") == 1000


def test_flaky_store_checkpoint_round_trips() -> None:
    """Checkpoint saves and loads through a store that fails a third of its calls."""
    url = f"faulty:///flaky-{uuid.uuid4().hex}"
    # A manifest's create is three calls (open, write, close): at a third of calls failing, a
    # try fails 70 % of the time. Retention draws from the same seeded faults on its own
    # thread, so the sequence is not fixed: 40 tries make running out about 1e-6 per save.
    patient = RetryPolicy(attempts=40, wait=tenacity.wait_none(), timeout=30.0)
    with Checkpoint(
        url, storage=Storage(storage_options=faulty_options(fail_rate=0.33), retry=patient)
    ) as cp:
        for i in range(30):
            cp.save_sync(str(i).encode() * 30_000)  # some inlined, most payload objects
        assert (cp.load_sync() / "payload").read_bytes() == b"29" * 30_000


def test_hung_store_times_out_with_storage_error() -> None:
    """A store call that hangs ends in StorageError after the policy's timeout, not a hang."""
    url = f"faulty:///hung-{uuid.uuid4().hex}"
    policy = RetryPolicy(attempts=1, wait=tenacity.wait_none(), timeout=0.2)
    cp = Checkpoint(
        url,
        storage=Storage(
            storage_options=faulty_options(hang_rate=1.0, hang_seconds=30), retry=policy
        ),
    )
    fs = testing.filesystem(cp)
    assert isinstance(fs, FaultyFileSystem)
    try:
        with pytest.raises(StorageError, match=r"did not answer within 0\.2 s"):
            cp.save_sync(b"x")
    finally:
        fs.release()
        assert fs.wait_idle(timeout=10)
        cp.close()


def test_gives_up_with_storage_error_that_says_previous_is_intact() -> None:
    """When every try fails, StorageError says what failed; the previous snapshot stays."""
    url = f"faulty:///down-{uuid.uuid4().hex}"
    with Checkpoint(
        url, storage=Storage(storage_options=faulty_options(), retry=PATIENT)
    ) as healthy:
        healthy.save_sync(b"previous")
    policy = RetryPolicy(attempts=2, wait=tenacity.wait_none(), timeout=5)
    with (
        Checkpoint(
            url, storage=Storage(storage_options=faulty_options(fail_rate=1.0), retry=policy)
        ) as broken,
        pytest.raises(StorageError, match="previous snapshot is intact"),
    ):
        broken.save_sync(b"new")
    with Checkpoint(url, storage=Storage(storage_options=faulty_options(), retry=PATIENT)) as again:
        assert (again.load_sync() / "payload").read_bytes() == b"previous"


def test_truncated_uploads_are_never_loaded() -> None:
    """Writes the store silently truncates are caught by verification on load."""
    url = f"faulty:///torn-{uuid.uuid4().hex}"
    with Checkpoint(url, storage=Storage(storage_options=faulty_options(), retry=PATIENT)) as cp:
        cp.save_sync(b"whole" * 20_000)
    torn = Checkpoint(
        url, storage=Storage(storage_options=faulty_options(truncate_rate=1.0), retry=PATIENT)
    )
    try:
        torn.save_sync(b"torn!" * 20_000)
    except StorageError:
        pass  # a truncated manifest may fail to commit at all: also fine
    finally:
        torn.close()
    with Checkpoint(url, storage=Storage(storage_options=faulty_options(), retry=PATIENT)) as cp:
        assert (cp.load_sync() / "payload").read_bytes() == b"whole" * 20_000


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("payload", [b"small", b"large" * 40_000], ids=["inline", "blob"])
def test_attempts_mean_attempts_never_squared(mode: str, payload: bytes) -> None:
    """With every call failing, RetryPolicy(attempts=3) tries the failing call 3 times per save."""
    url = f"faulty:///down-{uuid.uuid4().hex}"
    policy = RetryPolicy(attempts=3, wait=tenacity.wait_none(), timeout=5)
    cp = Checkpoint(
        url, storage=Storage(storage_options=faulty_options(fail_rate=1.0), retry=policy)
    )
    fs = testing.filesystem(cp)
    assert isinstance(fs, FaultyFileSystem)
    try:
        with pytest.raises(StorageError) as raised:
            save(cp, mode, payload)
    finally:
        cp.close()
    # The first call of a save is the listing: it fails, 3 times, and nothing else is tried.
    assert dict(fs.calls) == {"ls": 3}
    message = str(raised.value)
    assert "failed after 3 tries" in message
    assert message.count("tries") == 1  # the failing call is named once, not once per layer


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_restarted_save_shares_the_tries_of_its_calls(mode: str) -> None:
    """A save restarted after a failed upload never gives any call more than `attempts` tries."""
    url = f"faulty:///restart-{uuid.uuid4().hex}"
    policy = RetryPolicy(attempts=3, wait=tenacity.wait_none(), timeout=5)
    # Fail every upload write, and nothing else: each restart lists again, then fails to write.
    cp = Checkpoint(url, storage=Storage(storage_options=faulty_options(), retry=policy))
    fs = testing.filesystem(cp)
    real_enter = fs.enter_call

    def failing_writes(method: str, path: str) -> None:
        real_enter(method, path)
        if method == "write":
            raise ConnectionResetError(f"reset while writing {path}")

    fs.enter_call = failing_writes
    try:
        with pytest.raises(StorageError, match="failed after 3 tries"):
            save(cp, mode, b"x" * 200_000)
    finally:
        cp.close()
    assert fs.calls["write"] == 3  # 3 starts of the operation, one failed write each
    assert fs.calls["ls"] == 3
