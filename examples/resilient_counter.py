"""The resilient counter: a task that fails halfway through its first attempt and resumes.

Run: python examples/resilient_counter.py  (snapshots go to ./.resumable)

Attempt 1 processes iterations 0-4, then fails. Attempt 2 is handed the last snapshot (5) as
`state` and processes 5-9 only. Kill the script with Ctrl-C or `kill -9` halfway instead, run
it again, and it resumes the same way: the snapshots are on disk.
"""

from __future__ import annotations

import logging

from resumable import RetryPolicy, ctx, resumable


@resumable(state=0, retry=RetryPolicy(attempts=4, wait=0.1))
def resilient_counter(n_iterations: int, state: int = 0) -> int:
    for index in range(state, n_iterations):
        if index == n_iterations // 2 and ctx().attempt_number() == 0:
            raise RuntimeError("Simulated failure on first attempt!")
        print(f"Processing iteration {index}")
        yield index + 1  # a snapshot: persisted, and handed back as `state` after a failure
    return n_iterations  # the result of the call


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = resilient_counter(n_iterations=10)
    print(f"Result: {result}")
    assert result == 10
