"""Incremental folder snapshots against whole-folder archives, in the same run.

Three folders of ``--size-mib`` (default 1,024) of random bytes, each changed by 1 % between
two saves:

- ``small files``: 64 KiB files, 1 % of them rewritten;
- ``large files``: eight files, 1 % of the bytes rewritten in place in one of them;
- ``appended``: one file, 1 % appended;
- ``inserted``: one file, 1 % inserted in its middle (no target: fixed blocks store the
  shifted half again; content-defined chunks would not, at a cost on every save).

Each is saved with ``Storage(incremental=False)`` (the archive: one ``.tar.gz`` per snapshot,
today's format before incremental snapshots, the baseline) and with ``incremental=True``, on
local disk: the full first save, then the second save after the change (bytes it added to
the store, and its time), a restore of the second snapshot into a new folder, and the store's
size with ``keep=2`` once retention collected what the first snapshot alone used. Then the
``small files`` case on the S3 test server (when the ``weed`` binary is there), with its
HTTP requests.

Targets, each marked ok or MISSED: a second save after a 1 % change writes at most 3 % of the
folder's bytes and takes at most 15 % of a full archive save; a full incremental save is no
slower than a full archive save (at most 1.10 times); the store with ``keep=2`` holds at most
1.1 times the folder plus what changed.

Run: ``python benchmarks/incremental.py [--size-mib N] [--no-s3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resumable import Checkpoint, Storage
from resumable._tree import RACY_NS
from resumable.testing import store

MIB = 1 << 20
SMALL = 64 * 1024


def _requests_module() -> Any:
    """benchmarks/requests.py (named like a library: loaded by path): the S3 server, counting."""
    spec = importlib.util.spec_from_file_location(
        "bench_requests", Path(__file__).with_name("requests.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n


@dataclass
class Case:
    """A folder, and the 1 % change made to it between the two saves."""

    name: str
    make: Callable[[Path, int], None]
    change: Callable[[Path, int], int]  # returns the bytes changed


def _make_small(root: Path, size: int) -> None:
    for i in range(size // SMALL):
        (root / f"d{i % 64:02d}").mkdir(exist_ok=True)
        (root / f"d{i % 64:02d}" / f"f{i:06d}.bin").write_bytes(os.urandom(SMALL))


def _change_small(root: Path, size: int) -> int:
    files = sorted(root.rglob("*.bin"))
    step = 100
    for f in files[::step]:
        f.write_bytes(os.urandom(SMALL))
    return len(files[::step]) * SMALL


def _make_large(root: Path, size: int) -> None:
    for i in range(8):
        _random_file(root / f"shard-{i}.bin", size // 8)


def _change_large(root: Path, size: int) -> int:
    changed = size // 100
    with (root / "shard-3.bin").open("r+b") as f:
        f.seek(size // 8 // 3 + 12345)  # not on a block boundary
        f.write(os.urandom(changed))
    return changed


def _make_appended(root: Path, size: int) -> None:
    _random_file(root / "log.bin", size)


def _change_appended(root: Path, size: int) -> int:
    changed = size // 100
    with (root / "log.bin").open("ab") as f:
        f.write(os.urandom(changed))
    return changed


def _change_inserted(root: Path, size: int) -> int:
    """1 % inserted in the middle of a file: what fixed blocks pay for (the rest shifts)."""
    changed = size // 100
    path = root / "log.bin"
    data = path.read_bytes()
    middle = len(data) // 2 + 12345
    path.write_bytes(data[:middle] + os.urandom(changed) + data[middle:])
    return changed


CASES = [
    Case("small files", _make_small, _change_small),
    Case("large files", _make_large, _change_large),
    Case("appended", _make_appended, _change_appended),
    Case("inserted", _make_appended, _change_inserted),
]
#: Cases whose targets are not pinned: what the choice of fixed blocks costs, shown as it is.
UNTARGETED = {"inserted"}


@dataclass
class Result:
    """What one mode measured on one folder."""

    full_s: float
    second_s: float
    second_bytes: int
    restore_s: float
    kept_bytes: int


def _age(root: Path) -> None:
    """Date the folder's files an hour back: a folder the task keeps, not one just written.

    A file modified or changed (its mtime or ctime) within two seconds of the previous save
    is read again (it may have changed within the clock's resolution): a folder written just
    before its first save would be read whole by the second one too. Dating a file changes
    its ctime, which cannot be set: the folder is then left alone until that is two seconds
    old, as a folder a task keeps is.
    """
    ns = time.time_ns() - 3600 * 10**9
    for path in root.rglob("*"):
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    newest = max(p.lstat().st_ctime_ns for p in root.rglob("*"))
    time.sleep(max(0.0, (newest + RACY_NS - time.time_ns()) / 1e9 + 0.05))


def _timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, from a clean page cache: no mode pays for another's writeback."""
    os.sync()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(
    case: Case, work: Path, size: int, incremental: bool, url: str | None = None
) -> tuple[Result, int]:
    """One mode on one folder: full save, change, second save, restore, kept size."""
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    case.make(src, size)
    _age(src)
    local = url is None
    target = str(work / "store") if local else url
    assert target is not None
    with Checkpoint(target, storage=Storage(incremental=incremental, keep=10)) as cp:
        full = _timed(lambda: cp.save_sync(src))
        cp.flush_sync()
        before = _tree_size(Path(target)) if local else 0
        changed = case.change(src, size)
        second = _timed(lambda: cp.save_sync(src))
        cp.flush_sync()
        added = _tree_size(Path(target)) - before if local else 0
    with Checkpoint(target, storage=Storage(incremental=incremental)) as cp:
        restore = _timed(cp.load_sync)
    kept = 0
    if local:
        shutil.rmtree(target)
        case_src = work / "src"
        shutil.rmtree(case_src)
        case_src.mkdir()
        case.make(case_src, size)
        _age(case_src)
        with Checkpoint(target, storage=Storage(incremental=incremental, keep=2)) as cp:
            if incremental:
                store(cp).packs.grace = 0.0  # the steady state: the grace period has passed
            cp.save_sync(case_src)
            case.change(case_src, size)
            cp.save_sync(case_src)
            case.change(case_src, size)
            cp.save_sync(case_src)
            cp.flush_sync()
        kept = _tree_size(Path(target))
        shutil.rmtree(target)
    return Result(full, second, added, restore, kept), changed


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def run_local(size: int, cases: list[Case]) -> None:
    print(f"Local disk, folders of {size / MIB:.0f} MiB, 1 % changed between saves")
    header = (
        f"{'folder':<12} {'mode':<12} {'full save':>10} {'2nd save':>9} {'2nd bytes':>10} "
        f"{'restore':>8} {'keep=2 store':>13}"
    )
    print(header)
    verdicts: list[str] = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="bench-incremental-") as scratch:
            work = Path(scratch)
            tar, changed = measure(case, work, size, incremental=False)
            inc, _ = measure(case, work, size, incremental=True)
        for mode, r in (("archive", tar), ("incremental", inc)):
            print(
                f"{case.name:<12} {mode:<12} {r.full_s:>9.2f}s {r.second_s:>8.2f}s "
                f"{r.second_bytes / MIB:>7.1f}MiB {r.restore_s:>7.2f}s "
                f"{r.kept_bytes / MIB:>10.0f}MiB"
            )
        folder = size + 2 * changed  # what the kept snapshots hold, plus what changed
        checks = [
            ("2nd save bytes / folder", inc.second_bytes / size, 0.03),
            ("2nd save time / full archive save", inc.second_s / tar.full_s, 0.15),
            ("full save: incremental / archive", inc.full_s / tar.full_s, 1.10),
            ("keep=2 store / (folder + changed)", inc.kept_bytes / folder, 1.10),
        ]
        for what, ratio, target in checks:
            if case.name in UNTARGETED and not what.startswith("full save"):
                print(f"    {case.name}: {what} = {ratio:.3f} (no target: fixed blocks)")
                continue
            verdict = _verdict(ratio <= target)
            verdicts.append(verdict)
            print(f"    {case.name}: {what} = {ratio:.3f} (target <= {target}) {verdict}")
    print()


