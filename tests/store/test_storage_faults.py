"""Storage faults through the public API: flaky stores are survived, hung ones time out."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
import tenacity

from resumable import Checkpoint, RetryPolicy, Storage, StorageError, resumable, testing
from resumable._statecodec import read_state
from resumable.testing import FaultyFileSystem

# Many tries: a manifest's create is three calls, so at a fifth of calls failing a try fails
# half the time, and retention draws from the same seeded faults on a thread of its own (the
# sequence is not fixed): 30 tries make running out about 1e-9 per save.
FAST = RetryPolicy(attempts=30, wait=tenacity.wait_none(), timeout=30.0)


def save(cp: Checkpoint, mode: str, data: bytes) -> None:
    """Save through the sync method or its async twin."""
    if mode == "sync":
        cp.save_sync(data)
    else:
        asyncio.run(cp.save(data))


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
        on_success="keep",
        storage=Storage(storage_options=faulty(fail_rate=0.2), retry=FAST),
    )
    def steps(n: int, state: int = 0) -> Any:
        for i in range(state, n):
            seen.append(i)
            yield i + 1
        return n

    with caplog.at_level(logging.ERROR, logger="resumable"):
        assert steps(1000) == 1000
    assert seen == list(range(1000))
    with Checkpoint(f"{store}/steps", storage=Storage(storage_options=faulty(), retry=FAST)) as cp:
        cp.load_sync()
        assert read_state([(cp.path / "payload").read_bytes()])[0] == 1000


def test_flaky_store_checkpoint_round_trips() -> None:
    """Checkpoint saves and loads through a store that fails a third of its calls."""
    url = f"faulty:///flaky-{uuid.uuid4().hex}"
    # A manifest's create is three calls (open, write, close): at a third of calls failing, a
    # try fails 70 % of the time. Retention draws from the same seeded faults on its own
    # thread, so the sequence is not fixed: 40 tries make running out about 1e-6 per save.
    patient = RetryPolicy(attempts=40, wait=tenacity.wait_none(), timeout=30.0)
    with Checkpoint(
        url, storage=Storage(storage_options=faulty(fail_rate=0.33), retry=patient)
    ) as cp:
        for i in range(30):
            cp.save_sync(str(i).encode() * 30_000)  # some inlined, most payload objects
        assert (cp.load_sync() / "payload").read_bytes() == b"29" * 30_000


def test_hung_store_times_out_with_storage_error() -> None:
    """A store call that hangs ends in StorageError after the policy's timeout, not a hang."""
    url = f"faulty:///hung-{uuid.uuid4().hex}"
    policy = RetryPolicy(attempts=1, wait=tenacity.wait_none(), timeout=0.2)
    cp = Checkpoint(
        url, storage=Storage(storage_options=faulty(hang_rate=1.0, hang_seconds=30), retry=policy)
    )
    fs = testing.filesystem(cp)
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
    with Checkpoint(url, storage=Storage(storage_options=faulty(), retry=FAST)) as healthy:
        healthy.save_sync(b"previous")
    policy = RetryPolicy(attempts=2, wait=tenacity.wait_none(), timeout=5)
    with (
        Checkpoint(
            url, storage=Storage(storage_options=faulty(fail_rate=1.0), retry=policy)
        ) as broken,
        pytest.raises(StorageError, match="previous snapshot is intact"),
    ):
        broken.save_sync(b"new")
    with Checkpoint(url, storage=Storage(storage_options=faulty(), retry=FAST)) as again:
        assert (again.load_sync() / "payload").read_bytes() == b"previous"


def test_truncated_uploads_are_never_loaded() -> None:
    """Writes the store silently truncates are caught by verification on load."""
    url = f"faulty:///torn-{uuid.uuid4().hex}"
    with Checkpoint(url, storage=Storage(storage_options=faulty(), retry=FAST)) as cp:
        cp.save_sync(b"whole" * 20_000)
    torn = Checkpoint(url, storage=Storage(storage_options=faulty(truncate_rate=1.0), retry=FAST))
    try:
        torn.save_sync(b"torn!" * 20_000)
    except StorageError:
        pass  # a truncated manifest may fail to commit at all: also fine
    finally:
        torn.close()
    with Checkpoint(url, storage=Storage(storage_options=faulty(), retry=FAST)) as cp:
        assert (cp.load_sync() / "payload").read_bytes() == b"whole" * 20_000


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("payload", [b"small", b"large" * 40_000], ids=["inline", "blob"])
def test_attempts_mean_attempts_never_squared(mode: str, payload: bytes) -> None:
    """With every call failing, RetryPolicy(attempts=3) tries the failing call 3 times per save."""
    url = f"faulty:///down-{uuid.uuid4().hex}"
    policy = RetryPolicy(attempts=3, wait=tenacity.wait_none(), timeout=5)
    cp = Checkpoint(url, storage=Storage(storage_options=faulty(fail_rate=1.0), retry=policy))
    fs = testing.filesystem(cp)
    assert isinstance(fs, FaultyFileSystem)
    try:
        with pytest.raises(StorageError) as raised:
            save(cp, mode, payload)
    finally:
        cp.close()
    # The first call of a save is the listing: it fails, 3 times, and nothing else is tried.
    assert dict(fs.calls) == {"ls": 3}
    message = str(raised.value)
    assert "failed after 3 tries" in message
    assert message.count("tries") == 1  # the failing call is named once, not once per layer


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_restarted_save_shares_the_tries_of_its_calls(mode: str) -> None:
    """A save restarted after a failed upload never gives any call more than `attempts` tries."""
    url = f"faulty:///restart-{uuid.uuid4().hex}"
    policy = RetryPolicy(attempts=3, wait=tenacity.wait_none(), timeout=5)
    # Fail every upload write, and nothing else: each restart lists again, then fails to write.
    cp = Checkpoint(url, storage=Storage(storage_options=faulty(), retry=policy))
    fs = testing.filesystem(cp)
    real_enter = fs.enter_call

    def failing_writes(method: str, path: str) -> None:
        real_enter(method, path)
        if method == "write":
            raise ConnectionResetError(f"reset while writing {path}")

    fs.enter_call = failing_writes
    try:
        with pytest.raises(StorageError, match="failed after 3 tries"):
            save(cp, mode, b"x" * 200_000)
    finally:
        cp.close()
    assert fs.calls["write"] == 3  # 3 starts of the operation, one failed write each
    assert fs.calls["ls"] == 3
