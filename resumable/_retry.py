"""Storage retries and deadlines: the one retry layer, where attempts mean attempts.

``RetryPolicy(attempts=N)`` bounds the tries within one *operation* (a save or a load), counted
across everything the operation does:

- :class:`RetryingBackend` retries each storage call on a transient error and gives each try a
  deadline (``policy.timeout``, 60 s by default);
- :func:`retry_call` retries a whole operation from its start when a stream fails mid-way (an
  upload or a download cannot resume after a fault, so a ``write`` or a ``read`` is never
  retried on its own) -- with a source that produces its bytes again on each try.

The operation keeps one tally of failures per call (``"listing s3://b/k"``) and of its own
restarts, across restarts: a call that keeps failing is tried at most N times in all, and the
operation is started at most N times -- never N x N, as two nested retry loops would. When a
call's tries are spent, the error names that call, once::

    StorageError: saving a snapshot to s3://b/k: listing s3://b/k failed after 3 tries: ...

A call that misses its deadline keeps running on its daemon IO thread (see ``_threads``): a
thread cannot be stopped, and a daemon thread does not keep the interpreter from exiting.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, TypeGuard, TypeVar, cast

from tenacity import RetryCallState, Retrying, retry_base, retry_if_exception
from tenacity.wait import WaitBaseT, wait_exponential, wait_fixed, wait_random

from ._backend import AdminBackend, Backend, BlobWriter, ForwardingBackend
from ._errors import ConfigurationError, DeadlineExceeded, ResumableError, StorageError
from ._threads import call_with_deadline, run_on_io, wait_with_deadline

__all__ = [
    "ANSWERS",
    "DEFAULT_TIMEOUT",
    "TRANSIENT",
    "DeadlineExceeded",
    "ExceptionTypes",
    "RetryPolicy",
    "RetryingBackend",
    "backoff",
    "deadline",
    "exception_types",
    "finite_seconds",
    "never_retried",
    "retry_call",
    "storage_errors",
    "storage_policy",
]

log = logging.getLogger("resumable")

T = TypeVar("T")

#: Errors that are answers from the store, not faults: retrying cannot change them.
ANSWERS: tuple[type[BaseException], ...] = (
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
# A full disk, a read-only mount or an over-long name stay that way however often we ask.
_ANSWER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG})


#: One exception type, or a tuple of them.
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]

#: What a storage call retries unless the policy says otherwise (answers never are).
TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)

#: Seconds one storage call may take unless the policy says otherwise.
DEFAULT_TIMEOUT = 60.0


def _default_wait() -> WaitBaseT:
    # wait_exponential_jitter's spelling of its first wait changed within tenacity 9.x.
    return wait_exponential(multiplier=0.05, max=1.95) + wait_random(0, 0.05)


def finite_seconds(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a real, finite number of seconds >= 0 (not a bool, NaN or inf)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def exception_types(value: object) -> tuple[type[BaseException], ...] | None:
    """``value`` as a tuple of exception types; None when it is not a type or a tuple of them."""
    items = value if isinstance(value, tuple) else (value,)
    types = tuple(t for t in items if isinstance(t, type) and issubclass(t, BaseException))
    return types if len(types) == len(items) else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often to try, how long to wait between tries, and which errors are worth another.

    One type for both things ``resumable`` retries: a task (``@resumable(retry=...)``) and
    its storage calls (``Storage(retry=...)``). ``attempts`` always counts tries, the first
    included, as stamina's ``attempts`` does: ``RetryPolicy(attempts=3)`` tries at most 3
    times. What a field left at ``None`` means depends on what is retried.

    Args:
        attempts: tries, the first included (at least 1). For storage, the tries of one save
            or load: every failed storage call and every restart of the operation spends one,
            so no call and no operation is ever tried more than ``attempts`` times.
        wait: seconds between tries, or a tenacity wait strategy. ``None``: exponential
            backoff with jitter, from 0.05 s capped at 2 s for storage, from 0.1 s capped at
            10 s for a task (``tenacity.wait_none()`` or ``0`` in tests).
        timeout: seconds one storage call may take before it counts as failed (``None``:
            60 s). Storage only: a task's attempts are not timed, and a task's policy with a
            timeout is refused.
        retry_on: exception types worth another try, or (for a task only) a tenacity retry
            strategy that decides from the failed attempt, such as
            ``tenacity.retry_if_exception(pred)``; only exceptions are ever retried, never
            results. ``None``: for storage, transient I/O errors (``OSError``,
            ``TimeoutError``, ``ConnectionError``); for a task, any ``Exception``.
        no_retry_on: exception types never retried, even when ``retry_on`` matches them
            ("retry everything except these"). Never retried either way: the library's own
            errors (``ResumableError``), and for storage the store's answers
            (``FileExistsError``, ``FileNotFoundError``, ``IsADirectoryError``,
            ``NotADirectoryError``, ``PermissionError``, a full or read-only disk).

    Example:
        >>> import tenacity
        >>> policy = RetryPolicy(attempts=3, wait=tenacity.wait_none(), timeout=5.0)
        >>> policy.is_transient(ConnectionResetError()), policy.is_transient(FileExistsError())
        (True, False)
        >>> from resumable import resumable
        >>> @resumable(state=0, retry=RetryPolicy(attempts=3, retry_on=ConnectionError, wait=0))
        ... def fetch(state=0):
        ...     return state

    """

    attempts: int = 5
    wait: float | WaitBaseT | None = None
    timeout: float | None = None
    retry_on: ExceptionTypes | retry_base | None = None
    no_retry_on: ExceptionTypes = ()

    def __post_init__(self) -> None:
        _check_attempts(self.attempts)
        if not (self.wait is None or callable(self.wait) or finite_seconds(self.wait)):
            raise ConfigurationError(
                f"wait must be finite seconds (>= 0), a tenacity wait strategy or None, got "
                f"{self.wait!r}"
            )
        timeout = self.timeout
        if timeout is not None and not (finite_seconds(timeout) and timeout > 0):
            raise ConfigurationError(f"timeout must be a positive number, got {timeout!r}")
        object.__setattr__(self, "retry_on", _retry_on(self.retry_on))
        never = exception_types(self.no_retry_on)
        if never is None:
            raise ConfigurationError(
                f"no_retry_on must be an exception type or a tuple of them, got "
                f"{self.no_retry_on!r}"
            )
        object.__setattr__(self, "no_retry_on", never)

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a storage call that raised ``exc`` is worth another try (not an answer).

        The library's own errors are answers too: a ``StorageError`` means the tries are spent.
        """
        retry_on = self.retry_on if isinstance(self.retry_on, tuple) else TRANSIENT
        never = (*ANSWERS, ResumableError, *never_retried(self))
        if not isinstance(exc, retry_on) or isinstance(exc, never):
            return False
        return not (isinstance(exc, OSError) and exc.errno in _ANSWER_ERRNOS)


def _check_attempts(attempts: object) -> None:
    if not isinstance(attempts, int) or isinstance(attempts, bool):
        raise ConfigurationError(f"attempts must be a whole number, got {attempts!r}")
    if attempts < 1:
        raise ConfigurationError(
            f"attempts must be at least 1 (it counts tries, the first included), got {attempts}"
        )


def _retry_on(value: object) -> tuple[type[BaseException], ...] | retry_base | None:
    """``retry_on`` checked: None, a tenacity strategy, or exception types as a tuple."""
    if value is None or isinstance(value, retry_base):
        return value
    types = exception_types(value)
    if not types:
        raise ConfigurationError(
            "retry_on must be an exception type, a tuple of them or a tenacity retry "
            f"strategy, got {value!r}"
        )
    return types


def never_retried(policy: RetryPolicy) -> tuple[type[BaseException], ...]:
    """The exception types ``policy`` never retries (its ``no_retry_on``, as a tuple)."""
    never = policy.no_retry_on
    return never if isinstance(never, tuple) else (never,)


def storage_policy(policy: RetryPolicy | None) -> RetryPolicy:
    """``policy`` checked for storage calls: the default one when None.

    Storage retries decide by exception type: a tenacity strategy in ``retry_on`` is refused.
    """
    policy = policy or RetryPolicy()
    if isinstance(policy.retry_on, retry_base):
        raise ConfigurationError(
            "a storage RetryPolicy decides by exception type: give retry_on exception types, "
            "not a tenacity strategy (strategies are for a task's retry=)"
        )
    return policy


def backoff(policy: RetryPolicy, default: Callable[[], WaitBaseT]) -> WaitBaseT:
    """The tenacity wait strategy of ``policy``: its own, fixed seconds, or ``default()``."""
    wait = policy.wait
    if wait is None:
        return default()
    if callable(wait):
        return wait
    return wait_fixed(wait)


def deadline(policy: RetryPolicy) -> float:
    """Seconds one storage call may take under ``policy``."""
    return DEFAULT_TIMEOUT if policy.timeout is None else policy.timeout


class _Budget:
    """The failures of one operation so far: per call, and of the operation itself."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.failures: Counter[str] = Counter()

    def failed(self, what: str) -> bool:
        """Count a failed try of ``what``; whether it may be tried again."""
        self.failures[what] += 1
        return self.failures[what] < self.attempts


