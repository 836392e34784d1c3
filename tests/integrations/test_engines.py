"""Real engines kill the worker running a decorated task; the rerun resumes from its snapshot.

A Dask ``LocalCluster`` with two worker processes, local Ray and a ``ProcessPoolExecutor``
each run ``tests.engine_tasks.count`` (a generator task snapshotting every ``EVERY`` yields).
The first attempt blocks after step ``HANG``; the test SIGKILLs the worker process that runs
it (its pid comes with the task's ``start`` line), the engine (or, for the pool, the test)
runs it again, and the rerun must start from the last snapshot: at most ``EVERY`` steps run
twice (counted from the side file of executed steps) and the result is right. Each runs on a
shared local store and, for Dask and Ray, on the S3 test server, the store reaching the
workers through ``RESUMABLE_STORE`` in their environment (docs/howto-distributed.md).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .. import engine_tasks
from ..engine_tasks import EVERY, Listener, executed_steps
from ..servers import SeaweedS3

ROOT = Path(__file__).resolve().parents[2]
N = 20
HANG = 8
#: The newest snapshot when the first attempt blocks after step HANG.
LAST_SNAPSHOT = HANG - HANG % EVERY
#: Its number in the store (snapshots are numbered from 0): the log says "resumes from snapshot 1".
LAST_SEQ = LAST_SNAPSHOT // EVERY - 1
RESULT = N * (N + 1) // 2

log = logging.getLogger(__name__)


@dataclass
class Store:
    """A store every worker reaches, and the environment that points a worker at it."""

    url: str
    env: dict[str, str]


#: On S3 a run takes 10 to 35 s here (a fresh worker's first use of S3 included): also slow.
S3 = pytest.param("s3", marks=[pytest.mark.remote, pytest.mark.slow])


@pytest.fixture(name="store", params=["local", S3])
def _store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A shared local folder, or a prefix on the S3 test server with its credentials."""
    if request.param == "local":
        url = str(tmp_path / "store")
        return Store(url, {"RESUMABLE_STORE": url})
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    url = f"s3://{server.bucket}/engines-{uuid.uuid4().hex}"
    return Store(url, {"RESUMABLE_STORE": url, **server.env})


@pytest.fixture(name="listener")
def _listener() -> Iterator[Listener]:
    """Progress lines from the tasks, wherever they run on this machine."""
    listener = Listener()
    try:
        yield listener
    finally:
        listener.close()


@dataclass
class Outcome:
    """What one killed-and-resumed run did."""

    killed_pid: int
    kill_step: int
    resume_step: int
    repeated: list[int]
    recovery: float  # seconds from the SIGKILL to the rerun's start (snapshot loaded)
    first_yield: float  # seconds from the SIGKILL to the rerun's first yield
    total: float  # seconds from the SIGKILL to the result


def alive(pid: int) -> bool:
    """Whether a process runs with this pid (a zombie does not count)."""
    psutil = pytest.importorskip("psutil")
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def kill_and_resume(
    listener: Listener,
    side: Path,
    result: Callable[[], Any],
    rerun: Callable[[], Callable[[], Any]] | None = None,
) -> Outcome:
    """SIGKILL the worker running the first attempt after step HANG; check the resume.

    ``result`` waits for the engine's result; without an engine retry, ``rerun`` submits the
    task again after the kill and returns the new wait.
    """
    _, words = listener.wait_for("start")
    assert words[1] == "0", words
    pid = int(words[2])
    listener.wait_for(f"saved {HANG}")
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    if rerun is not None:
        result = rerun()
    started_at, words = listener.wait_for("start")
    resume_step, new_pid = int(words[1]), int(words[2])
    assert new_pid != pid
    first_at, _ = listener.wait_for(f"saved {resume_step + 1}")
    value = result()
    done_at = time.monotonic()
    assert value == RESULT
    steps = executed_steps(str(side))
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    outcome = Outcome(
        killed_pid=pid,
        kill_step=HANG,
        resume_step=resume_step,
        repeated=repeated,
        recovery=started_at - killed_at,
        first_yield=first_at - killed_at,
        total=done_at - killed_at,
    )
    print(f"\n{outcome}")
    assert resume_step == LAST_SNAPSHOT
    assert sorted(set(steps)) == list(range(1, N + 1))
    assert len(steps) - N == len(repeated) <= EVERY
    assert repeated == list(range(LAST_SNAPSHOT + 1, HANG + 1))
    assert not alive(pid)
    return outcome


