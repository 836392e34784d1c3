"""The commit protocol: payload first, manifest last.

Failures keep the previous snapshot; retention only after commit; threads never interleave;
async never blocks the loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import resumable._snapshot as snapshot_module
from resumable import Captured, Checkpoint, Storage, testing

from ..conftest import IO, store_files


def boom_after(chunks: int) -> Iterator[bytes]:
    """A payload stream that fails part-way through a large payload."""
    for _ in range(chunks):
        yield os.urandom(1 << 20)
    raise OSError("disk on fire")


def test_failed_save_keeps_previous_snapshot(store_url: str, io: IO) -> None:
    """A save that fails halfway leaves the previous snapshot loadable and no new manifest."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"good")
        before = store_files(store_url)
        with pytest.raises(OSError, match="on fire"):
            cp.commit(Captured("bytes", lambda: boom_after(3)))
        assert store_files(store_url) == before
        assert (io.load(cp) / "payload").read_bytes() == b"good"


def test_file_that_vanishes_mid_save_keeps_previous(store_url: str, io: IO, tmp_path: Path) -> None:
    """A folder whose file shrinks while it is saved fails cleanly; the old snapshot stays."""
    src = tmp_path / "src"
    src.mkdir()
    victim = src / "victim.bin"
    victim.write_bytes(os.urandom(3 << 20))
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        io.save(cp, b"good")
        real_iter_tar = snapshot_module.iter_tar

        def shrinking(root: Path, *args: Any, **kwargs: Any) -> Iterator[bytearray]:
            for i, chunk in enumerate(real_iter_tar(root, *args, **kwargs)):
                if i == 0:
                    victim.write_bytes(b"short")
                yield chunk

        snapshot_module.iter_tar = shrinking  # type: ignore[assignment]
        try:
            with pytest.raises(Exception, match="shrank"):
                io.save(cp, src)
        finally:
            snapshot_module.iter_tar = real_iter_tar
        assert (io.load(cp) / "payload").read_bytes() == b"good"
        assert not [n for n in store_files(store_url) if n.endswith(".blob")]


def test_local_temp_files_live_in_the_destination_folder(tmp_path: Path) -> None:
    """On local disk, a payload being written is a temp name beside its final name."""
    store = tmp_path / "store"
    seen: list[list[str]] = []

    def watching() -> Iterator[bytes]:
        yield os.urandom(1 << 20)
        seen.append(sorted(os.listdir(store)))
        yield os.urandom(1 << 20)

    with Checkpoint(store) as cp:
        cp.commit(Captured("bytes", lambda: watching()))
    (during,) = seen
    assert len(during) == 1
    assert during[0].startswith(".")
    assert during[0].endswith(".tmp")
    assert all(not n.endswith(".tmp") for n in os.listdir(store))


def test_local_commit_fsyncs_payload_manifest_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Payload, manifest and folder are fsynced before a save returns."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store = tmp_path / "store"
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(100_000))
    with Checkpoint(store) as cp:
        cp.save_sync(src)
    assert any(p.endswith(".blob.tmp") or ".blob." in p for p in synced)
    assert any(".json." in p for p in synced)
    assert str(store) in synced


def test_manifest_is_written_after_payload(store_url: str, io: IO) -> None:
    """While the payload streams, no manifest for it exists yet."""
    seen: list[list[str]] = []

    def watching() -> Iterator[bytes]:
        yield os.urandom(1 << 20)
        seen.append([n for n in store_files(store_url) if n.endswith(".json")])
        yield os.urandom(1 << 20)

    with Checkpoint(store_url) as cp:
        cp.commit(Captured("bytes", lambda: watching()))
    assert seen == [[]]
    assert "00000000000000000000.json" in store_files(store_url)


def test_retention_keeps_newest(store_url: str, io: IO, tmp_path: Path) -> None:
    """Only the newest `keep` snapshots stay, payloads included."""
    src = tmp_path / "f.bin"
    with Checkpoint(store_url, storage=Storage(keep=3)) as cp:
        for i in range(6):
            src.write_bytes(bytes([i]) * 100_000)
            io.save(cp, src)
    names = store_files(store_url)
    assert [n for n in names if n.endswith(".json")] == [f"{i:020d}.json" for i in (3, 4, 5)]
    assert len([n for n in names if n.endswith(".blob")]) == 3


def test_retention_runs_after_commit_manifest_before_payload(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old snapshots go only after the new manifest exists: manifest first, then payload.

    One batched delete: the manifest comes first in it.
    """
    events: list[str] = []
    with Checkpoint(store_url, storage=Storage(keep=1)) as cp:
        cp.commit(Captured("bytes", lambda: [os.urandom(100_000)]))
        backend = testing.backend(cp)
        real_delete, real_create = backend.delete_many, backend.create_exclusive
        monkeypatch.setattr(
            backend,
            "delete_many",
            lambda names: (events.extend(f"delete {n}" for n in names), real_delete(names)),
        )
        monkeypatch.setattr(
            backend,
            "create_exclusive",
            lambda name, data: (events.append(f"commit {name}"), real_create(name, data)),
        )
        cp.commit(Captured("bytes", lambda: [os.urandom(100_000)]))
    assert events[0] == "commit 00000000000000000001.json"
    assert events[1] == "delete 00000000000000000000.json"
    assert events[2].startswith("delete 00000000000000000000.")
    assert events[2].endswith(".blob")
    assert len(events) == 3


def test_two_threads_never_interleave(store_url: str) -> None:
    """Two threads saving through one Checkpoint each make whole, separate commits."""
    payloads = {name: name.encode() * 50_000 for name in ("left", "right")}
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    with Checkpoint(store_url, storage=Storage(keep=100)) as cp:

        def run(name: str) -> None:
            start.wait()
            try:
                for _ in range(10):
                    cp.save_sync(payloads[name])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        manifests = [n for n in store_files(store_url) if n.endswith(".json")]
        assert len(manifests) == 20
        store = testing.store(cp)
        for seq in range(20):
            assert b"".join(store.payload(store.manifest(seq))) in payloads.values()


def test_async_save_and_load_do_not_block_the_loop(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While save() reads its source, the event loop keeps running other tasks."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2 << 20))
    loop_ran = threading.Event()
    real_iter_file = snapshot_module.iter_file

    def gated(path: Path) -> Iterator[bytes]:
        # Only a loop that is free can set the event: a blocked loop deadlocks (timeout).
        if not loop_ran.wait(timeout=30):
            raise AssertionError("the event loop was blocked during save()")
        yield from real_iter_file(path)

    monkeypatch.setattr(snapshot_module, "iter_file", gated)

    async def main() -> bytes:
        cp = Checkpoint(store_url)
        saving = asyncio.create_task(cp.save(src))
        await asyncio.sleep(0)
        loop_ran.set()
        await saving
        root = await cp.load()
        assert root is not None
        return (root / "payload").read_bytes()

    assert asyncio.run(main()) == src.read_bytes()
