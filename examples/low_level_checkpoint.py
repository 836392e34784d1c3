"""Using `ctx().checkpoint` directly: the task picks its own snapshot format.

Run: python examples/low_level_checkpoint.py

Without `state=`, nothing is injected: the task loads and saves raw bytes through its
Checkpoint (at `<store>/<key>`), and the decorator still retries it.
"""

from __future__ import annotations

import logging

from resumable import RetryPolicy, ctx, resumable


@resumable(retry=RetryPolicy(attempts=4, wait=0))
def process_data(items: list[str]) -> list[str]:
    cp = ctx().checkpoint
    root = cp.load_sync()
    done: list[str] = []
    if root is not None:
        done = (root / "payload").read_text().splitlines()
        print(f"attempt {ctx().attempt_number()}: {len(done)} items already processed")
    for item in items[len(done) :]:
        if item == "c" and ctx().attempt_number() == 0:
            raise RuntimeError("worker crashed")
        done.append(item.upper())
        cp.save_sync("\n".join(done).encode())
    return done


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = process_data(["a", "b", "c", "d"])
    print(result)
    assert result == ["A", "B", "C", "D"]
