"""Save+load time of ``Checkpoint`` on local disk against the plainest equally durable code.

Cases: (a) 8 bytes given as ``bytes`` and read back from the loaded payload, (a') a file of 8
bytes, (b) a 100 MiB file, (c) a folder of 1,000 x 4 KiB files plus one 100 MiB file, all
random data. Baselines, run in the same process and interleaved with ours:

- (a) bytes: written to a temp name, fsync, ``os.replace``, fsync of the folder; read back
  with ``read_bytes`` (the plain durable write+read);
- file: copy to a temp name in the destination folder, fsync, ``os.replace``, fsync
  the folder; load with ``shutil.copyfile`` into a fresh folder;
- folder: an uncompressed ``tarfile`` archive written the same durable way; load with
  ``extractall(filter="data")``.

Prints a Markdown table of medians, the ratio ours / baseline, and the peak Python memory
(tracemalloc) of our save+load. Run: ``python benchmarks/checkpoint_io.py [--repeat N]``.
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
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from resumable import Checkpoint

MiB = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(dest)
    fsync_dir(dest.parent)


def durable_tar(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        tar.add(src, arcname=".")
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(dest)
    fsync_dir(dest.parent)


def durable_bytes(data: bytes, store: Path) -> Callable[[], None]:
    def run() -> None:
        tmp = store / "snap.tmp"
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(store / "snap")
        fsync_dir(store)
        assert (store / "snap").read_bytes() == data

    return run


def baseline(src: Path | bytes, store: Path, is_dir: bool) -> Callable[[], None]:
    if isinstance(src, bytes):
        return durable_bytes(src, store)

    def run() -> None:
        out = Path(tempfile.mkdtemp(dir=store.parent))
        if is_dir:
            durable_tar(src, store / "snap.tar")
            with tarfile.open(store / "snap.tar") as tar:
                tar.extractall(out, filter="data")
        else:
            durable_copy(src, store / "snap")
            shutil.copyfile(store / "snap", out / "payload")
        shutil.rmtree(out)

    return run


def ours(src: Path | bytes, store: Path) -> Callable[[], None]:
    cp = Checkpoint(store)

    def run() -> None:
        cp.save_sync(src)
        root = cp.load_sync()
        assert root is not None
        if isinstance(src, bytes):
            assert (root / "payload").read_bytes() == src

    return run


def measure(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_memory(fn: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def make_cases(work: Path) -> list[tuple[str, Path | bytes, bool, float]]:
    small = work / "small"
    small.write_bytes(os.urandom(8))
    big = work / "big.bin"
    big.write_bytes(os.urandom(100 * MiB))
    folder = work / "folder"
    (folder / "shards").mkdir(parents=True)
    for i in range(1000):
        (folder / "shards" / f"{i:04d}.bin").write_bytes(os.urandom(4096))
    shutil.copyfile(big, folder / "weights.bin")
    return [
        ("(a) 8 bytes", os.urandom(8), False, 1.5),
        ("(a') a file of 8 bytes", small, False, 2.0),
        ("(b) 100 MiB file", big, False, 1.15),
        ("(c) 1,000 x 4 KiB + 100 MiB folder", folder, True, 1.5),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per case (median)")
    parser.add_argument("--dir", default=None, help="where to work (default: a temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resumable-bench-", dir=args.dir))
    try:
        machine = f"{platform.machine()}, {os.cpu_count()} cores"
        print(f"machine: {machine}, Python {platform.python_version()}")
        print()
        print(
            "| case | resumable (s) | baseline (s) | ratio | pair ratios (p10-p90) | target "
            "| peak memory |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, src, is_dir, target in make_cases(work):
            store_ours = work / f"store-{name[:4]}-ours"
            store_base = work / f"store-{name[:4]}-base"
            store_base.mkdir()
            run_ours = ours(src, store_ours)
            run_base = baseline(src, store_base, is_dir)
            repeat = args.repeat * (50 if "bytes" in name else 1)
            run_ours()
            run_base()  # warm the page cache for both
            times_ours, times_base = [], []
            for _ in range(repeat):
                times_ours.append(measure(run_ours))
                times_base.append(measure(run_base))
            mine, theirs = statistics.median(times_ours), statistics.median(times_base)
            # Spread: the ratios of the pairs (ours and the baseline back to back), lowest
            # and highest decile, so that one slow moment of the machine does not hide.
            pairs = sorted(o / b for o, b in zip(times_ours, times_base, strict=True))
            low, high = pairs[len(pairs) // 10], pairs[-1 - len(pairs) // 10]
            peak = peak_memory(run_ours)
            verdict = "ok" if mine / theirs <= target else "MISSED"
            print(
                f"| {name} | {mine:.4f} | {theirs:.4f} | {mine / theirs:.2f} | "
                f"{low:.2f}-{high:.2f} | <= {target} {verdict} | {peak / MiB:.1f} MiB |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
