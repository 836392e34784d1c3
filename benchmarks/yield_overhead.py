"""What a ``yield`` costs inside ``@resumable``.

1. Time per yield that is not persisted (``every=10**9``) against the same generator
   undecorated, driven by a plain ``for`` loop. Target: at most 1 microsecond added.
2. Snapshots per second for a small state persisted on every yield, to a local store, with
   synchronous saves and with ``background=True`` (where the loop only hands the pickled state
   to the worker; newer snapshots replace waiting ones, so fewer are written).

Run: ``python benchmarks/yield_overhead.py [--yields N]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from resumable import resumable


def plain(n: int, state: int = 0) -> Generator[int, None, int]:
    for i in range(state, n):  # noqa: UP028 - one yield statement per step, as tasks do
        yield i
    return n


def drive_plain(n: int) -> None:
    for _ in plain(n):
        pass


def best_of(fn: Callable[[], Any], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yields", type=int, default=1_000_000)
    parser.add_argument("--snapshots", type=int, default=2_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resumable-yield-"))
    try:
        n = args.yields
        quiet = resumable(state=0, store=str(work / "q"), every=10**9)(plain)
        base = best_of(lambda: drive_plain(n))
        decorated = best_of(lambda: quiet(n))
        added = (decorated - base) / n * 1e6
        print("| measure | value | target |")
        print("|---|---:|---:|")
        print(f"| undecorated yield | {base / n * 1e9:.0f} ns | |")
        print(f"| decorated, not persisted | {decorated / n * 1e9:.0f} ns | |")
        verdict = "ok" if added <= 1.0 else "MISSED"
        print(f"| added per non-persisted yield | {added:.3f} us | <= 1 us {verdict} |")
        m = args.snapshots
        rates = {}
        for mode in (False, True):
            task = resumable(state=0, store=str(work / f"s{mode}"), background=mode)(plain)
            runs = [best_of(lambda task=task: task(m), runs=1) for _ in range(3)]
            rates[mode] = m / statistics.median(runs)
        print(f"| yields/s, persist every yield, sync | {rates[False]:,.0f} | |")
        print(f"| yields/s, persist every yield, background | {rates[True]:,.0f} | |")
        print(f"| background speed-up | {rates[True] / rates[False]:.1f}x | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
