"""Kill storm on demand: ``python tests/stress/kill_storm.py --kills 1000 [--dir]``.

Runs the storm of tests/store/test_kill.py at any size and prints ``K kills, T torn`` (then how
far the counter got, where the kills landed, the sizes of the states loaded, the time taken and
every problem). Pickled states range from 1 KiB to 8 MiB (bytes, and NumPy arrays when NumPy is
installed); ``--small-states`` keeps them to 1-100 KiB of bytes. Exits 1 unless T is 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable, for tests.stress.storm.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.stress.storm import StormReport, run_storm


def main(argv: list[str] | None = None) -> int:
    """Run one storm and report it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000, help="how many SIGKILLs (1000)")
    parser.add_argument("--dir", action="store_true", help="Dir state instead of pickled state")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random delays (1)")
    parser.add_argument(
        "--small-states",
        action="store_true",
        help="pickled states of 1-100 KiB of bytes, instead of up to 8 MiB with arrays",
    )
    parser.add_argument(
        "--poison-after",
        type=int,
        default=3,
        help="poison_after=N for @resumable (default: 3, the library's default)",
    )
    args = parser.parse_args(argv)

    def progress(report: StormReport) -> None:
        if report.kills % 100 == 0:
            print(
                f"... {report.kills} kills, {report.torn} torn, counter {report.counter}",
                file=sys.stderr,
                flush=True,
            )

    with tempfile.TemporaryDirectory(prefix="kill-storm-") as work:
        report = run_storm(
            Path(work),
            kills=args.kills,
            dir_state=args.dir,
            seed=args.seed,
            poison_after=args.poison_after,
            progress=progress,
            big_states=not args.small_states,
        )
    for line in report.lines():
        print(line)
    return 1 if report.torn else 0


if __name__ == "__main__":
    sys.exit(main())