class Seen(logging.Handler):
    """Sets ``seen`` when a record containing ``text`` is handled."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


# -- Dask ------------------------------------------------------------------------------------


@contextlib.contextmanager
def dask_client(env: dict[str, str]) -> Iterator[Any]:
    """A LocalCluster of two single-threaded worker processes with ``env``, and its client.

    Closed on the way out, whatever happens; no worker process outlives it.
    """
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        # Any free port: with None the scheduler still serves HTTP on 8787, and a second
        # cluster at the same time (another worker's test) warns that it is taken.
        dashboard_address="127.0.0.1:0",
        env=env,
    )
    pids: set[int] = set()
    try:
        with distributed.Client(cluster) as client:
            try:
                yield client
            finally:
                with contextlib.suppress(Exception):
                    pids.update(client.run(os.getpid, wait=True).values())
    finally:
        cluster.close()
    left = [pid for pid in pids if alive(pid)]
    assert not left, f"Dask worker processes outlived their cluster: {left}"


def test_dask_worker_killed_task_resumes(
    store: Store, listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dask reschedules a task whose worker was SIGKILLed; it resumes, and the log says so."""
    side = tmp_path / "steps"
    line = f"resumes from snapshot {LAST_SEQ}"
    handler = Seen(line)
    resumable_log = logging.getLogger("resumable")
    resumable_log.addHandler(handler)
    # Imported first: read at its first import, the variable would also configure this
    # process's "resumable" logger (INFO, not propagated) for every later test.
    pytest.importorskip("distributed")
    # The library's logger at INFO in the workers: read by each worker process when it
    # imports distributed, so set before the cluster starts.
    monkeypatch.setenv("DASK_LOGGING__RESUMABLE", "info")
    try:
        with dask_client(store.env) as client:
            client.forward_logging("resumable", level=logging.INFO)  # ... and on the client
            future = client.submit(
                engine_tasks.count, N, str(side), listener.address, HANG, retries=2, pure=False
            )
            kill_and_resume(listener, side, lambda: future.result(timeout=120))
            # Forwarded records travel apart from results: wait for it, not for a time.
            assert handler.seen.wait(timeout=60), f"no {line!r} line forwarded from the workers"
    finally:
        resumable_log.removeHandler(handler)


# -- a process pool --------------------------------------------------------------------------


