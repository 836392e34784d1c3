"""Restore time of a folder of many small files against ``tarfile.extractall(filter="data")``.

A folder of ``--files`` files of 100 bytes each (1,000 per subfolder) is saved once with
``Checkpoint`` on local disk; each run then restores it into a fresh workspace
(``load_sync``), against the baseline of extracting an uncompressed tar of the same folder,
read from local disk, with ``tarfile``'s ``data`` filter. Runs alternate; medians are
printed with the ratio ours / baseline against the target (<= 1.5x).
Run: ``python benchmarks/many_files.py [--files 100000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from resumable import Checkpoint

TARGET = 1.5


def make_folder(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:07d}.txt").write_bytes(b"x" * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000, help="number of files")
    parser.add_argument("--repeat", type=int, default=3, help="runs (median)")
    parser.add_argument("--dir", default=None, help="where to work (default: a temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resumable-bench-", dir=args.dir))
    try:
        src = work / "src"
        make_folder(src, args.files)
        with tarfile.open(work / "plain.tar", "w") as tar:
            tar.add(src, arcname=".")
        start = time.perf_counter()
        with Checkpoint(work / "store") as cp:
            cp.save_sync(src)
        saved = time.perf_counter() - start

        def ours() -> float:
            with Checkpoint(work / "store") as cp:
                start = time.perf_counter()
                assert cp.load_sync() is not None
                return time.perf_counter() - start

        def baseline() -> float:
            out = Path(tempfile.mkdtemp(dir=work))
            start = time.perf_counter()
            with tarfile.open(work / "plain.tar") as tar:
                tar.extractall(out, filter="data")
            took = time.perf_counter() - start
            shutil.rmtree(out)
            return took

        times_ours, times_base = [], []
        for _ in range(args.repeat):
            times_ours.append(ours())
            times_base.append(baseline())
        mine, theirs = statistics.median(times_ours), statistics.median(times_base)
        verdict = "ok" if mine / theirs <= TARGET else "MISSED"
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, ", end="")
        print(f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
        print(f"save of the folder (once): {saved:.2f} s")
        print()
        print("| case | resumable load (s) | tarfile extractall (s) | ratio | target |")
        print("|---|---:|---:|---:|---|")
        print(
            f"| {args.files:,} files x 100 B | {mine:.2f} | {theirs:.2f} | "
            f"{mine / theirs:.2f} | <= {TARGET} {verdict} |"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
