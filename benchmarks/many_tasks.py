"""Many tasks writing at once to one S3 bucket: errors, torn snapshots, time and requests.

``--tasks`` tasks (threads of one process, all started together) each own one checkpoint
``<bucket>/many-tasks/<run>/<i>`` and save ``--saves`` small snapshots (about 100 bytes, as a
counter or a small dict would be) with ``keep=2``, then load the newest back through a new
``Checkpoint`` (as a restarted task would) and check it is exactly the last one saved. The S3
server is SeaweedFS on loopback, started as the tests start it; every HTTP request the client
sends is counted by operation (a botocore hook, as in ``benchmarks/requests.py``).

Prints the total time, the errors, the torn or wrong snapshots (target: none of either) and
the requests per save and per load. Run:
``python benchmarks/many_tasks.py [--tasks 1000] [--saves 5]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/requests.py is named like the ``requests`` library: keep this folder off sys.path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import fsspec  # noqa: E402

from benchmarks.requests import count_http, s3_server  # noqa: E402
from resumable import Checkpoint, Storage  # noqa: E402


def payload(task: int, step: int) -> bytes:
    """A ~100-byte snapshot that names its task and step, with a digest of both."""
    head = f"task {task} step {step} ".encode()
    return head + hashlib.sha256(head).hexdigest().encode()


class Retries(logging.Handler):
    """Counts the storage calls the library retried (its warnings), instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        """Count one warning by its cause."""
        message = record.getMessage()
        why = message.split("(try ", 1)[-1].split(": ", 1)[-1].split(":", 1)[0]
        self.count[why if "(try " in message else message[:80]] += 1


def run_task(
    url: str, task: int, saves: int, start: threading.Barrier, options: dict[str, object]
) -> str | None:
    """Save ``saves`` snapshots, then load the newest anew; a problem found, or None."""
    start.wait()
    with Checkpoint(url, storage=Storage(keep=2, storage_options=options)) as cp:
        for step in range(saves):
            cp.save_sync(payload(task, step))
    with Checkpoint(url, storage=Storage(storage_options=options)) as fresh:
        root = fresh.load_sync()
        if root is None:
            return "no snapshot"
        got = (root / "payload").read_bytes()
    return None if got == payload(task, saves - 1) else f"torn or wrong snapshot: {got[:40]!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="concurrent tasks (threads)")
    parser.add_argument("--saves", type=int, default=5, help="saves per task")
    parser.add_argument(
        "--pool",
        type=int,
        default=128,
        help="HTTP connections of the s3fs client (default 10)",
    )
    args = parser.parse_args()
    options: dict[str, object] = {"config_kwargs": {"max_pool_connections": args.pool}}
    retries = Retries()
    logger = logging.getLogger("resumable")
    logger.addHandler(retries)
    logger.propagate = False
    with s3_server() as bucket:
        if bucket is None:
            print("no S3 server (the SeaweedFS `weed` binary): nothing measured")
            return 1
        root = f"{bucket}/many-tasks/{uuid.uuid4().hex}"
        fs, _ = fsspec.url_to_fs(root, **options)
        calls = count_http(fs)  # the same cached filesystem every Checkpoint below uses
        barrier = threading.Barrier(args.tasks)
        problems: Counter[str] = Counter()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.tasks) as pool:
            futures = [
                pool.submit(run_task, f"{root}/{i}", i, args.saves, barrier, options)
                for i in range(args.tasks)
            ]
            for fut in futures:
                try:
                    found = fut.result()
                except Exception as exc:  # an error is a result here: count it
                    found = f"{type(exc).__name__}: {exc}"[:120]
                if found is not None:
                    problems[found] += 1
        took = time.perf_counter() - started
    saves = args.tasks * args.saves
    total = sum(calls.values())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python ", end="")
    print(f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{args.tasks} tasks x {args.saves} saves + 1 load each, all started at once, ", end="")
    print(f"{args.pool} HTTP connections")
    print()
    print("| measure | value | target |")
    print("|---|---:|---|")
    errors = sum(n for p, n in problems.items() if not p.startswith(("torn", "no snapshot")))
    torn = sum(problems.values()) - errors
    print(f"| errors | {errors} | 0 {'ok' if not errors else 'MISSED'} |")
    print(f"| torn, wrong or missing snapshots | {torn} | 0 {'ok' if not torn else 'MISSED'} |")
    print(f"| total time | {took:.1f} s | |")
    print(f"| saves per second | {saves / took:.0f} | |")
    print(f"| storage calls retried by the library | {sum(retries.count.values())} | |")
    print(f"| HTTP requests | {total} | |")
    for op, n in sorted(calls.items()):
        print(f"| {op} | {n} | |")
    print(f"| requests per task (save x {args.saves} + load) | {total / args.tasks:.2f} | |")
    for why, n in retries.count.most_common(5):
        print(f"- retried {n} x: {why}")
    for problem, n in problems.most_common(5):
        print(f"- {n} x {problem}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