#: The budget of the operation running in this context (None: each call has its own).
_OPERATION: ContextVar[_Budget | None] = ContextVar("resumable_retry_budget", default=None)


def _tries(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'}"


def _retrying(
    fn: Callable[[], T], policy: RetryPolicy, what: str, retry: Callable[[BaseException], bool]
) -> T:
    """``fn()``, tried again while ``retry(exc)`` and the operation's budget allows.

    The one retry loop of the library's storage: per call and per operation alike.
    """
    budget = _OPERATION.get() or _Budget(policy.attempts)

    def stop(state: RetryCallState) -> bool:
        return not budget.failed(what)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "%s failed (try %d of at most %d: %s: %s); retrying in %.2f s",
            what,
            budget.failures[what],
            policy.attempts,
            type(exc).__name__,
            exc,
            state.upcoming_sleep,
        )

    retrying = Retrying(
        stop=stop,
        wait=backoff(policy, _default_wait),
        retry=retry_if_exception(retry),
        reraise=True,
        before_sleep=before_sleep,
    )
    try:
        return retrying(fn)
    except Exception as exc:
        if not retry(exc):
            raise  # an answer, a library error, or an error this policy does not retry
        tries = budget.failures[what]
        if isinstance(exc, DeadlineExceeded):
            raise DeadlineExceeded(
                f"{what} did not answer within {deadline(policy):g} s ({_tries(tries)}); the "
                "previous snapshot is intact"
            ) from exc
        detail = f"{type(exc).__name__}: {exc}"
        raise StorageError(
            f"{what} failed after {_tries(tries)}: {detail}; the previous snapshot is intact"
        ) from exc


