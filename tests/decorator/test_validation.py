"""Bad arguments are refused when the call starts (or at decoration), with a clear message."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from resumable import Checkpoint, ConfigurationError, RetryPolicy, resumable
from resumable._checkpoint import Captured, SaveData


def test_key_too_long_for_a_store_name_is_refused_at_decoration() -> None:
    """A key segment over 255 bytes is refused before anything runs."""
    with pytest.raises(ConfigurationError, match="255 bytes"):
        resumable(key="k" * 256)


def test_key_from_a_callable_too_long_is_refused_when_the_call_starts() -> None:
    """A computed key that is too long is refused before the task body runs."""
    ran = []

    @resumable(key=lambda: "k" * 256, store="memory://too-long")
    def task() -> None:
        ran.append(1)

    with pytest.raises(ConfigurationError, match="255 bytes"):
        task()
    assert ran == []


@pytest.mark.parametrize("value", [math.inf, math.nan, -1, True, "1"])
def test_wait_must_be_finite_seconds(value: Any) -> None:
    """``wait=inf`` would hang a retry forever; NaN, negatives, bools and text are refused."""
    with pytest.raises(ConfigurationError, match="wait must be"):
        resumable(retry=RetryPolicy(attempts=1, wait=value))


@pytest.mark.parametrize("value", [timedelta(seconds=-0.5), True, "5", 1.5, 0, None])
def test_every_must_be_yields_or_a_timedelta(value: Any) -> None:
    """``every=`` is a whole number of yields >= 1 or a timedelta >= 0: others are refused."""
    with pytest.raises(ConfigurationError, match="every"):
        resumable(every=value)


@pytest.mark.parametrize("name", ["background", "preemptible"])
@pytest.mark.parametrize("value", [1, "no", None, 0.0])
def test_flags_must_be_bools(name: str, value: Any) -> None:
    """``background="no"`` would silently mean True: flags take only True or False."""
    with pytest.raises(ConfigurationError, match=f"{name} must be True or False"):
        resumable(**{name: value})


def test_async_save_copies_a_large_buffer_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``await cp.save(bytearray)`` copies the buffer on an IO thread, and before it returns."""
    loop_thread: list[threading.Thread] = []
    capture_threads: list[threading.Thread] = []
    capture = Checkpoint.capture

    def spy(self: Checkpoint, data: SaveData, *, frozen: bool = False) -> Captured:
        capture_threads.append(threading.current_thread())
        return capture(self, data, frozen=frozen)

    monkeypatch.setattr(Checkpoint, "capture", spy)
    buffer = bytearray(b"x" * (8 << 20))

    async def main() -> None:
        loop_thread.append(threading.current_thread())
        with Checkpoint(tmp_path) as cp:
            await cp.save(buffer)
            buffer[:4] = b"gone"  # the caller reuses its buffer once save returned
            root = await cp.load()
            assert root is not None
            assert (root / "payload").read_bytes()[:4] == b"xxxx"

    asyncio.run(main())
    assert capture_threads
    assert loop_thread[0] not in capture_threads
