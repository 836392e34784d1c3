"""Bad options are refused at decoration (or when the call starts), with a clear message."""

from __future__ import annotations

import inspect
import math
import re
import threading
from datetime import timedelta
from typing import Any

import pytest
import tenacity

from resumable import (
    ConfigurationError,
    RetryPolicy,
    StateError,
    resumable,
)


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


# -- the decorator's signature --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 2, "retry": RetryPolicy()}, "attempts= or retry="),
        ({"retry": 3}, "retry"),
        ({"retry": RetryPolicy(timeout=5.0)}, "timeout"),
        ({"storage": {"keep": 2}}, "storage"),
        ({"on_success": "delete"}, "on_success"),
        ({"key": "../escape"}, "key"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, Any], match: str) -> None:
    """Bad decorator arguments raise a ValueError naming the argument."""
    with pytest.raises(ConfigurationError, match=match):
        resumable(**options)


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"retries": 2}, "attempts=<retries + 1>"),
        ({"wait": 0}, "retry=RetryPolicy(wait=...)"),
        ({"retry_on": KeyError}, "retry=RetryPolicy(retry_on=...)"),
        ({"no_retry_on": KeyError}, "retry=RetryPolicy(no_retry_on=...)"),
        ({"every_seconds": 5}, "every=datetime.timedelta(seconds=...)"),
        ({"keep": 3}, "storage=Storage(keep=...)"),
        ({"signing_key": "k"}, "storage=Storage(signing_key=...)"),
        ({"storage_options": {}}, "storage=Storage(storage_options=...)"),
        ({"storage_retry": RetryPolicy()}, "storage=Storage(retry=...)"),
        ({"arg": "ckpt"}, "name the task's parameter `state`"),
    ],
)
def test_removed_options_name_their_replacement(options: dict[str, Any], fix: str) -> None:
    """An option @resumable no longer takes is a TypeError that says what to write instead."""
    with pytest.raises(TypeError, match=re.escape(fix)):
        resumable(**options)


def test_the_decorator_takes_at_most_twelve_parameters() -> None:
    """@resumable stays small: twelve keyword-only options, the store's in one Storage."""
    params = inspect.signature(resumable).parameters
    assert len(params) <= 12
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())


def test_missing_state_parameter_is_reported() -> None:
    """A task without a parameter to receive the state is refused at decoration."""
    with pytest.raises(ConfigurationError, match="no parameter 'state'"):

        @resumable(state=0)
        def task(n: int) -> None: ...


def test_unpicklable_initial_state_is_refused() -> None:
    """An initial state that cannot be pickled is refused at decoration."""
    with pytest.raises(StateError):
        resumable(state=threading.Lock())


def test_positional_only_usage_is_refused() -> None:
    """Resumable takes keyword arguments only."""
    with pytest.raises(TypeError):
        resumable(0)  # type: ignore[misc]


# -- retry policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"no_retry_on": "ValueError"}, "no_retry_on"),
        ({"no_retry_on": (ValueError, 3)}, "no_retry_on"),
        ({"retry_on": tenacity.wait_fixed(1)}, "retry_on"),
        ({"retry_on": ()}, "retry_on"),
    ],
)
def test_bad_retry_options_are_refused(options: dict[str, Any], word: str) -> None:
    """no_retry_on takes exception types; retry_on types or a tenacity retry strategy."""
    with pytest.raises(ConfigurationError, match=word):
        RetryPolicy(**options)