def run_s3(size: int, bucket: str, requests: Any) -> None:
    print(f"S3 test server (SeaweedFS on loopback), small files, {size / MIB:.0f} MiB")
    case = CASES[0]
    print(f"{'mode':<12} {'full save':>10} {'2nd save':>9} {'restore':>8}   2nd save requests")
    for incremental in (False, True):
        url = f"{bucket}/bench-{os.urandom(4).hex()}"
        with tempfile.TemporaryDirectory(prefix="bench-incremental-") as scratch:
            work = Path(scratch)
            src = work / "src"
            src.mkdir()
            case.make(src, size)
            _age(src)
            with requests.counted_checkpoint(url, http=True, incremental=incremental, keep=10) as (
                cp,
                calls,
            ):
                full = _timed(functools.partial(cp.save_sync, src))
                cp.flush_sync()
                case.change(src, size)
                calls.clear()
                second = _timed(functools.partial(cp.save_sync, src))
                cp.flush_sync()
                counted = dict(calls)
            with Checkpoint(url, storage=Storage(incremental=incremental)) as cp:
                restore = _timed(cp.load_sync)
        mode = "incremental" if incremental else "archive"
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counted.items()))
        print(f"{mode:<12} {full:>9.2f}s {second:>8.2f}s {restore:>7.2f}s   {shown}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="folder size (MiB)")
    parser.add_argument("--s3-size-mib", type=int, default=256, help="folder size on S3 (MiB)")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 server")
    parser.add_argument("--case", choices=[c.name for c in CASES], action="append")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.case or c.name in args.case]
    run_local(args.size_mib * MIB, cases)
    if not args.no_s3:
        requests = _requests_module()
        with contextlib.ExitStack() as stack:
            bucket = stack.enter_context(requests.s3_server())
            if bucket is not None:
                run_s3(args.s3_size_mib * MIB, bucket, requests)


if __name__ == "__main__":
    main()
