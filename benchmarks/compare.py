"""resumable against flyte's Checkpoint, raw s3fs and plain durable code, in one run.

What is measured, on local disk and on a real S3 server (SeaweedFS on 127.0.0.1, started and
stopped by this script through ``tests.servers.SeaweedS3``), for three payloads of random
data — (a) 8 bytes, (b) a 100 MiB file, (c) a folder of 1,000 x 4 KiB files plus one
100 MiB file — is the time of one save and of one load by:

- ``resumable.Checkpoint(url)``: ``save_sync(data)``, then ``load_sync()``;
- ``flyte.Checkpoint(url, url)`` (``checkpoint_dest`` = ``checkpoint_src`` = the same URL):
  ``save_sync(data)``, then ``load_sync()`` on a new ``flyte.Checkpoint`` (an instance caches
  its first load and never downloads again). Needs the ``benchmark`` extra
  (``pip install -e ".[benchmark]"``); without flyte its rows say "not installed". On S3 it
  is pointed at the server with its own variables ``FLYTE_AWS_ENDPOINT``,
  ``FLYTE_AWS_ACCESS_KEY_ID`` and ``FLYTE_AWS_SECRET_ACCESS_KEY`` (no ``flyte.init``);
- S3 only, raw s3fs: ``put_file`` / ``get_file`` of the same bytes (for (a) an 8-byte
  file). The folder is put as ONE uncompressed tar built in a temp file (not file by file),
  and got back and extracted with ``tarfile``'s ``data`` filter;
- local only, the plainest durable code (as in ``checkpoint_io.py``): a temp file in the
  destination folder, fsync, ``os.replace``, fsync the folder (the folder: an uncompressed
  ``tarfile``); load with ``shutil.copyfile`` (the folder: ``extractall``).

Every library runs in this one process; within each repeat the libraries run one after the
other, in an order rotated from repeat to repeat, so that they share the machine's noise.
After one untimed warm-up run (which also checks what each library restores), the tables show
medians. Ratios are the other library's save+load time divided by resumable's: above 1,
resumable is faster.

Peak memory: each (store, payload, library) also runs in a fresh subprocess (Linux) that
reads its RSS after imports and one warm-up save+load, resets the kernel's high-water mark,
and reads it (``VmHWM``) after one more save+load: "peak RSS" includes the interpreter and
the library's imports, "added" is the peak minus the RSS before. (Not ``ru_maxrss``: a
subprocess inherits its parent's through vfork + exec.)

Background mode (second table): how long ``Checkpoint.save_background_sync(data)`` blocks the
calling loop (it returns after capturing the data) against a ``save_sync(data)`` of the same
payload, for ~1 MiB of bytes and the 100 MiB file, on both stores.

Targets, printed as ok / MISSED: on (c), resumable at least 2.5x faster than flyte's
Checkpoint (save+load); on S3, a 100 MiB save by resumable at least 0.8x the throughput of
s3fs ``put_file``; background saves block less than 5% of a synchronous save's time.

Caveats, also in ``docs/benchmarks.md``: importing ``flyte.storage`` re-registers fsspec's
``s3`` protocol to obstore's fsspec shim (process-wide), so resumable's S3 checkpoints are
built here while s3fs is registered (resumable's supported S3 client); flyte keeps obstore.
The S3 server is started with ``-volume.max=0`` (volumes sized to the free disk) instead of
the test suite's 16 x 64 MB, which several GiB of benchmark writes would fill.

Run from the repository root: ``python benchmarks/compare.py [--repeat N] [--skip-s3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.servers; resumable itself is installed

MiB = 1 << 20
BUCKET = "bench"
Kind = Literal["bytes", "file", "dir"]
Store = Literal["local", "s3"]
LIBS: dict[Store, tuple[str, ...]] = {
    "local": ("resumable", "flyte", "plain"),
    "s3": ("resumable", "flyte", "s3fs"),
}
LABELS = {
    "resumable": "resumable.Checkpoint",
    "flyte": "flyte.Checkpoint",
    "plain": "plain durable (fsync + os.replace / tar)",
    "s3fs": "raw s3fs put_file/get_file (folder: one tar)",
}

# Targets.
FLYTE_SPEEDUP = 2.5  # (c): flyte save+load / resumable save+load
S3_PUT_THROUGHPUT = 0.8  # (b) on S3: s3fs put_file time / resumable save time
BACKGROUND_SHARE = 0.05  # background block time / save_sync time


# -- payloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One payload: its data on disk, and what kind of snapshot it makes."""

    key: str
    title: str
    source: Path
    kind: Kind
    size: int

    def data(self) -> bytes | str:
        """What a checkpoint library is given: the bytes themselves, or a path."""
        return self.source.read_bytes() if self.kind == "bytes" else str(self.source)


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        block = os.urandom(min(size, MiB))
        for i in range(0, size, MiB):
            # Each MiB differs (counter prefix): nothing deduplicates or compresses.
            f.write((i.to_bytes(8, "little") + block[8:])[: size - i])


