"""Storage calls per save and per load, against their targets, and small-save time vs raw puts.

Counts the storage calls one steady-state save and one load make, with 2, 100 and 10,000
snapshots kept:

- ``memory://``: calls on the fsspec filesystem (a counting wrapper; calls the filesystem
  makes on itself are not counted, as they are no requests);
- local disk: calls on the disk backend (each is a few system calls, none a listing unless
  counted as one);
- ``s3://`` on a SeaweedFS server on loopback, when the ``weed`` binary is found (as the tests
  start it): HTTP requests, counted by a botocore event hook.

Targets: save = 1 write + 1 batched delete (retention runs on every save once ``keep``
snapshots exist); load = 1 list + 1 read (the payload is inlined in the manifest here).

Then the time of 1,000 small saves (``save_sync``) and of 1,000 ``yield`` s of a small state
by a ``@resumable`` generator task (both ``keep=2``, so that retention runs on every save)
against 1,000 raw ``pipe_file`` calls of the same bytes, on ``memory://``, local disk and S3.
The target, at most 1.5 times, is for S3, where each request is a network round trip; on
``memory://`` the raw call is a dict assignment and on local disk it does not fsync, so there
the ratio shows the fixed cost of a durable, verified commit, not a target.

Run: ``python benchmarks/requests.py [--saves N] [--repeat N] [--no-s3]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the ``requests`` library: run as a script, its folder comes first on
# sys.path, and a library that imports ``requests`` would import this file instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402
from unittest import mock  # noqa: E402

import fsspec  # noqa: E402
import fsspec.asyn  # noqa: E402

from resumable import Checkpoint, Storage, resumable  # noqa: E402
from resumable import _stack as stack_module  # noqa: E402
from resumable._backend import AdminBackend, FsspecBackend, LocalBackend, open_backend  # noqa: E402

__all__ = ["Calls", "CountingFS", "CountingLocal", "count_http", "counted_checkpoint"]

HISTORIES = (2, 100, 10_000)
#: Names one S3 listing request returns at most.
S3_PAGE = 1000
#: Calls that are no request: cache upkeep and path arithmetic.
_NOT_REQUESTS = frozenset({"invalidate_cache", "unstrip_protocol", "split_path"})
#: Calls that write, delete, list and read objects: fsspec's, the disk backend's and S3's.
WRITES = frozenset(
    {"pipe_file", "pipe", "open_write", "put_file", "create_exclusive", "writer"}
    | {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
)
DELETES = frozenset({"rm", "rm_file", "delete", "delete_many", "DeleteObject", "DeleteObjects"})
LISTS = frozenset({"ls", "find", "glob", "walk", "entries", "ListObjectsV2", "ListObjects"})
READS = frozenset({"cat_file", "cat", "open_read", "read", "GetObject", "HeadObject"})


class Calls(Counter[str]):
    """Counted calls by name; ``kinds()`` sums them as writes, deletes, lists, reads, other."""

    def kinds(self) -> dict[str, int]:
        """The counts summed by kind of call."""
        out = {"write": 0, "delete": 0, "list": 0, "read": 0, "other": 0}
        for name, n in self.items():
            for kind, names in (
                ("write", WRITES),
                ("delete", DELETES),
                ("list", LISTS),
                ("read", READS),
            ):
                if name in names:
                    out[kind] += n
                    break
            else:
                out["other"] += n
        return out


class CountingFS:
    """An fsspec filesystem whose public calls are counted in ``calls``.

    ``open`` counts as ``open_read`` or ``open_write`` by its mode. Calls the filesystem makes
    on itself (memory's ``open`` asks ``exists``) go to the wrapped object and are not counted.
    """

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.calls = Calls()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fs, name)
        if name.startswith("_") or name in _NOT_REQUESTS or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            label = name
            if name == "open":
                mode = kwargs.get("mode", args[1] if len(args) > 1 else "rb")
                label = "open_read" if "r" in mode else "open_write"
            self.calls[label] += 1
            return attr(*args, **kwargs)

        return counted


class CountingLocal(LocalBackend):
    """The disk backend, counting its calls (those it makes on itself are not counted)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls = Calls()
        self.depth = 0

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name.startswith("_") or name in ("calls", "depth", "root", "url") or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.depth == 0:
                self.calls[name] += 1
            self.depth += 1
            try:
                return attr(*args, **kwargs)
            finally:
                self.depth -= 1

        return counted


def count_http(fs: Any) -> Calls:
    """Count the HTTP requests an s3fs filesystem sends, by operation (a botocore hook)."""
    calls = Calls()
    client = fsspec.asyn.sync(fs.loop, fs.set_session)  # s3fs's aiobotocore client

    def before_send(event_name: str, **kwargs: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1  # "before-send.s3.PutObject"

    client.meta.events.register("before-send.s3", before_send)
    return calls


@contextlib.contextmanager
def counted_checkpoint(
    url: str, *, http: bool = False, **options: Any
) -> Iterator[tuple[Checkpoint, Calls]]:
    """A Checkpoint on ``url`` whose storage calls (or, with ``http``, S3 requests) are counted."""
    found: list[Calls] = []

    def opening(
        uri: str | os.PathLike[str], storage_options: dict[str, Any] | None
    ) -> AdminBackend:
        backend = open_backend(uri, storage_options)
        if isinstance(backend, LocalBackend):
            local = CountingLocal(backend.root)
            found.append(local.calls)
            return local
        assert isinstance(backend, FsspecBackend)
        if http:
            found.append(count_http(backend.fs))
            return backend
        fs = CountingFS(backend.fs)
        found.append(fs.calls)
        return FsspecBackend(fs, backend.root, backend.url)

    with mock.patch.object(stack_module, "open_backend", opening):
        cp = Checkpoint(url, storage=Storage(**options))
    try:
        yield cp, found[0]
    finally:
        cp.close()


@dataclass
class Row:
    store: str
    history: int
    save: dict[str, int]
    load: dict[str, int]

    def pages(self) -> int:
        """Requests one listing takes: S3 answers at most 1,000 names per request."""
        return -(-self.history // S3_PAGE) if self.store == "s3" else 1

    def verdicts(self) -> tuple[str, str]:
        s, ld = self.save, self.load
        save_ok = s["write"] == 1 and s["delete"] <= 1 and s["list"] == 0 and s["read"] == 0
        load_ok = ld["list"] == self.pages() and ld["read"] == 1
        save_ok = save_ok and s["other"] == 0
        load_ok = load_ok and ld["write"] == ld["delete"] == ld["other"] == 0
        load = "ok" if load_ok else "MISSED"
        if load_ok and self.pages() > 1:
            load = f"ok: 1 listing = {self.pages()} pages"
        return ("ok" if save_ok else "MISSED"), load


def _fill(url: str, history: int) -> None:
    """Make ``history`` small snapshots under ``url`` (fast: written directly by name)."""
    with Checkpoint(url, storage=Storage(keep=history)) as cp:
        cp.save_sync(b"first")  # a real commit: the format is the library's own
    fs, root = fsspec.url_to_fs(url)
    text = fs.cat_file(f"{root}/{0:020d}.json").decode()
    docs = {
        f"{root}/{seq:020d}.json": text.replace('"seq": 0', f'"seq": {seq}').encode()
        for seq in range(1, history)
    }
    if docs:
        fs.pipe(docs)  # concurrent on S3


def measure(url: str, history: int, *, http: bool = False) -> Row:
    """Counts of one steady-state save and one load with ``history`` snapshots kept."""
    _fill(url, history)
    with counted_checkpoint(url, keep=history, http=http) as (cp, calls):
        cp.save_sync(b"warm-up: the first save of a process lists")
        cp.flush_sync()  # retention runs behind a save: count it with the save that caused it
        calls.clear()
        cp.save_sync(b"steady state")
        cp.flush_sync()
        save = calls.kinds()
        save_detail = dict(calls)
        calls.clear()
        found = cp.read_newest_with(b"".join)
        assert found is not None
        assert found[1] == b"steady state", found
        load = calls.kinds()
        load_detail = dict(calls)
    store = url.split("://", 1)[0] if "://" in url else "local"
    row = Row(store, history, save, load)
    row.save["detail"] = save_detail  # type: ignore[assignment]
    row.load["detail"] = load_detail  # type: ignore[assignment]
    return row


def _fmt(counts: dict[str, Any]) -> str:
    detail = counts.get("detail") or {}
    return " ".join(f"{k}={v}" for k, v in sorted(detail.items())) or "-"


def print_counts(rows: list[Row]) -> None:
    print("Storage calls per steady-state save and per load (payload inlined)")
    print("targets: save = 1 write + <=1 batched delete, nothing else; load = 1 list + 1 read")
    print("(s3: HTTP requests; a listing of more than 1,000 names takes one request per 1,000)")
    head = f"{'store':<7} {'history':>7}  {'save calls':<36} {'':6}  {'load calls':<36} {'':6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        sv, lv = r.verdicts()
        print(
            f"{r.store:<7} {r.history:>7}  {_fmt(r.save):<36} {sv:<6}  {_fmt(r.load):<36} {lv:<6}"
        )


def time_history(url: str, history: int, saves: int) -> tuple[float, float]:
    """Milliseconds per steady-state save and per load with ``history`` snapshots kept."""
    _fill(url, history)
    with Checkpoint(url, storage=Storage(keep=history)) as cp:
        cp.save_sync(b"warm-up: the first save of a process lists")
        started = time.perf_counter()
        for _ in range(saves):
            cp.save_sync(b"x" * 64)
        save = (time.perf_counter() - started) / saves
        loads = max(3, saves // 20)
        started = time.perf_counter()
        for _ in range(loads):
            cp.read_newest_with(b"".join)
        load = (time.perf_counter() - started) / loads
    return save * 1e3, load * 1e3


def flat_in_history(
    make_url: Callable[[int], str], saves: int, repeat: int
) -> dict[int, tuple[float, float]]:
    """Per history: the median over ``repeat`` runs (interleaved) of save and load ms."""
    runs: dict[int, list[tuple[float, float]]] = {h: [] for h in HISTORIES}
    for _ in range(repeat):
        for history in HISTORIES:
            runs[history].append(time_history(make_url(history), history, saves))
    return {
        h: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for h, rs in runs.items()
    }


def print_history(results: list[tuple[str, dict[int, tuple[float, float]]]]) -> None:
    print()
    print("Cost in history: ms per small save and per load with 2, 100, 10,000 snapshots kept")
    print(f"target: save with {HISTORIES[-1]:,} kept <= 1.2x save with {HISTORIES[0]} kept")
    cols = "".join(f"{f'save@{h}':>12}" for h in HISTORIES)
    cols += "".join(f"{f'load@{h}':>12}" for h in HISTORIES)
    head = f"{'store':<7}{cols} {'ratio':>7}  verdict"
    print(head)
    print("-" * len(head))
    for store, by in results:
        ratio = by[HISTORIES[-1]][0] / by[HISTORIES[0]][0]
        verdict = "ok" if ratio <= 1.2 else "MISSED"
        saves = "".join(f"{by[h][0]:>12.3f}" for h in HISTORIES)
        loads = "".join(f"{by[h][1]:>12.3f}" for h in HISTORIES)
        print(f"{store:<7}{saves}{loads} {ratio:>6.2f}x  {verdict}")


def time_yields(url: str, yields: int) -> float:
    """Seconds for a ``@resumable`` generator task that yields a small state ``yields`` times."""

    @resumable(
        state=b"", store=url, key=uuid.uuid4().hex, on_success="keep", storage=Storage(keep=2)
    )
    def task(state: bytes) -> Iterator[bytes]:
        for n in range(yields):
            yield b"%-64d" % n

    started = time.perf_counter()
    task()  # runs the generator to its end, persisting every yield
    return time.perf_counter() - started


def time_saves(url: str, saves: int, repeat: int) -> tuple[float, float, float]:
    """Seconds for ``saves`` small saves, as many yields, and as many raw ``pipe_file`` calls.

    Best of ``repeat``; each timed run ends with its retention done (``close``).
    """
    data = b"x" * 64
    fs, root = fsspec.url_to_fs(url)
    ours, yielded, raw = [], [], []
    for _ in range(repeat):
        target = f"{url.rstrip('/')}/{uuid.uuid4().hex}"
        cp = Checkpoint(target, storage=Storage(keep=2))
        cp.save_sync(data)  # the first save of a process lists: not steady state
        cp.flush_sync()
        started = time.perf_counter()
        for _ in range(saves):
            cp.save_sync(data)
        cp.close()
        ours.append(time.perf_counter() - started)
        yielded.append(time_yields(url, saves))
        base = f"{root.rstrip('/')}/{uuid.uuid4().hex}"
        with contextlib.suppress(FileExistsError):
            fs.makedirs(base, exist_ok=True)
        started = time.perf_counter()
        for i in range(saves):
            fs.pipe_file(f"{base}/{i:020d}", data)
        raw.append(time.perf_counter() - started)
    return min(ours), min(yielded), min(raw)


def print_times(results: list[tuple[str, float, float, float]], saves: int) -> None:
    print()
    print(
        f"{saves} small saves / yields (64 bytes, keep=2) vs {saves} raw pipe_file calls; "
        "target on S3 <= 1.5x"
    )
    cols = ("saves s", "yields s", "raw s")
    head = f"{'store':<7} " + " ".join(f"{c:>9}" for c in cols)
    head += f" {'saves':>7} {'yields':>7}  verdict"
    print(head)
    print("-" * len(head))
    for store, ours, yielded, raw in results:
        worst = max(ours, yielded) / raw
        verdict = ("ok" if worst <= 1.5 else "MISSED") if store == "s3" else "(no target)"
        print(
            f"{store:<7} {ours:>9.3f} {yielded:>9.3f} {raw:>9.3f} {ours / raw:>6.2f}x "
            f"{yielded / raw:>6.2f}x  {verdict}"
        )


@contextlib.contextmanager
def s3_server() -> Iterator[str | None]:
    """An ``s3://`` bucket URL on a SeaweedFS server on loopback, or None when unavailable."""
    try:
        from tests.servers import SeaweedS3, ServerError, weed_binary
    except ImportError:
        yield None
        return
    try:
        weed_binary()
    except Exception:
        yield None
        return
    server = SeaweedS3()
    try:
        server.start()
    except ServerError as exc:
        print(f"(no S3: cannot start the SeaweedFS server: {exc})")
        yield None
        return
    try:
        with mock.patch.dict(os.environ, server.env):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            yield f"s3://{server.bucket}"
    finally:
        server.stop()


def _memory_url(history: int) -> str:
    return f"memory://history/{history}-{uuid.uuid4().hex}"


def _local_url(tmp: str, history: int) -> str:
    return str(Path(tmp) / f"history-{history}-{uuid.uuid4().hex}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=1000, help="saves timed (default 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (best or median)")
    parser.add_argument(
        "--history-saves", type=int, default=100, help="saves timed per history (default 100)"
    )
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 server")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    times: list[tuple[str, float, float, float]] = []
    flat: list[tuple[str, dict[int, tuple[float, float]]]] = []
    with tempfile.TemporaryDirectory(prefix="resumable-requests-") as tmp:
        for history in HISTORIES:
            rows.append(measure(f"memory://requests/{uuid.uuid4().hex}", history))
        for history in HISTORIES:
            rows.append(measure(str(Path(tmp) / f"h{history}"), history))
        n, rep = args.history_saves, args.repeat
        flat.append(("memory", flat_in_history(_memory_url, n, rep)))
        flat.append(("local", flat_in_history(lambda h: _local_url(tmp, h), n, rep)))
        times.append(("memory", *time_saves("memory://timed", args.saves, args.repeat)))
        times.append(("local", *time_saves(str(Path(tmp) / "timed"), args.saves, args.repeat)))
        with contextlib.ExitStack() as stack:
            bucket = None if args.no_s3 else stack.enter_context(s3_server())
            if bucket is not None:
                for history in HISTORIES:
                    rows.append(measure(f"{bucket}/{uuid.uuid4().hex}", history, http=True))
                times.append(("s3", *time_saves(f"{bucket}/timed", args.saves, args.repeat)))
    print_counts(rows)
    print_history(flat)
    print_times(times, args.saves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
