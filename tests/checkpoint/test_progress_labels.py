"""Progress bars: named source first, sizes in binary units, shown for @resumable's transfers."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.callbacks import Callback

from resumable import Checkpoint, RetryPolicy, Storage, ctx, resumable
from resumable._progress import format_bytes, loading, saving

pytest.importorskip("tqdm")

#: A size or rate in tqdm's or decimal units: "2.00M", "21.0MB", "1.02GB/s", "512 kB".
_NOT_BINARY = re.compile(r"\d\s?[kKMGTP]B?(?!i)")


class Names(Callback):  # type: ignore[misc]  # fsspec has no type hints
    """Records the (source, destination) of each transfer it branches."""

    def __init__(self) -> None:
        super().__init__()
        self.transfers: list[tuple[str, str]] = []

    def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Callback:
        self.transfers.append((path_1, path_2))
        return Callback()


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (21 << 20, "21.0 MiB"),
        (286 << 20, "286.0 MiB"),
        (3 << 30, "3.0 GiB"),
        (5 << 40, "5.0 TiB"),
        (2048 << 50, "2048.0 PiB"),
        (1234.5, "1.2 KiB"),
    ],
)
def test_sizes_are_in_binary_units(n: float, text: str) -> None:
    """Every size is B, KiB, MiB, GiB, TiB or PiB (powers of 1024), one decimal above bytes."""
    assert format_bytes(n) == text


def test_the_tqdm_bars_use_binary_units_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """progress=True prints counts, totals and rates in MiB and the like, never MB or M."""
    with Checkpoint(tmp_path / "store", storage=Storage(progress=True)) as cp:
        cp.save_sync(os.urandom(3 << 20))
        cp.load_sync()
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line]
    stats = [line.rsplit(": ", 1)[1] for line in bars]  # what follows the bar's name
    assert any("100%" in s and "3.0 MiB/3.0 MiB" in s and "iB/s]" in s for s in stats), bars
    assert not [s for s in stats if _NOT_BINARY.search(s)]


def test_a_save_without_a_size_yet_shows_what_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Until a save knows its size, its bar shows the bytes written, not a 0% bar."""
    with Checkpoint(tmp_path / "store", storage=Storage(progress=True)) as cp:
        cp.save_sync(b"x" * 10)
    first = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[0]
    assert re.fullmatch(r".*: 0 B \[00:00, \? B/s\]", first), first


def test_saves_and_loads_name_their_source_first() -> None:
    """A save goes from local to the snapshot of the store; a load from there to local."""
    names = Names()
    saving(names, 3, "s3://bucket/run").close()
    loading(names, 3, "s3://bucket/run", 10).close()
    assert names.transfers == [
        ("local", "snapshot 3 of s3://bucket/run"),
        ("snapshot 3 of s3://bucket/run", "local"),
    ]


def test_a_checkpoint_names_its_transfers_source_first(tmp_path: Path) -> None:
    """A Checkpoint's save reads local -> snapshot 0 of <store>; its load the other way."""
    names = Names()
    store = tmp_path / "store"
    with Checkpoint(store, storage=Storage(progress=names)) as cp:
        cp.save_sync(b"x" * 100_000)
        cp.load_sync()
    assert names.transfers == [
        ("local", f"snapshot 0 of {store}"),
        (f"snapshot 0 of {store}", "local"),
    ]


def test_resumable_shows_bars_through_storage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """@resumable(storage=Storage(progress=True)) draws a bar for each save and each load."""

    @resumable(
        state=b"",
        retry=RetryPolicy(attempts=2, wait=0),
        store=str(tmp_path),
        storage=Storage(progress=True),
    )
    def job(state: bytes = b"") -> Iterator[bytes]:
        if not state:
            yield os.urandom(2 << 20)
        if ctx().attempt_number() == 0:
            raise RuntimeError("the first attempt fails after its snapshot")

    job()
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    finished = [line for line in lines if "100%" in line and "2.0 MiB/2.0 MiB" in line]
    assert len(finished) == 2, lines  # the save, then the retry's load