def make_cases(work: Path) -> list[Case]:
    small = work / "small.bin"
    small.write_bytes(os.urandom(8))
    big = work / "big.bin"
    write_random(big, 100 * MiB)
    folder = work / "folder"
    (folder / "shards").mkdir(parents=True)
    for i in range(1000):
        (folder / "shards" / f"{i:04d}.bin").write_bytes(os.urandom(4096))
    shutil.copyfile(big, folder / "weights.bin")
    return [
        Case("a", "(a) 8 bytes", small, "bytes", 8),
        Case("b", "(b) 100 MiB file", big, "file", 100 * MiB),
        Case("c", "(c) 1,000 x 4 KiB + 100 MiB", folder, "dir", 1000 * 4096 + 100 * MiB),
    ]


def check_restored(case: Case, root: Path) -> None:
    """Raise unless ``root`` holds what ``case`` saved (run once, outside the timings)."""
    if case.kind == "dir":
        weights = root / "weights.bin"
        shards = list((root / "shards").iterdir())
        if weights.stat().st_size != 100 * MiB or len(shards) != 1000:
            raise AssertionError(f"incomplete folder restored at {root}")
        return
    got = hashlib.sha256((root / "payload").read_bytes()).digest()
    if got != hashlib.sha256(case.source.read_bytes()).digest():
        raise AssertionError(f"wrong payload restored at {root}")


# -- the contestants --------------------------------------------------------------------------


class Runner(Protocol):
    """One library saving and loading one payload at one location."""

    def save(self) -> None:
        """Save the payload as a new checkpoint."""

    def load(self) -> Path:
        """Restore the newest checkpoint; return the folder it was restored into."""

    def close(self) -> None:
        """Free what the runner holds locally."""


@contextlib.contextmanager
def s3fs_registered() -> Iterator[None]:
    """Register s3fs for ``s3://`` meanwhile; flyte's import replaces it with obstore's shim."""
    import fsspec
    import s3fs

    previous = fsspec.get_filesystem_class("s3")
    fsspec.register_implementation("s3", s3fs.S3FileSystem, clobber=True)
    try:
        yield
    finally:
        fsspec.register_implementation("s3", previous, clobber=True)


class ResumableRunner:
    """``resumable.Checkpoint(url)``: ``save_sync``, ``load_sync``."""

    def __init__(self, case: Case, url: str) -> None:
        from resumable import Checkpoint

        self._data = case.data()
        with s3fs_registered() if url.startswith("s3://") else contextlib.nullcontext():
            self.cp = Checkpoint(url)

    def save(self) -> None:
        """Save one snapshot."""
        self.cp.save_sync(self._data)

    def load(self) -> Path:
        """Restore the newest snapshot into the checkpoint's workspace."""
        root = self.cp.load_sync()
        assert root is not None
        return root

    def close(self) -> None:
        """Remove the workspace."""
        self.cp.close()


class FlyteRunner:
    """``flyte.Checkpoint(url, url)``; each load uses a new instance (loads are cached)."""

    def __init__(self, case: Case, url: str) -> None:
        import flyte

        self._flyte = flyte
        self._data = case.data()
        self._url = url
        self._saver = flyte.Checkpoint(url, url)
        self._loader: Any = None

    def save(self) -> None:
        """Upload the payload (a folder as a .tar.gz) over the single checkpoint object."""
        self._saver.save_sync(self._data)

    def load(self) -> Path:
        """Download and restore the checkpoint object into a new instance's workspace."""
        self._loader = None  # drops the previous workspace first
        self._loader = self._flyte.Checkpoint(self._url, self._url)
        got = self._loader.load_sync()
        assert got is not None
        path: Path = self._loader.path
        return path

    def close(self) -> None:
        """Drop both instances (their temp folders go with them)."""
        self._loader = None
        del self._saver


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_tar(src: Path, dest: Path) -> None:
    with tarfile.open(dest, "w") as tar:
        tar.add(src, arcname=".")


