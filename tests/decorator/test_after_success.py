"""What the next call of a finished training task does, as docs/howto-pytorch.md says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from resumable import Dir, latest_checkpoint, resumable


def test_finished_dir_task_next_call_sees_the_folder_as_left(tmp_path: Path) -> None:
    """After success the folder keeps its files; the next call restores nothing over them."""
    runs: list[int] = []

    @resumable(state=Dir(tmp_path / "run"), store=tmp_path / "store")
    def train(epochs: int, state: Path) -> int:
        last = latest_checkpoint(state, "epoch-*.ckpt")
        start = 0 if last is None else int(last.stem.removeprefix("epoch-")) + 1
        runs.append(start)
        for epoch in range(start, epochs):
            (state / f"epoch-{epoch}.ckpt").write_text(f"weights {epoch}")
            yield
        return epochs

    assert train(3) == 3
    assert not list((tmp_path / "store").rglob("*.json"))  # on_success="clear"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "epoch-0.ckpt",
        "epoch-1.ckpt",
        "epoch-2.ckpt",
    ]
    assert train(3) == 3
    assert runs == [0, 3]  # the second call found the finished run's files: nothing retrained


def test_kept_final_snapshot_makes_the_next_call_return_at_once(tmp_path: Path) -> None:
    """With on_success="keep" the next call resumes from the final snapshot and trains nothing."""
    steps: list[int] = []

    @resumable(state=0, store=tmp_path, on_success="keep", every=4)
    def train(total: int, state: int = 0) -> Iterator[int]:
        for step in range(state, total):
            steps.append(step)
            yield step + 1

    train(10)
    assert steps == list(range(10))  # the last yields (held back by every=4) are kept too
    train(10)
    assert steps == list(range(10))


def test_cleared_task_next_call_starts_fresh(tmp_path: Path) -> None:
    """With the default on_success="clear" the next call of a pickled-state task starts over."""
    starts: list[int] = []

    @resumable(state=0, store=tmp_path)
    def train(total: int, state: int = 0) -> Iterator[int]:
        starts.append(state)
        for step in range(state, total):
            yield step + 1

    train(5)
    train(5)
    assert starts == [0, 0]
