"""save() of a binary file object: streamed, replayed when a save is retried, copied at once."""

from __future__ import annotations

import asyncio
import io as _io
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import tenacity

from resumable import Checkpoint, RetryPolicy, Storage, UnsupportedDataError, testing

from ..conftest import IO as Twins

#: A payload of several chunks (a chunk is 1 MiB), so that it is written in parts.
DATA = bytes(range(256)) * (3 * 4096 + 7)


class CountingBytesIO(_io.BytesIO):
    """A BytesIO that records the size of every read (to show the bytes are streamed)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(size)
        return super().read(size)


def pipe_reader(data: bytes) -> IO[bytes]:
    """The reading end of a pipe (not seekable) that a thread fills with ``data``, then closes."""
    read_fd, write_fd = os.pipe()

    def fill() -> None:
        with open(write_fd, "wb") as w:
            w.write(data)

    threading.Thread(target=fill, daemon=True).start()
    return open(read_fd, "rb")


#: Each kind of readable binary file object, made from the bytes it holds.
STREAMS: dict[str, Callable[[bytes, Path], IO[bytes]]] = {
    "BytesIO": lambda data, folder: _io.BytesIO(data),
    "file": lambda data, folder: _file(folder, data),
    "pipe": lambda data, folder: pipe_reader(data),
}


def _file(folder: Path, data: bytes) -> IO[bytes]:
    path = folder / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(data)
    return path.open("rb")


@pytest.fixture(name="make_stream", params=sorted(STREAMS))
def _make_stream(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[bytes], IO[bytes]]]:
    """A maker of one kind of file object (seekable or not); closes what it made."""
    made: list[IO[bytes]] = []

    def make(data: bytes) -> IO[bytes]:
        stream = STREAMS[request.param](data, tmp_path)
        made.append(stream)
        return stream

    yield make
    for stream in made:
        stream.close()


def payload(cp: Checkpoint, io: Twins) -> bytes:
    """The bytes of the newest snapshot, loaded through the sync or the async twin."""
    root = io.load(cp)
    assert root is not None
    return (root / "payload").read_bytes()


def test_a_file_object_round_trips(
    store_url: str, io: Twins, make_stream: Callable[[bytes], IO[bytes]]
) -> None:
    """A BytesIO, a file opened 'rb' and a pipe each save as a "file" snapshot of their bytes."""
    with Checkpoint(store_url) as cp:
        io.save(cp, make_stream(DATA))
        assert payload(cp, io) == DATA
        info = cp.info_sync()
        assert info is not None
        assert (info.kind, info.size) == ("file", len(DATA))


def test_read_from_the_current_position(io: Twins, tmp_path: Path) -> None:
    """What was read before the save is not part of the snapshot; the stream ends at its end."""
    stream = _io.BytesIO(b"header|body")
    assert stream.read(7) == b"header|"
    with Checkpoint(tmp_path / "store") as cp:
        io.save(cp, stream)
        assert payload(cp, io) == b"body"
    assert stream.read() == b""  # left at its end, open


def test_streamed_in_chunks_not_read_whole(io: Twins, tmp_path: Path) -> None:
    """A file object is read a chunk at a time: never whole into memory."""
    stream = CountingBytesIO(DATA)
    with Checkpoint(tmp_path / "store") as cp:
        io.save(cp, stream)
        assert payload(cp, io) == DATA
    reads = [size for size in stream.sizes if size != 0]  # read(0) is the text-mode probe
    assert len(reads) > 3
    assert all(size is not None and 0 < size <= 1 << 20 for size in reads)


@pytest.mark.parametrize("kind", ["BytesIO", "pipe"])
def test_a_retried_save_reads_the_same_bytes_again(kind: str, io: Twins, tmp_path: Path) -> None:
    """Transient faults restart the save: a seekable stream is re-read, a pipe replayed."""
    faults = {"target_protocol": "memory", "fail_rate": 0.25, "seed": 3}
    storage = Storage(
        storage_options=faults, retry=RetryPolicy(attempts=40, wait=tenacity.wait_none())
    )
    with Checkpoint(f"faulty:///retried-{uuid.uuid4().hex}", storage=storage) as cp:
        stream = STREAMS[kind](DATA, tmp_path)
        try:
            io.save(cp, stream)
        finally:
            stream.close()
        fs = testing.filesystem(cp)
        assert fs.faults["write"] + fs.faults["close"] > 0  # a payload upload was redone
        fs.fail_rate = 0.0
        assert payload(cp, io) == DATA


def test_a_pipe_leaves_no_spool_open(tmp_path: Path) -> None:
    """The temp file a pipe is spooled to is closed once save_sync returns."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd to count open files")
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(b"warm up")  # the store's own lazily opened files are open from here on
        before = len(os.listdir(fds))
        with pipe_reader(DATA) as stream:
            cp.save_sync(stream)
        assert len(os.listdir(fds)) == before


def test_a_background_save_copies_the_stream_at_the_call(
    io: Twins, make_stream: Callable[[bytes], IO[bytes]], tmp_path: Path
) -> None:
    """save_background_sync copies a file object at once: it may be closed or changed after."""
    with Checkpoint(tmp_path / "store") as cp:
        stream = make_stream(DATA)
        cp.save_background_sync(stream)
        stream.close()  # the caller is done with it as soon as the call returns
        cp.flush_sync()
        assert payload(cp, io) == DATA


def test_a_background_save_is_not_changed_by_later_writes(tmp_path: Path) -> None:
    """Bytes written into a BytesIO after save_background_sync do not reach the snapshot."""
    stream = _io.BytesIO(b"before")
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_background_sync(stream)
        stream.seek(0)
        stream.write(b"AFTER!")
        cp.flush_sync()
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == b"before"


def test_the_async_background_twin_copies_at_the_call(tmp_path: Path) -> None:
    """The async save_background has copied the stream when it returns, as its twin has."""

    async def main(cp: Checkpoint) -> None:
        with pipe_reader(b"piped") as stream:
            await cp.save_background(stream)
        await cp.flush()

    with Checkpoint(tmp_path / "store") as cp:
        asyncio.run(main(cp))
        root = cp.load_sync()
        assert root is not None
        assert (root / "payload").read_bytes() == b"piped"


@pytest.mark.parametrize("mode", ["StringIO", "r", "w+"])
def test_a_text_stream_is_refused(mode: str, io: Twins, tmp_path: Path) -> None:
    """A text-mode file object is an UnsupportedDataError (a TypeError) that says to open 'rb'."""
    text = tmp_path / "notes.txt"
    text.write_text("some text")
    stream = _io.StringIO("some text") if mode == "StringIO" else text.open(mode)
    with Checkpoint(tmp_path / "store") as cp, stream:
        with pytest.raises(TypeError, match=r"text mode.*'rb'") as exc:
            io.save(cp, stream)
        assert isinstance(exc.value, UnsupportedDataError)
        assert not cp.exists_sync()


def test_a_stream_it_cannot_read_is_refused(io: Twins, tmp_path: Path) -> None:
    """A file object opened for writing only, or closed, is refused with what to do."""
    with Checkpoint(tmp_path / "store") as cp:
        with (
            (tmp_path / "out.bin").open("wb") as written,
            pytest.raises(UnsupportedDataError, match="not open for reading"),
        ):
            io.save(cp, written)
        closed = _io.BytesIO(b"gone")
        closed.close()
        with pytest.raises(UnsupportedDataError, match=r"closed file.*while it is open"):
            io.save(cp, closed)
        assert not cp.exists_sync()