class PlainRunner:
    """The plainest durable local code: temp file, fsync, ``os.replace``, fsync folder."""

    def __init__(self, case: Case, store: Path) -> None:
        self._case = case
        self._store = store
        store.mkdir(parents=True, exist_ok=True)
        self._out: Path | None = None

    def save(self) -> None:
        """Write the payload (a folder as an uncompressed tar) durably under one name."""
        dest = self._store / "snap"
        tmp = self._store / "snap.tmp"
        if self._case.kind == "dir":
            make_tar(self._case.source, tmp)
        else:
            shutil.copyfile(self._case.source, tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(dest)
        fsync_dir(self._store)

    def load(self) -> Path:
        """Copy (or extract) it into a fresh folder."""
        self.close()
        self._out = Path(tempfile.mkdtemp(dir=self._store.parent))
        if self._case.kind == "dir":
            with tarfile.open(self._store / "snap") as tar:
                tar.extractall(self._out, filter="data")
        else:
            shutil.copyfile(self._store / "snap", self._out / "payload")
        return self._out

    def close(self) -> None:
        """Remove the last restored folder."""
        if self._out is not None:
            shutil.rmtree(self._out, ignore_errors=True)
            self._out = None


class S3fsRunner:
    """Raw s3fs ``put_file`` / ``get_file``; a folder travels as one uncompressed tar."""

    def __init__(self, case: Case, key: str, scratch: Path) -> None:
        import s3fs

        self._case = case
        self._key = key
        self._scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self._fs = s3fs.S3FileSystem(
            key=os.environ["AWS_ACCESS_KEY_ID"],
            secret=os.environ["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=os.environ["AWS_ENDPOINT_URL"],
            client_kwargs={"region_name": os.environ["AWS_DEFAULT_REGION"]},
            skip_instance_cache=True,
        )
        self._out: Path | None = None

    def save(self) -> None:
        """Put the payload's file (or a tar of the folder) as one object."""
        if self._case.kind != "dir":
            self._fs.put_file(str(self._case.source), self._key)
            return
        tar = self._scratch / "put.tar"
        try:
            make_tar(self._case.source, tar)
            self._fs.put_file(str(tar), self._key)
        finally:
            tar.unlink(missing_ok=True)

    def load(self) -> Path:
        """Get the object into a fresh folder (and extract the tar)."""
        self.close()
        self._out = Path(tempfile.mkdtemp(dir=self._scratch))
        if self._case.kind != "dir":
            self._fs.get_file(self._key, str(self._out / "payload"))
            return self._out
        tar = self._scratch / "get.tar"
        try:
            self._fs.get_file(self._key, str(tar))
            with tarfile.open(tar) as archive:
                archive.extractall(self._out, filter="data")
        finally:
            tar.unlink(missing_ok=True)
        return self._out

    def close(self) -> None:
        """Remove the last restored folder."""
        if self._out is not None:
            shutil.rmtree(self._out, ignore_errors=True)
            self._out = None


def make_runner(lib: str, store: Store, case: Case, work: Path, tag: str) -> Runner:
    """The runner of ``lib`` for ``case``; ``tag`` keeps locations of different runs apart."""
    name = f"{lib}-{case.key}-{tag}"
    location = str(work / "stores" / name) if store == "local" else f"s3://{BUCKET}/{name}"
    if lib == "resumable":
        return ResumableRunner(case, location)
    if lib == "flyte":
        return FlyteRunner(case, location)
    if lib == "plain":
        return PlainRunner(case, Path(location))
    if lib == "s3fs":
        return S3fsRunner(case, f"{BUCKET}/{name}", work / "scratch" / name)
    raise ValueError(lib)


def flyte_available() -> bool:
    try:
        import flyte  # noqa: F401
    except ImportError:
        return False
    return True


# -- timing -----------------------------------------------------------------------------------


@dataclass
class Timing:
    """Save and load times of one library on one payload, over the repeats."""

    save: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    @property
    def total(self) -> float:
        """Median save+load time."""
        return statistics.median(s + lo for s, lo in zip(self.save, self.load, strict=True))


def time_case(
    store: Store, case: Case, libs: list[str], work: Path, repeat: int
) -> dict[str, Timing]:
    runners = {lib: make_runner(lib, store, case, work, "t") for lib in libs}
    timings = {lib: Timing() for lib in libs}
    try:
        for runner in runners.values():  # warm-up: page cache, connections; check results
            runner.save()
            check_restored(case, runner.load())
        for r in range(repeat):
            order = libs[r % len(libs) :] + libs[: r % len(libs)]
            for lib in order:
                start = time.perf_counter()
                runners[lib].save()
                saved = time.perf_counter()
                runners[lib].load()
                timings[lib].save.append(saved - start)
                timings[lib].load.append(time.perf_counter() - saved)
    finally:
        for runner in runners.values():
            runner.close()
    return timings


# -- memory probes (subprocesses) -------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def probe_child(spec: dict[str, str]) -> None:
    """In a subprocess: print the RSS before and the peak RSS during one save+load (KiB).

    An untimed save+load first does lazy imports and opens connections. The peak is the
    kernel's per-process high-water mark ``VmHWM``, reset to the current RSS just before the
    save (``/proc/self/clear_refs``). ``ru_maxrss`` is not used: on Linux it
    keeps the parent's high-water mark across the vfork + exec that starts this subprocess, so
    it reports the benchmark's own (large) footprint instead of the child's.
    """
    kind: Kind = spec["kind"]  # type: ignore[assignment]
    case = Case(spec["key"], "", Path(spec["source"]), kind, 0)
    store: Store = spec["store"]  # type: ignore[assignment]
    runner = make_runner(spec["lib"], store, case, Path(spec["work"]), "m")
    runner.save()  # warm-up: lazy imports, connections
    runner.load()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    runner.save()
    runner.load()
    peak = _status_kib("VmHWM")
    runner.close()
    print(json.dumps({"before_kib": before, "peak_kib": peak}))


def probe_memory(lib: str, store: Store, case: Case, work: Path) -> tuple[float, float]:
    """RSS before and peak RSS during one save+load, in MiB, from a fresh subprocess."""
    spec = {
        "lib": lib,
        "store": store,
        "key": case.key,
        "source": str(case.source),
        "kind": case.kind,
        "work": str(work),
    }
    out = subprocess.run(
        [sys.executable, __file__, "--probe", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {spec} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["before_kib"] / 1024, result["peak_kib"] / 1024


# -- background mode --------------------------------------------------------------------------


@dataclass
class BackgroundTiming:
    """Per repeat: save_sync time, save_background block time, and time until flushed."""

    sync: list[float] = field(default_factory=list)
    blocked: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)


def time_background(
    store: Store, name: str, data: bytes | str, work: Path, repeat: int
) -> BackgroundTiming:
    from resumable import Checkpoint

    url = str(work / "stores" / f"bg-{name}") if store == "local" else f"s3://{BUCKET}/bg-{name}"
    with s3fs_registered() if store == "s3" else contextlib.nullcontext():
        cp = Checkpoint(url)
    out = BackgroundTiming()
    try:
        cp.save_sync(data)  # warm-up
        cp.save_background_sync(data)
        cp.flush_sync()
        for r in range(repeat):
            for mode in ("sync", "background") if r % 2 == 0 else ("background", "sync"):
                start = time.perf_counter()
                if mode == "sync":
                    cp.save_sync(data)
                    out.sync.append(time.perf_counter() - start)
                else:
                    cp.save_background_sync(data)
                    out.blocked.append(time.perf_counter() - start)
                    cp.flush_sync()
                    out.done.append(time.perf_counter() - start)
    finally:
        cp.close()
    return out


# -- the S3 server ----------------------------------------------------------------------------


@contextlib.contextmanager
def s3_server(work: Path) -> Iterator[dict[str, str]]:
    """A SeaweedFS S3 server on 127.0.0.1 with room for several GiB; yields its variables."""
    from tests.servers import SeaweedS3, weed_binary

    # The test suite's server caps its volumes at 16 x 64 MB, which this benchmark's writes
    # (deleted or overwritten objects are only reclaimed by a vacuum) would fill. A wrapper
    # passes -volume.max=0 last (the last flag wins): as many volumes as the disk holds.
    wrapper = work / "weed"
    wrapper.write_text(f'#!/bin/sh\nexec "{weed_binary()}" "$@" -volume.max=0\n')
    wrapper.chmod(0o755)

    class BenchSeaweedS3(SeaweedS3):
        def _launch(self, binary: str, workdir: Path) -> None:
            super()._launch(str(wrapper), workdir)

    server = BenchSeaweedS3(bucket=BUCKET)
    server.start()
    try:
        env = dict(server.env)
        env |= {
            "FLYTE_AWS_ENDPOINT": server.endpoint,
            "FLYTE_AWS_ACCESS_KEY_ID": server.access_key,
            "FLYTE_AWS_SECRET_ACCESS_KEY": server.secret_key,
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        server.stop()


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {datetime.date.today().isoformat()}"
    )


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="resumable-compare-", dir=args.dir))
    have_flyte = flyte_available()
    if have_flyte:
        import flyte.storage  # noqa: F401 - its import re-registers s3:// (see the docstring)
    try:
        print(f"machine: {machine()}")
        flyte_version = _flyte_version() if have_flyte else "not installed"
        print(f"repeats: {args.repeat} (medians), flyte: {flyte_version}")
        cases = make_cases(work)
        stores: list[Store] = ["local"] if args.skip_s3 else ["local", "s3"]
        rows: list[str] = []
        targets: list[str] = []
        bg_rows: list[str] = []
        for store in stores:
            with s3_server(work) if store == "s3" else contextlib.nullcontext():
                libs = [lib for lib in LIBS[store] if lib != "flyte" or have_flyte]
                for case in cases:
                    print(f"... {store} {case.title}", file=sys.stderr, flush=True)
                    timings = time_case(store, case, libs, work, args.repeat)
                    ours = timings["resumable"].total
                    for lib in LIBS[store]:
                        if lib not in timings:
                            rows.append(
                                f"| {store} | {case.title} | {LABELS[lib]} | not installed "
                                '(`pip install -e ".[benchmark]"`) | | | | | |'
                            )
                            continue
                        t = timings[lib]
                        if args.skip_memory:
                            peak, added = "", ""
                        else:
                            b, p = probe_memory(lib, store, case, work)
                            peak, added = f"{p:.0f}", f"{p - b:.0f}"
                        rows.append(
                            f"| {store} | {case.title} | {LABELS[lib]} | "
                            f"{statistics.median(t.save):.3f} | {statistics.median(t.load):.3f} | "
                            f"{t.total:.3f} | {t.total / ours:.2f} | {peak} | {added} |"
                        )
                    if case.key == "c":
                        if "flyte" in timings:
                            ratio = timings["flyte"].total / ours
                            targets.append(
                                f"- {store}, (c) save+load: flyte / resumable = {ratio:.2f}x "
                                f"(target >= {FLYTE_SPEEDUP}x): {verdict(ratio >= FLYTE_SPEEDUP)}"
                            )
                        else:
                            targets.append(
                                f"- {store}, (c) vs flyte: not measured (flyte not installed)"
                            )
                    if case.key == "b" and store == "s3":
                        share = statistics.median(timings["s3fs"].save) / statistics.median(
                            timings["resumable"].save
                        )
                        mb_ours = case.size / MiB / statistics.median(timings["resumable"].save)
                        mb_raw = case.size / MiB / statistics.median(timings["s3fs"].save)
                        targets.append(
                            f"- s3, (b) 100 MiB save throughput: resumable {mb_ours:.0f} MiB/s, "
                            f"s3fs put_file {mb_raw:.0f} MiB/s = {share:.2f}x "
                            f"(target >= {S3_PUT_THROUGHPUT}x): "
                            f"{verdict(share >= S3_PUT_THROUGHPUT)}"
                        )
                big = next(c for c in cases if c.key == "b")
                for name, data in (
                    ("1 MiB bytes", os.urandom(MiB)),
                    ("100 MiB file", str(big.source)),
                ):
                    print(f"... {store} background {name}", file=sys.stderr, flush=True)
                    bg = time_background(store, name.split()[0], data, work, args.repeat)
                    sync, blocked = statistics.median(bg.sync), statistics.median(bg.blocked)
                    share = blocked / sync
                    bg_rows.append(
                        f"| {store} | {name} | {sync:.4f} | {blocked:.4f} | {share:.1%} | "
                        f"{statistics.median(bg.done):.4f} | < {BACKGROUND_SHARE:.0%} "
                        f"{verdict(share < BACKGROUND_SHARE)} |"
                    )
        print()
        print(
            "| store | payload | library | save (s) | load (s) | save+load (s) | "
            "ratio vs resumable | peak RSS (MiB) | added by save+load (MiB) |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
        print()
        print("\n".join(targets))
        print()
        print(
            "| store | payload | save_sync (s) | save_background blocks (s) | blocked / sync | "
            "background save committed after (s) | target |"
        )
        print("|---|---|---:|---:|---:|---:|---|")
        print("\n".join(bg_rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _flyte_version() -> str:
    from importlib.metadata import version

    return version("flyte")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--skip-s3", action="store_true", help="local disk only")
    parser.add_argument("--skip-memory", action="store_true", help="no memory subprocesses")
    parser.add_argument("--dir", default=None, help="where to work (default: a temp folder)")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.probe is not None:
        probe_child(json.loads(args.probe))
    else:
        run(args)


if __name__ == "__main__":
    main()
