# mypy: disable-error-code="no-untyped-call"
# (distributed ships no type hints for Queue, LocalCluster and Client)
"""A Dask worker is killed in the middle of a task; Dask reschedules it and it resumes.

Run: python examples/dask_resume.py  (needs dask[distributed]; snapshots go to ./.resumable)

A LocalCluster starts two worker processes, every one pointed at the same store through
RESUMABLE_STORE. The decorated task, submitted as it is (it pickles), reports each step on a
Dask queue. Halfway through, this script SIGKILLs the worker process that runs it, as an
out-of-memory kill or a lost machine would; Dask reschedules the task on another worker, and
it resumes from its last snapshot instead of starting over. The worker's log line
"... resumes from snapshot N" shows here too: DASK_LOGGING__RESUMABLE=info sets the library's
logger to INFO in the workers, and client.forward_logging sends its records to this process.
The workers also warn that the store is on this machine's disk, which a task moved to another
machine would not see; here every worker runs on this machine, so they do share it. On a real
cluster, point RESUMABLE_STORE at s3://... or another store every machine reaches.
(Records a worker logs at WARNING show twice: on its stderr, and forwarded here.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Generator
from typing import Any

from resumable import resumable

N = 10
STOP_AT = 5  # the first run stops after this step, and its worker is killed there


@resumable(state=(0, 0), every=2)  # a snapshot every 2nd step: a kill repeats at most 2
def sum_of_squares(n: int, state: tuple[int, int] = (0, 0)) -> Generator[Any, None, int]:
    from distributed import Queue

    start, total = state
    progress = Queue("progress")
    progress.put(["start", start, os.getpid()])
    for i in range(start, n):
        total += (i + 1) ** 2
        progress.put(["step", i + 1])
        yield i + 1, total  # a snapshot (every 2nd one is saved)
        if start == 0 and i + 1 == STOP_AT:
            threading.Event().wait(60)  # the first run waits here to be killed
    return total


def main() -> None:
    from distributed import Client, LocalCluster, Queue

    store = os.path.abspath(".resumable")  # one store that every worker sees
    env = {"RESUMABLE_STORE": store}
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Read by each worker process when it starts: the library's logger at INFO there.
    os.environ["DASK_LOGGING__RESUMABLE"] = "info"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        ) as cluster,
        Client(cluster) as client,
    ):
        client.forward_logging("resumable", level=logging.INFO)  # worker records, shown here
        progress = Queue("progress", client=client)
        future = client.submit(sum_of_squares, N)  # the decorated task itself
        _, start, pid = progress.get(timeout=60)
        steps: list[int] = []
        while not steps or steps[-1] < STOP_AT:
            steps.append(progress.get(timeout=60)[1])
        print(f"worker process {pid} started at step {start} and ran steps {steps}")
        os.kill(pid, signal.SIGKILL)
        print(f"killed worker process {pid} (SIGKILL) after step {STOP_AT}")
        _, resumed_at, new_pid = progress.get(timeout=60)
        again = list(range(resumed_at + 1, STOP_AT + 1))
        print(
            f"Dask rescheduled the task on worker process {new_pid}: it resumed at step "
            f"{resumed_at}, its last snapshot, so step(s) {again} ran again"
        )
        result = future.result(timeout=60)
    expected = sum((i + 1) ** 2 for i in range(N))
    print(f"result {result} (expected {expected})")
    assert result == expected
    assert pid != new_pid
    assert 0 < resumed_at <= STOP_AT


if __name__ == "__main__":  # worker processes import this script: start the cluster only here
    main()
