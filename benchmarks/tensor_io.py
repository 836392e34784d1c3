"""Tensor state: a ``@resumable`` snapshot of model + Adam state against ``torch.save``.

The state is an MLP's ``state_dict()`` and its Adam optimizer's (after one step, so the
moments exist): 144 MB by default, 1/16 of that with ``--quick``. Measured in the same run,
interleaved, on local disk:

- **sync save**: the time a ``yield`` of the state blocks the task (``background=False``),
  against ``torch.save`` to a temp file in the same folder + fsync + ``os.replace`` + fsync of
  the folder;
- **load**: a call of a task that resumes from that snapshot (listing, manifest, payload
  verified, state unpickled), against ``torch.load`` of the baseline's file;
- **background yield**: the time a ``yield`` blocks with ``background=True`` (the state is
  pickled at the yield, its tensors copied), against our sync save: the median over the
  yields of one call after the first (which copies into new memory; later ones reuse the
  buffers of the previous snapshot once it is written), the first one reported apart;
- **peak extra memory** during a sync save: the process's resident memory, sampled every
  millisecond, above what it was before the save, against the state's size.

Prints a Markdown table with each target marked ok / MISSED.
Run: ``python benchmarks/tensor_io.py [--quick] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
import torch
from torch import nn

from resumable import ctx, resumable

MB = 1_000_000
_PAGE = os.sysconf("SC_PAGE_SIZE")


def make_state(total_bytes: int) -> dict[str, Any]:
    """Model + Adam state of about ``total_bytes`` (float32: weights, exp_avg, exp_avg_sq)."""
    params = total_bytes // 4 // 3
    layers = 3
    width = int((params / layers) ** 0.5)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, width)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}


def state_size(state: dict[str, Any]) -> int:
    """Bytes of tensor data in the state."""
    total = 0
    stack: list[Any] = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


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
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

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


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Ours:
    """A generator task that yields the state on demand, timing how long each yield blocks."""

    def __init__(self, store: Path, state: dict[str, Any], background: bool) -> None:
        self.state = state
        self.blocked: list[float] = []
        self.peaks: list[int] = []
        self.rounds = 0
        self.key = "bg" if background else "sync"

        @resumable(state=None, store=store, key=self.key, background=background, on_success="keep")
        def task(state: Any = None) -> Iterator[Any]:
            for _ in range(self.rounds):
                ctx().checkpoint.flush_sync()  # the training steps between two snapshots
                with peak_rss() as extra:
                    started = time.perf_counter()
                    yield self.state
                    self.blocked.append(time.perf_counter() - started)
                self.peaks.append(extra[0])

        self.task = task

    def save(self, rounds: int) -> None:
        """Run the task: ``rounds`` yields of the state."""
        self.rounds = rounds
        self.task()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 9 MB state, 2 rounds (CI)")
    parser.add_argument("--repeat", type=int, default=None, help="rounds per measure")
    args = parser.parse_args()
    size = 144 * MB // (16 if args.quick else 1)
    repeat = args.repeat or (2 if args.quick else 5)

    state = make_state(size)
    nbytes = state_size(state)
    root = Path(tempfile.mkdtemp(prefix="tensor-io-", dir=os.getcwd()))
    store = root / "store"
    base_file = root / "baseline" / "state.pt"
    base_file.parent.mkdir(parents=True)
    sync = Ours(store, state, background=False)
    background = Ours(store, state, background=True)

    @resumable(state=None, store=store, key="sync", on_success="keep")
    def resume(state: Any = None) -> Any:
        return state

    base_save: list[float] = []
    base_load: list[float] = []
    base_peak: list[int] = []
    our_load: list[float] = []
    loaded: Any = None
    for _ in range(repeat):  # interleaved: a slow moment of the machine hits both
        with peak_rss() as extra:
            base_save.append(timed(lambda: torch_save(state, base_file)))
        base_peak.append(extra[0])
        sync.save(1)
        base_load.append(timed(lambda: torch.load(base_file)))
        started = time.perf_counter()
        loaded = resume()
        our_load.append(time.perf_counter() - started)
    # One run of many yields, as in training: the first copies into new memory, the later
    # ones into the buffers of the previous snapshot once it is written.
    background.save(repeat + 1)
    cold = background.blocked.pop(0)
    held = background.peaks.pop(0)  # the copy, kept for the next capture to reuse
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items()), (
        "the loaded state differs"
    )
    whole = base_file.read_bytes()
    started = time.perf_counter()
    hashlib.sha256(whole).hexdigest()
    sha = time.perf_counter() - started
    started = time.perf_counter()
    blake3.blake3(whole).hexdigest()
    b3 = time.perf_counter() - started
    del whole

    med = statistics.median
    save_ratio = med(sync.blocked) / med(base_save)
    load_ratio = med(our_load) / med(base_load)
    bg_ratio = med(background.blocked) / med(sync.blocked)
    mem_ratio = max(sync.peaks) / nbytes

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}; state {nbytes / MB:.0f} MB "
        f"(model + Adam), {repeat} rounds, medians; the file's blake3 (the digest new "
        f"snapshots use) {b3:.3f} s, its sha256 {sha:.3f} s"
    )
    print()
    print("| measure | resumable | baseline | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| sync save (yield blocks) | {med(sync.blocked):.3f} s | {med(base_save):.3f} s "
        f"(torch.save + fsync + replace) | {save_ratio:.2f} | <= 1.3 {mark(save_ratio <= 1.3)} |"
    )
    print(
        f"| load (resuming call) | {med(our_load):.3f} s | {med(base_load):.3f} s "
        f"(torch.load) | {load_ratio:.2f} | <= 2.0 {mark(load_ratio <= 2.0)} |"
    )
    print(
        f"| background yield blocks (steady) | {med(background.blocked):.3f} s | "
        f"{med(sync.blocked):.3f} s (our sync save) | {bg_ratio:.2f} | "
        f"<= 0.25 {mark(bg_ratio <= 0.25)} |"
    )
    print(
        f"| first background yield (new memory) | {cold:.3f} s | {med(sync.blocked):.3f} s | "
        f"{cold / med(sync.blocked):.2f} | |"
    )
    print(
        f"| peak extra memory, sync save | {max(sync.peaks) / MB:.1f} MB | {nbytes / MB:.0f} MB "
        f"(state; torch.save: {max(base_peak) / MB:.1f} MB) | {mem_ratio:.2f} | "
        f"<= 0.5 {mark(mem_ratio <= 0.5)} |"
    )
    print(
        f"| extra memory, background (first yield; kept) | {held / MB:.1f} MB | "
        f"{nbytes / MB:.0f} MB (state) | {held / nbytes:.2f} | (a copy) |"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
