"""Peak memory of a folder save+load as the folder grows: it must stay flat.

Each size runs in a fresh subprocess that saves a folder of random data (one large file
plus 100 small ones) with ``Checkpoint`` and loads it back, then reports its peak resident
set size (``ru_maxrss``). The baseline row is the same subprocess importing resumable and
doing nothing. Run: ``python benchmarks/memory.py [--sizes 64,1024] [--store URL]``
(sizes in MiB; the store defaults to a local temp folder; S3 works with an ``s3://`` URL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from resumable import Checkpoint
folder, store = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if folder != "-":
    with Checkpoint(store) as cp:
        cp.save_sync(folder)
        root = cp.load_sync()
        assert root is not None
print(json.dumps({
    "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "seconds": time.perf_counter() - start,
}))
"""

MiB = 1 << 20


def make_folder(root: Path, size_mib: int) -> None:
    root.mkdir(parents=True)
    for i in range(100):
        (root / f"small-{i:03d}.bin").write_bytes(os.urandom(4096))
    with (root / "weights.bin").open("wb") as f:
        block = os.urandom(MiB)
        for i in range(size_mib):
            # Vary each MiB cheaply so that nothing deduplicates or compresses.
            f.write(i.to_bytes(8, "little") + block[8:])


def run_child(folder: str, store: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, folder, store], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,1024", help="folder sizes in MiB")
    parser.add_argument("--store", default=None, help="store URL prefix (default: temp folder)")
    parser.add_argument("--dir", default=None, help="where to build folders")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resumable-mem-", dir=args.dir))
    try:
        base = run_child("-", str(work / "unused"))
        print("| folder | peak RSS | over import | save+load |")
        print("|---:|---:|---:|---:|")
        print(f"| (import only) | {base['peak_kib'] / 1024:.0f} MiB | | |")
        for size in (int(s) for s in args.sizes.split(",")):
            folder = work / f"folder-{size}"
            make_folder(folder, size)
            store = (
                f"{args.store.rstrip('/')}/mem-{size}-{time.time_ns()}"
                if args.store
                else str(work / f"store-{size}")
            )
            res = run_child(str(folder), store)
            extra = (res["peak_kib"] - base["peak_kib"]) / 1024
            print(
                f"| {size} MiB | {res['peak_kib'] / 1024:.0f} MiB | {extra:.0f} MiB | "
                f"{res['seconds']:.1f} s |"
            )
            shutil.rmtree(folder)
            if not args.store:
                shutil.rmtree(work / f"store-{size}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
