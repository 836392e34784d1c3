"""A large tensor state (960 MiB by default): resume, save and background memory, against torch.

Measured in one process, interleaved round by round, on local disk:

- **resume**: a call of a ``@resumable`` task that resumes from the snapshot (listing,
  manifest, payload read and verified, tensors rebuilt), against ``torch.load`` of the same
  tensors saved by ``torch.save``; target: at most 1.3 times, median over the rounds;
- **save**: the time a ``yield`` of the state blocks (sync), against
  ``torch.distributed.checkpoint.save`` (one process, its own fsyncs) of the same tensors,
  and ``torch.save`` + fsync + ``os.replace``, each from a synced page cache (``os.sync()``
  first: no save pays for the writeback of the one before); target: no slower than
  ``torch.distributed.checkpoint``;
- **background memory**: a ``background=True`` task yields the state 4 times in a row, each
  yield due while the previous save is still being written; the peak of the process's
  resident memory above what it was before the call, sampled every millisecond, against the
  state's size; target: at most one extra copy (1.1 times the state, for what else moves).

Medians and spreads (min-max); the machine is shared, so run it several times.
Run: ``python benchmarks/large_state.py [--mib 960] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from resumable import resumable

MiB = 1 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@contextlib.contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Yields a list that holds, afterwards, the peak RSS above the starting RSS."""
    start = rss()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.001):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = [0]
    try:
        yield out
    finally:
        stop.set()
        sampler.join()
        out[0] = max(peak[0], rss()) - start


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def torch_save(state: dict[str, Any], dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def dcp_save(state: dict[str, Any], folder: Path) -> None:
    import torch.distributed.checkpoint as dcp

    shutil.rmtree(folder, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group: saving in one process"
        dcp.save(state, checkpoint_id=str(folder))


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=960, help="state size (MiB)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds")
    parser.add_argument("--dir", default=None, help="where to work (default: here)")
    args = parser.parse_args()
    torch.manual_seed(0)
    tensors = 8
    state = {f"w{i}": torch.randn(args.mib * MiB // 4 // tensors) for i in range(tensors)}
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    root = Path(tempfile.mkdtemp(prefix="large-state-", dir=args.dir or os.getcwd()))
    store = root / "store"
    blocked: list[float] = []
    rounds = [1]

    @resumable(state=None, store=store, key="sync", on_success="keep")
    def save_task(state: Any = None) -> Iterator[Any]:
        for _ in range(rounds[0]):
            started = time.perf_counter()
            yield big
            blocked.append(time.perf_counter() - started)

    @resumable(state=None, store=store, key="sync", on_success="keep")
    def resume(state: Any = None) -> Any:
        return state

    @resumable(state=None, store=store, key="bg", background=True, on_success="keep")
    def background(state: Any = None) -> Iterator[Any]:
        for _ in range(4):
            yield big

    big = state
    base_file = root / "state.pt"
    ours_load: list[float] = []
    torch_load: list[float] = []
    dcp_times: list[float] = []
    torch_saves: list[float] = []
    try:
        for _ in range(args.repeat):  # interleaved: a slow moment of the machine hits all
            # Each save starts from a synced page cache: none pays for another's writeback.
            os.sync()
            save_task()
            os.sync()
            dcp_times.append(timed(lambda: dcp_save(state, root / "dcp")))
            os.sync()
            torch_saves.append(timed(lambda: torch_save(state, base_file)))
            loaded: Any = None

            def ours() -> None:
                nonlocal loaded
                loaded = resume()

            ours_load.append(timed(ours))
            assert all(torch.equal(loaded[k], v) for k, v in state.items()), "loaded differs"
            loaded = None
            torch_load.append(timed(lambda: torch.load(base_file)))
        with peak_rss() as extra:
            background()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = statistics.median
    load_ratio = med(ours_load) / med(torch_load)
    save_ratio = med(blocked) / med(dcp_times)
    mem_ratio = extra[0] / nbytes

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.1f}; state {nbytes / MiB:.0f} MiB in {tensors} tensors, "
        f"{args.repeat} rounds: medians (min-max)"
    )
    print()
    print("| measure | resumable | baseline | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| resume (a resuming call) | {spread(ours_load)} | {spread(torch_load)} (torch.load) "
        f"| {load_ratio:.2f} | <= 1.3 {mark(load_ratio <= 1.3)} |"
    )
    print(
        f"| save (a sync yield blocks) | {spread(blocked)} | {spread(dcp_times)} "
        f"(torch.distributed.checkpoint.save) | {save_ratio:.2f} | "
        f"<= 1.0 {mark(save_ratio <= 1.0)} |"
    )
    print(
        f"| save, other baseline | | {spread(torch_saves)} (torch.save + fsync + replace) | "
        f"{med(blocked) / med(torch_saves):.2f} | |"
    )
    print(
        f"| background: peak extra memory, 4 yields in a row | {extra[0] / MiB:.0f} MiB | "
        f"{nbytes / MiB:.0f} MiB (the state) | {mem_ratio:.2f} | <= 1.1 {mark(mem_ratio <= 1.1)} |"
    )


if __name__ == "__main__":
    main()
