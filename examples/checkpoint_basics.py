"""Checkpoint on its own: a job whose first attempt dies halfway and whose second resumes.

Run: python examples/checkpoint_basics.py  (stores under ./.resumable/checkpoint-basics)
"""

from __future__ import annotations

import json

from resumable import Checkpoint

TOTAL = 10


def process(cp: Checkpoint, attempt: int) -> int:
    """Sum the squares of 0..TOTAL-1, saving progress after every item."""
    root = cp.load_sync()
    progress = {"next": 0, "total": 0}
    if root is not None:
        progress = json.loads((root / "payload").read_text())
        print(f"attempt {attempt}: resuming at item {progress['next']}")
    for i in range(progress["next"], TOTAL):
        if attempt == 1 and i == TOTAL // 2:
            raise RuntimeError(f"simulated crash at item {i}")
        progress = {"next": i + 1, "total": progress["total"] + i * i}
        cp.save_sync(json.dumps(progress).encode())
    return progress["total"]


def main() -> None:
    with Checkpoint(".resumable/checkpoint-basics") as cp:
        for attempt in (1, 2):  # counted from 1, as the library's logs count them
            try:
                result = process(cp, attempt)
            except RuntimeError as exc:
                print(f"attempt {attempt} failed: {exc}")
                continue
            print(f"attempt {attempt} finished: {result}")
            assert result == sum(i * i for i in range(TOTAL))
            return
    raise SystemExit("did not finish")


if __name__ == "__main__":
    main()