def test_process_pool_killed_child_resubmitted_resumes(
    store: Store, listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed child breaks the pool; resubmitted to a new pool, the task resumes."""
    # Also printed: the cold start of a fresh worker process, the seconds from the call's
    # start in the new process (interpreter up, modules imported) to its first resumed yield,
    # finding and loading the snapshot included (on S3: the first connection, a listing, reads).
    side = tmp_path / "steps"
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)  # the pool's children inherit the environment
    spawn = multiprocessing.get_context("spawn")
    args = (N, str(side), listener.address, HANG)
    pools: list[ProcessPoolExecutor] = []

    def submit() -> Future[int]:
        pools.append(ProcessPoolExecutor(1, mp_context=spawn))
        return pools[-1].submit(engine_tasks.timed_count, *args)

    first = submit()

    def rerun() -> Callable[[], int]:
        with pytest.raises(BrokenProcessPool):
            first.result(timeout=60)
        second = submit()
        return lambda: second.result(timeout=120)

    try:
        outcome = kill_and_resume(listener, side, lambda: None, rerun)
        _, words = listener.wait_for("first-yield")
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    print(
        f"cold start on {store.url.split(':')[0] if '://' in store.url else 'local'}: "
        f"{float(words[1]):.3f} s from the call to its first resumed yield; "
        f"{outcome.first_yield:.3f} s from the SIGKILL (a new process spawned meanwhile)"
    )


# -- Ray -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="ray")
def _ray() -> Iterator[Any]:
    """Local Ray on two CPUs for this module; shut down at its end, whatever happens.

    ``logging_config`` sets the level of the workers' root logger: the library's INFO lines
    (``resumes from snapshot N``) reach each worker's stderr, and so the driver's console and
    the worker logs.
    """
    ray = pytest.importorskip("ray")
    for attempt in range(2):
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                logging_config=ray.LoggingConfig(log_level="INFO"),
                runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
            )
            break
        except Exception as exc:
            ray.shutdown()  # whatever it started goes
            # Ray gives its raylet a fixed 30 s to register: on a loaded machine, once more.
            if attempt or "timed out during startup" not in str(exc):
                raise
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_logs(ray: Any) -> str:
    """The text of the current Ray session's worker stderr logs."""
    folder = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    return "\n".join(p.read_text(errors="replace") for p in folder.glob("worker-*.err"))


@pytest.mark.slow
def test_ray_worker_killed_task_resumes(
    ray: Any, store: Store, listener: Listener, tmp_path: Path
) -> None:
    """Ray retries a task whose worker was SIGKILLed; it resumes from its snapshot."""
    side = tmp_path / "steps"
    env = {"PYTHONPATH": str(ROOT), **store.env}
    remote = ray.remote(max_retries=2)(engine_tasks.count)  # the decorated task itself
    ref = remote.options(runtime_env={"env_vars": env}).remote(N, str(side), listener.address, HANG)
    kill_and_resume(listener, side, lambda: ray.get(ref, timeout=120))
    logs = worker_logs(ray)
    assert f"resumes from snapshot {LAST_SEQ}" in logs


def test_ray_remote_takes_the_decorated_task() -> None:
    """ray.remote(task) takes the decorated task itself, as it takes a plain function."""
    ray = pytest.importorskip("ray")
    remote = ray.remote(max_retries=2)(engine_tasks.count)
    assert callable(remote.remote)


# -- stop requests: save at the next yield, then stop --------------------------------------

STEADY_N = 400


def stop_and_resume(
    listener: Listener, side: Path, stop: Callable[[int], None], result: Callable[[], Any]
) -> Outcome:
    """Ask the worker running ``steady`` to stop after a few steps; check the exact resume."""
    _, words = listener.wait_for("start")
    assert words[1] == "0", words
    pid = int(words[2])
    listener.wait_for("step 3")
    asked_at = time.monotonic()
    stop(pid)
    started_at, words = listener.wait_for("start")
    resume_step, new_pid = int(words[1]), int(words[2])
    value = result()
    done_at = time.monotonic()
    steps = executed_steps(str(side))
    first_run = steps[: steps.index(resume_step) + 1]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    outcome = Outcome(
        pid, max(first_run), resume_step, repeated, started_at - asked_at, 0.0, done_at - asked_at
    )
    print(f"\n{outcome} (new pid {new_pid})")
    assert value == STEADY_N * (STEADY_N + 1) // 2
    assert resume_step >= 3
    assert first_run == list(range(1, resume_step + 1))  # saved at the first yield asked
    assert repeated == []
    assert sorted(steps) == list(range(1, STEADY_N + 1))
    return outcome


def test_dask_request_stop_on_a_worker_then_retry_resumes(
    listener: Listener, tmp_path: Path
) -> None:
    """client.run(request_stop) on the task's worker: it saves, stops; Dask's retry resumes."""
    from resumable import request_stop

    side = tmp_path / "steps"
    with dask_client({"RESUMABLE_STORE": str(tmp_path / "store")}) as client:
        future = client.submit(
            engine_tasks.steady, STEADY_N, str(side), listener.address, retries=2, pure=False
        )

        def stop(pid: int) -> None:
            address = next(a for a, p in client.run(os.getpid).items() if p == pid)
            asked = client.run(request_stop, workers=[address])
            assert asked == {address: 1}

        stop_and_resume(listener, side, stop, lambda: future.result(timeout=120))


@pytest.mark.slow
def test_ray_sigterm_to_a_preemptible_task_saves_then_retry_resumes(
    ray: Any, listener: Listener, tmp_path: Path
) -> None:
    """SIGTERM to the Ray worker: preemptible=True saves first, then Ray's handler exits it."""
    side = tmp_path / "steps"
    env = {"PYTHONPATH": str(ROOT), "RESUMABLE_STORE": str(tmp_path / "store")}
    remote = ray.remote(max_retries=2)(engine_tasks.steady)
    ref = remote.options(runtime_env={"env_vars": env}).remote(
        STEADY_N, str(side), listener.address
    )

    def sigterm(pid: int) -> None:
        os.kill(pid, signal.SIGTERM)

    outcome = stop_and_resume(listener, side, sigterm, lambda: ray.get(ref, timeout=120))
    assert not alive(outcome.killed_pid)
