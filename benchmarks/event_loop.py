"""How long the async API stalls the event loop: the worst tick during a large save and load.

A ticker coroutine asks for a wake-up every millisecond while ``await cp.save(data)`` and then
``await cp.load()`` run on local disk; a tick's lateness is how much later than asked it woke.
The I/O itself runs on worker threads, so what stalls the loop is work that holds the GIL
there (copies of whole payloads, Python loops over large buffers). Baseline, in the same run:
the same ticker beside ``asyncio.sleep`` for as long as the save and load took (the machine's
own scheduling noise).

Target: the worst tick at most 20 ms late. Medians and spreads over ``--repeat`` runs.
Run: ``python benchmarks/event_loop.py [--mib 300] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from resumable import Checkpoint

MiB = 1 << 20
TARGET = 0.020


async def worst_tick(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(seconds ``work`` took, the latest a 1 ms tick woke meanwhile)."""
    done = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - asked - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # the ticker runs before the work starts
    started = time.perf_counter()
    await work()
    took = time.perf_counter() - started
    done.set()
    await tick
    return took, worst


async def one_run(store: Path, data: bytearray) -> dict[str, tuple[float, float]]:
    with Checkpoint(store) as cp:
        save = await worst_tick(lambda: cp.save(data))
        load = await worst_tick(cp.load)
        root = cp.path
        assert (root / "payload").stat().st_size == len(data)
    idle = await worst_tick(lambda: asyncio.sleep(save[0] + load[0]))
    return {"save": save, "load": load, "idle (baseline)": idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=300, help="payload size (MiB)")
    parser.add_argument("--repeat", type=int, default=5, help="runs (medians, spreads)")
    parser.add_argument("--dir", default=None, help="where to work (default: a temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resumable-loop-", dir=args.dir))
    data = bytearray(os.urandom(MiB)) * args.mib
    runs: list[dict[str, tuple[float, float]]] = []
    try:
        for i in range(args.repeat):
            runs.append(asyncio.run(one_run(work / f"store-{i}", data)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}; "
        f"{args.mib} MiB bytearray, {args.repeat} runs"
    )
    print()
    print("| step | time (s), median | worst tick (ms), median | spread (ms) | target |")
    print("|---|---:|---:|---:|---|")
    for step in runs[0]:
        took = statistics.median(r[step][0] for r in runs)
        ticks = [r[step][1] * 1000 for r in runs]
        mid = statistics.median(ticks)
        target = (
            ""
            if step.startswith("idle")
            else (f"<= {TARGET * 1000:.0f} ms {'ok' if mid <= TARGET * 1000 else 'MISSED'}")
        )
        print(f"| {step} | {took:.3f} | {mid:.1f} | {min(ticks):.1f}-{max(ticks):.1f} | {target} |")


if __name__ == "__main__":
    main()