def retry_call(fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """``fn()``, started over on a transient error, all of it within one budget of tries.

    For an operation that streams, such as a whole commit: ``fn`` must produce its input again
    on each call. The storage calls it makes through a :class:`RetryingBackend` spend the same
    budget. A ``StorageError`` gets ``what`` in front of its message.

    Example:
        >>> import tenacity
        >>> tries = []
        >>> def flaky() -> str:
        ...     tries.append(1)
        ...     if len(tries) < 3:
        ...         raise ConnectionResetError("reset by peer")
        ...     return "done"
        >>> retry_call(flaky, RetryPolicy(wait=tenacity.wait_none()), "a flaky call"), len(tries)
        ('done', 3)

    """
    token = _OPERATION.set(_Budget(policy.attempts))
    try:
        return _retrying(fn, policy, what, policy.is_transient)
    except StorageError as exc:
        raise type(exc)(f"{what}: {exc}") from exc
    finally:
        _OPERATION.reset(token)


class _Serial:
    """One stream's calls, one at a time, each with a deadline.

    After a call misses its deadline it may still be running, and streams are not thread
    safe (a local file's descriptor could be closed and reused under it): later calls
    fail at once, and the closing call is put off until the stray call ends.
    """

    def __init__(self, timeout: float, target: str) -> None:
        self._timeout = timeout
        self._target = target
        self._stray: Future[Any] | None = None

    def call(self, fn: Callable[[], T], name: str) -> T:
        what = f"{name} {self._target}"
        if self._stray is not None and not self._stray.done():
            raise StorageError(f"{what}: an earlier call on it is still running")
        future = run_on_io(fn)
        try:
            return wait_with_deadline(future, self._timeout, what)
        except DeadlineExceeded:
            self._stray = future
            raise

    def finish(self, fn: Callable[[], None], name: str) -> None:
        """Run the closing call ``fn`` now, or once a stray call ends; never raises a timeout."""
        stray = self._stray
        if stray is not None and not stray.done():
            stray.add_done_callback(lambda _: _quietly(fn, f"{name} {self._target}"))
            return
        try:
            self.call(fn, name)
        except DeadlineExceeded as exc:
            log.warning("%s; leaving it to finish on its own", exc)


def _quietly(fn: Callable[[], None], what: str) -> None:
    try:
        fn()
    except Exception as exc:
        log.warning("%s failed after an earlier call timed out: %s", what, exc)


class _DeadlineWriter:
    """A BlobWriter whose calls have a deadline and are not retried (see the module doc)."""

    def __init__(self, inner: BlobWriter, timeout: float, target: str) -> None:
        self._inner = inner
        self._serial = _Serial(timeout, target)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._serial.call(lambda: self._inner.write(data), "write")

    def commit(self) -> None:
        self._serial.call(self._inner.commit, "commit")

    def abort(self) -> None:
        # abort runs while another error propagates: it must not replace that error.
        self._serial.finish(self._inner.abort, "abort")


class _DeadlineReader:
    """A read stream whose reads have a deadline and are not retried (see the module doc)."""

    def __init__(self, inner: BinaryIO, timeout: float, target: str) -> None:
        self._inner = inner
        self._serial = _Serial(timeout, target)
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        return self._serial.call(lambda: self._inner.read(size), "read")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._serial.finish(self._inner.close, "close")

    def __enter__(self) -> _DeadlineReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _holds(backend: Backend, name: str, data: bytes) -> bool:
    try:
        return backend.read(name) == data
    except FileNotFoundError:
        return False  # removed again since: it was not ours to keep


class RetryingBackend(ForwardingBackend):
    """A backend whose calls have a deadline and are retried on transient errors.

    Answers (an object exists, is missing, ...) pass through at once. After the last try a
    call raises :class:`~resumable.StorageError` (:class:`DeadlineExceeded` when it never
    answered). Streams are not retried call by call; see :func:`retry_call`.

    Example:
        >>> import tempfile, tenacity
        >>> from resumable._backend import open_backend
        >>> backend = RetryingBackend(
        ...     open_backend(tempfile.mkdtemp(), None), RetryPolicy(wait=tenacity.wait_none())
        ... )
        >>> backend.create_exclusive("a.json", b"{}")
        >>> backend.read("a.json")
        b'{}'

    """

    def __init__(self, backend: AdminBackend, policy: RetryPolicy | None = None) -> None:
        super().__init__(backend)
        self.policy = storage_policy(policy)

    def __repr__(self) -> str:
        return f"RetryingBackend({self.backend!r}, {self.policy!r})"

    def wrap(self, inner: AdminBackend) -> AdminBackend:
        """``inner`` with the same policy (a child folder's backend)."""
        return RetryingBackend(inner, self.policy)

    def _retried(self, exc: BaseException) -> bool:
        # A call that hung is worth another try; the operation is not restarted for it.
        return self.policy.is_transient(exc) or isinstance(exc, DeadlineExceeded)

    def call(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` with a deadline per try, retried on transient errors within the budget."""
        timeout = deadline(self.policy)
        return _retrying(
            lambda: call_with_deadline(fn, timeout, what), self.policy, what, self._retried
        )

    def open_read(self, name: str) -> BinaryIO:
        """A stream over an object: opening is retried, each read has a deadline."""
        stream = super().open_read(name)
        return cast(BinaryIO, _DeadlineReader(stream, deadline(self.policy), self.target(name)))

    def writer(self, name: str) -> BlobWriter:
        """A writer for a new object: opening is retried, each write and commit has a deadline."""
        return _DeadlineWriter(super().writer(name), deadline(self.policy), self.target(name))

    def create_exclusive(self, name: str, data: bytes) -> None:
        """Create a small object once; ``FileExistsError`` when another writer made it.

        A try that failed may still have created the object (the reply was lost, or the call
        finished after its deadline), so a later try that finds it compares the bytes: equal
        bytes are our own object, and the call succeeded.
        """
        failed_before = False

        def attempt() -> None:
            nonlocal failed_before
            try:
                self.backend.create_exclusive(name, data)
            except FileExistsError:
                if failed_before and _holds(self.backend, name, data):
                    return
                raise
            except BaseException:
                failed_before = True
                raise

        what = self.what("creating", name)
        timeout = deadline(self.policy)

        def with_deadline() -> None:
            nonlocal failed_before
            try:
                call_with_deadline(attempt, timeout, what)
            except DeadlineExceeded:
                failed_before = True
                raise

        _retrying(with_deadline, self.policy, what, self._retried)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Report the store's own errors as StorageError: a library error, never a task's.

    A ``StorageError`` is not retried by ``@resumable`` and never counts against a snapshot
    as a crash of the task. The library's own errors and a vanished source pass unchanged.
    """
    try:
        yield
    except ResumableError:
        raise
    except OSError as exc:
        raise StorageError(f"{what} failed: {exc!r}; the previous snapshot is intact") from exc
