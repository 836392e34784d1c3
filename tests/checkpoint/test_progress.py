"""Progress reporting: fsspec callbacks as bytes move, a tqdm bar on request, log lines."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from fsspec.callbacks import Callback, TqdmCallback

from resumable import Checkpoint, ConfigurationError, Storage, testing

from ..conftest import IO

Event = tuple[int | None, int] | str


class Recorder(Callback):  # type: ignore[misc]  # fsspec has no type hints
    """Records (size, value) at each update, and each close."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def call(self, hook_name: str | None = None, **kwargs: Any) -> None:
        self.events.append((self.size, self.value))

    def close(self) -> None:
        self.events.append("close")


class Brancher(Callback):  # type: ignore[misc]
    """Hands each transfer its own Recorder, as fsspec's multi-file callbacks do."""

    def __init__(self) -> None:
        super().__init__()
        self.children: list[tuple[str, str, Recorder]] = []

    def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Callback:
        child = Recorder()
        self.children.append((path_1, path_2, child))
        return child


def _transfers(events: list[Event]) -> list[list[tuple[int | None, int]]]:
    """The (size, value) updates split at each close: one list per transfer."""
    transfers: list[list[tuple[int | None, int]]] = [[]]
    for event in events:
        if isinstance(event, str):
            transfers.append([])
        else:
            transfers[-1].append(event)
    assert transfers[-1] == [], "every transfer is closed"
    return transfers[:-1]


def test_callback_reports_each_transfer_from_zero(store_url: str, io: IO, tmp_path: Path) -> None:
    """A plain fsspec Callback sees every save and load from zero, with its size, then a close."""
    size = 3 << 20
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    recorder = Recorder()
    with Checkpoint(store_url, storage=Storage(progress=recorder)) as cp:
        io.save(cp, src)
        io.load(cp)
        io.save(cp, src)
    save, load, again = _transfers(recorder.events)
    for one in (save, load, again):
        values = [value for _, value in one]
        assert values[0] == 0  # each transfer starts over
        assert values == sorted(values)
        assert one[-1] == (size, size)
    assert save[0] == (None, 0)  # a save learns its size at the end
    assert load[0] == (size, 0)  # a load knows it up front


def test_branching_callback_gets_a_child_per_transfer(store_url: str, tmp_path: Path) -> None:
    """A callback that branches gets branched(source, destination) per transfer."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(1 << 20))
    brancher = Brancher()
    with Checkpoint(store_url, storage=Storage(progress=brancher)) as cp:
        cp.save_sync(src)
        cp.load_sync()
    (save_from, save_to, save), (load_from, load_to, load) = brancher.children
    assert (save_from, load_to) == ("local", "local")
    assert save_to.startswith("snapshot 0 of ")
    assert save_to == load_from
    assert store_url.rstrip("/").split("/")[-1] in save_to
    for child in (save, load):
        assert _transfers(child.events)[-1][-1] == (1 << 20, 1 << 20)
    assert brancher.value == 0  # the children report; the callback itself is left alone


def test_failed_transfer_still_closes(store_url: str) -> None:
    """A save that fails mid-way closes its callback too, and the next one starts over."""
    recorder = Recorder()

    def failing() -> Iterator[bytes]:
        yield b"x" * 10
        raise RuntimeError("source broke")

    with Checkpoint(store_url, storage=Storage(progress=recorder)) as cp:
        with pytest.raises(RuntimeError, match="source broke"):
            testing.store(cp).commit("bytes", failing())
        cp.save_sync(b"ok")
    failed, saved = _transfers(recorder.events)
    assert failed[-1] == (None, 10)
    assert saved[0] == (None, 0)
    assert saved[-1] == (2, 2)


def test_tqdm_bar(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """progress=True draws one tqdm bar per transfer on stderr, named after it."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2 << 20))
    with Checkpoint(store_url, storage=Storage(progress=True)) as cp:
        cp.save_sync(src)
        cp.load_sync()
    err = capsys.readouterr().err
    assert "local -> snapshot 0 of " in err
    assert "snapshot 0 of " in err
    assert " -> local" in err
    assert "2.0 MiB" in err


def test_users_tqdm_callback(store_url: str, tmp_path: Path) -> None:
    """An fsspec TqdmCallback passed in draws a bar per transfer, closed at its end."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(1 << 20))
    bars: list[Any] = []

    class Bars(TqdmCallback):  # type: ignore[misc]
        def close(self) -> None:
            bars.append(self.tqdm)
            super().close()

    with Checkpoint(
        store_url, storage=Storage(progress=Bars(tqdm_kwargs={"file": StringIO()}))
    ) as cp:
        cp.save_sync(src)
        cp.load_sync()
    assert len(bars) == 2
    assert all(bar is not None and bar.n == 1 << 20 for bar in bars)


@pytest.mark.parametrize("progress", [None, False])
def test_no_progress(progress: bool | None) -> None:
    """progress=None and progress=False report nothing and cost nothing."""
    with Checkpoint("memory://no-progress", storage=Storage(progress=progress)) as cp:
        cp.save_sync(b"x")
        assert cp.load_sync() is not None


def test_bad_progress_argument() -> None:
    """Progress must be a bool, None or an fsspec Callback."""
    with pytest.raises(ConfigurationError, match="progress"):
        Checkpoint("memory://x", storage=Storage(progress="yes"))


def test_old_callable_form_is_refused_with_the_replacement() -> None:
    """The (what, done, total, finished) callable is refused with how to port it."""
    with pytest.raises(ConfigurationError, match=r"Callback\(hooks="):
        Checkpoint("memory://x", storage=Storage(progress=lambda *event: None))


def test_large_transfers_log_size_and_rate(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Saves and loads of 16 MiB or more log one INFO line with size and rate."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 << 20))
    with caplog.at_level(logging.INFO, logger="resumable"), Checkpoint(store_url) as cp:
        cp.save_sync(src)
        cp.load_sync()
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("saved snapshot 0") and "MiB/s" in m for m in lines)
    assert any(m.startswith("loaded snapshot 0") and "16.0 MiB" in m for m in lines)
