"""The retry mapping docs/migrating-from-flyte.md gives is flyte's behaviour, wait for wait.

flyte-sdk paces a task's retries with ``flyte.Backoff(base, factor, cap)``: retry ``n`` (0 for
the first) waits ``min(base * factor**n, cap)`` (``Backoff.compute_delay``), and without a
backoff the retries fire back to back; ``RetryStrategy(count=N)`` allows N retries after the
first try. The guide maps these to ``RetryPolicy(attempts=N + 1, wait=...)``. Where flyte is
installed its own ``Backoff.compute_delay`` is the reference; everywhere, flyte's documented
formula is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
import tenacity

from resumable import RetryPolicy, resumable


def documented_delay(base: timedelta, factor: float, cap: timedelta | None, n: int) -> float:
    """The delay flyte documents before retry ``n``: ``min(base * factor**n, cap)``, seconds."""
    delay = base * factor**n
    return (delay if cap is None or delay <= cap else cap).total_seconds()


def flyte_delay(base: timedelta, factor: float, cap: timedelta | None, n: int) -> float:
    """The delay flyte itself computes (skips where flyte, or its ``Backoff``, is missing)."""
    flyte = pytest.importorskip("flyte", reason="flyte is not installed (extra: benchmark)")
    if not hasattr(flyte, "Backoff"):
        pytest.skip(f"flyte {getattr(flyte, '__version__', '?')} has no Backoff")
    delay: timedelta = flyte.Backoff(base=base, factor=factor, cap=cap).compute_delay(n)
    return delay.total_seconds()


REFERENCES = [
    pytest.param(documented_delay, id="documented"),
    pytest.param(flyte_delay, id="flyte"),
]
#: (base, factor, cap) as flyte takes them: its docstring's example, a constant delay, others.
BACKOFFS = [
    (timedelta(seconds=10), 2.0, timedelta(minutes=5)),
    (timedelta(seconds=3), 1.0, None),
    (timedelta(milliseconds=250), 1.5, timedelta(seconds=7)),
    (timedelta(0), 2.0, timedelta(seconds=1)),
]


def guide_wait(base: timedelta, factor: float, cap: timedelta | None) -> tenacity.wait.wait_base:
    """The wait the guide gives for ``flyte.Backoff(base, factor, cap)``."""
    if factor == 1.0 and cap is None:
        return tenacity.wait_fixed(base.total_seconds())  # what `wait=<seconds>` becomes
    assert cap is not None  # flyte requires a cap when factor > 1
    return tenacity.wait_exponential(
        multiplier=base.total_seconds(), exp_base=factor, max=cap.total_seconds()
    )


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize(("base", "factor", "cap"), BACKOFFS)
def test_backoff_maps_to_the_same_waits(
    reference: Callable[[timedelta, float, timedelta | None, int], float],
    base: timedelta,
    factor: float,
    cap: timedelta | None,
) -> None:
    """Before each of 40 retries, the guide's tenacity wait is flyte's delay (to the µs)."""
    wait = guide_wait(base, factor, cap)
    for n in range(40):
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = n + 1  # tenacity: tries made so far, 1 before the first retry
        # flyte computes in timedelta, rounded to the microsecond.
        assert wait(state) == pytest.approx(reference(base, factor, cap, n), rel=0, abs=1e-6)


def _waits(caplog: pytest.LogCaptureFixture, retry: RetryPolicy) -> tuple[int, list[str]]:
    """Tries of a task that always fails under ``retry``, and the waits it logged, in order."""
    tries = []

    @resumable(state=0, store="memory://flyte-migration", retry=retry)
    def always_fails(state: int = 0) -> None:
        tries.append(state)
        raise ConnectionError("the service is down")

    with caplog.at_level(logging.WARNING, logger="resumable"), pytest.raises(ConnectionError):
        always_fails()
    waits = [m[1] for r in caplog.records if (m := re.search(r"retrying in (\S+) s", r.message))]
    return len(tries), waits


def test_retry_strategy_count_and_backoff_run_as_flyte_would(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RetryStrategy(count=3, Backoff(10 ms, 3, 50 ms)): 4 tries, 0.01, 0.03 and 0.05 s apart."""
    base, factor, cap, count = timedelta(milliseconds=10), 3.0, timedelta(milliseconds=50), 3
    policy = RetryPolicy(attempts=count + 1, wait=guide_wait(base, factor, cap))
    tries, waits = _waits(caplog, policy)
    assert tries == count + 1
    assert waits == [f"{documented_delay(base, factor, cap, n):.2f}" for n in range(count)]


def test_retry_strategy_without_backoff_is_back_to_back(caplog: pytest.LogCaptureFixture) -> None:
    """RetryStrategy(count=2) with no backoff: RetryPolicy(attempts=3, wait=0), no wait."""
    assert _waits(caplog, RetryPolicy(attempts=3, wait=0)) == (3, ["0.00", "0.00"])
