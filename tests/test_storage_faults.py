"""Storage faults through the public API: flaky stores are survived, hung ones time out."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
import tenacity

from resumable import Checkpoint, RetryPolicy, StorageError, resumable
from resumable._codec import loads_state
from resumable.testing import FaultyFileSystem

FAST = RetryPolicy(attempts=8, wait=tenacity.wait_none(), timeout=30.0)


def faulty(**options: Any) -> dict[str, Any]:
    return {"target_protocol": "memory", "seed": 3, **options}


def test_thousand_steps_with_a_fifth_of_storage_calls_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 1,000-step task whose store fails 20% of calls finishes right, every step saved."""
    store = f"faulty:///faults-{uuid.uuid4().hex}"
    seen: list[int] = []

    @resumable(
        state=0,
        store=store,
        key="steps",
        storage_options=faulty(fail_rate=0.2),
        storage_retry=FAST,
        on_success="keep",
    )
    def steps(n: int, state: int = 0) -> Any:
        for i in range(state, n):
            seen.append(i)
            yield i + 1
        return n

    with caplog.at_level(logging.ERROR, logger="resumable"):
        assert steps(1000) == 1000
    assert seen == list(range(1000))
    with Checkpoint(f"{store}/steps", storage_options=faulty(), retry=FAST) as cp:
        cp.load_sync()
        assert loads_state((cp.path / "payload").read_bytes()) == 1000


def test_flaky_store_checkpoint_round_trips() -> None:
    """Checkpoint saves and loads through a store that fails a third of its calls."""
    url = f"faulty:///flaky-{uuid.uuid4().hex}"
    with Checkpoint(url, storage_options=faulty(fail_rate=0.33), retry=FAST) as cp:
        for i in range(30):
            cp.save_sync(str(i).encode() * 30_000)  # some inlined, most payload objects
        assert (cp.load_sync() / "payload").read_bytes() == b"29" * 30_000


def test_hung_store_times_out_with_storage_error() -> None:
    """A store call that hangs ends in StorageError after the policy's timeout, not a hang."""
    url = f"faulty:///hung-{uuid.uuid4().hex}"
    policy = RetryPolicy(attempts=1, wait=tenacity.wait_none(), timeout=0.2)
    cp = Checkpoint(url, storage_options=faulty(hang_rate=1.0, hang_seconds=30), retry=policy)
    fs = cp._store.backend.backend.backend.fs  # type: ignore[attr-defined]
    assert isinstance(fs, FaultyFileSystem)
    try:
        with pytest.raises(StorageError, match=r"did not answer within 0\.2 s"):
            cp.save_sync(b"x")
    finally:
        fs.release()
        assert fs.wait_idle(timeout=10)
        cp.close()


def test_gives_up_with_storage_error_that_says_previous_is_intact() -> None:
    """When every try fails, StorageError says what failed; the previous snapshot stays."""
    url = f"faulty:///down-{uuid.uuid4().hex}"
    with Checkpoint(url, storage_options=faulty(), retry=FAST) as healthy:
        healthy.save_sync(b"previous")
    policy = RetryPolicy(attempts=2, wait=tenacity.wait_none(), timeout=5)
    with (
        Checkpoint(url, storage_options=faulty(fail_rate=1.0), retry=policy) as broken,
        pytest.raises(StorageError, match="previous snapshot is intact"),
    ):
        broken.save_sync(b"new")
    with Checkpoint(url, storage_options=faulty(), retry=FAST) as again:
        assert (again.load_sync() / "payload").read_bytes() == b"previous"


def test_truncated_uploads_are_never_loaded() -> None:
    """Writes the store silently truncates are caught by verification on load."""
    url = f"faulty:///torn-{uuid.uuid4().hex}"
    with Checkpoint(url, storage_options=faulty(), retry=FAST) as cp:
        cp.save_sync(b"whole" * 20_000)
    torn = Checkpoint(url, storage_options=faulty(truncate_rate=1.0), retry=FAST)
    try:
        torn.save_sync(b"torn!" * 20_000)
    except StorageError:
        pass  # a truncated manifest may fail to commit at all: also fine
    finally:
        torn.close()
    with Checkpoint(url, storage_options=faulty(), retry=FAST) as cp:
        assert (cp.load_sync() / "payload").read_bytes() == b"whole" * 20_000
