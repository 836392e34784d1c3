"""Directory state: a training-style loop that writes checkpoint files into a folder.

Run: python examples/directory_state.py

`Dir("runs/demo")` is restored before each attempt so that the folder is IDENTICAL to the last
snapshot (files written after it are removed), and every `yield` snapshots the whole folder.
`latest_checkpoint` then finds the newest `last.ckpt` the "framework" wrote.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from resumable import Dir, RetryPolicy, ctx, latest_checkpoint, resumable

EPOCHS = 6


@resumable(state=Dir("runs/demo"), retry=RetryPolicy(attempts=3, wait=0))
def train(epochs: int, state: Path | None = None) -> float:
    assert state is not None
    newest = latest_checkpoint(state)
    finished, loss = 0, 1.0
    if newest is not None:
        saved = json.loads(newest.read_text())
        finished, loss = saved["epoch"], saved["loss"]
        print(f"resuming after epoch {finished} from {newest.relative_to(state)}")
    for epoch in range(finished + 1, epochs + 1):
        if epoch == 4 and ctx().attempt_number() == 0:
            (state / "partial.tmp").write_text("a torn write that the restore removes")
            raise RuntimeError("spot instance reclaimed")
        loss *= 0.5
        out = state / f"epoch-{epoch:03d}"
        out.mkdir()
        (out / "last.ckpt").write_text(json.dumps({"epoch": epoch, "loss": loss}))
        print(f"epoch {epoch}: loss {loss:.4f}")
        yield  # snapshot the folder
    assert not (state / "partial.tmp").exists()
    return loss


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    final = train(EPOCHS)
    print(f"final loss {final}")
    assert final == 0.5**EPOCHS
