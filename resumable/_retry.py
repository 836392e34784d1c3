"""Retries and deadlines for storage calls.

:class:`RetryingBackend` wraps any backend: each call gets a deadline and is retried on
transient errors (tenacity). Streams are the exception: a ``write`` or ``commit`` of a
:class:`~resumable._backend.BlobWriter`, or a ``read`` of an opened object, has a deadline but
is never retried on its own, because an upload or download cannot resume mid-way after a fault.
Retry the whole operation instead with :func:`retry_call`, whose callable builds its payload
chunks afresh on each attempt::

    retry_call(lambda: store.commit("bytes", [payload]), policy, "save to s3://bucket/key")

Composed this way, attempts multiply for transient errors (a call the backend gave up on may
be retried by the whole commit), but not for timeouts: a call that never answers costs at most
``attempts * timeout``, and :func:`retry_call` does not start the operation over after it.

A call that misses its deadline keeps running on its daemon worker thread, because a thread
cannot be stopped; a daemon thread, unlike a ``ThreadPoolExecutor`` worker, does not keep the
interpreter from exiting.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, BinaryIO, TypeVar, cast

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import WaitBaseT, wait_exponential, wait_random

from ._backend import Backend, BlobWriter, Entry
from ._errors import ConfigurationError, StorageError

__all__ = ["DeadlineExceeded", "RetryPolicy", "RetryingBackend", "retry_call"]

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


class DeadlineExceeded(StorageError, TimeoutError):
    """A storage call did not answer within the policy's timeout."""


def _default_wait() -> WaitBaseT:
    # wait_exponential_jitter's spelling of its first wait changed within tenacity 9.x.
    return wait_exponential(multiplier=0.05, max=1.95) + wait_random(0, 0.05)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to try a storage call.

    Args:
        attempts: tries per call, the first included (at least 1).
        wait: tenacity wait strategy between tries; exponential from 0.05 s, capped at 2 s,
            with jitter, by default (``tenacity.wait_none()`` in tests).
        timeout: seconds one try may take before it counts as failed.
        retry_on: exception types worth another try. Answers (``FileExistsError``,
            ``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``,
            ``PermissionError``, a full or read-only disk) are never retried.

    Example:
        >>> import tenacity
        >>> policy = RetryPolicy(attempts=3, wait=tenacity.wait_none(), timeout=5.0)
        >>> policy.is_transient(ConnectionResetError()), policy.is_transient(FileExistsError())
        (True, False)

    """

    attempts: int = 5
    wait: WaitBaseT = field(default_factory=_default_wait)
    timeout: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool):
            raise ConfigurationError(f"attempts must be a whole number, got {self.attempts!r}")
        if self.attempts < 1:
            raise ConfigurationError(f"attempts must be at least 1, got {self.attempts}")
        if not self.timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number, got {self.timeout!r}")

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a fault worth another try rather than an answer."""
        if not isinstance(exc, self.retry_on) or isinstance(exc, ANSWERS):
            return False
        return not (isinstance(exc, OSError) and exc.errno in _ANSWER_ERRNOS)


class _DaemonPool:
    """Daemon worker threads for storage calls; idle ones are reused, hung ones abandoned.

    Not a ``ThreadPoolExecutor``: its workers are joined at interpreter exit, so one call
    that never answers would keep the process from ever exiting. A call that hangs here only
    holds its own thread; the next call gets an idle thread or a new one.
    """

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._idle: list[queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Start ``fn()`` on a worker; its future."""
        future: Future[T] = Future()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._work, args=(inbox,), name="resumable-storage", daemon=True
            ).start()
        inbox.put((fn, future))
        return future

    def _work(self, inbox: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
        while True:
            fn, future = inbox.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the waiting caller, not lost
                    future.set_exception(exc)
            del fn, future  # drop the result before idling: it may be a large payload
            with self._lock:
                if len(self._idle) >= self._max_idle:
                    return
                self._idle.append(inbox)


_POOL = _DaemonPool(max_idle=8)


def _wait(future: Future[T], timeout: float, what: str) -> T:
    # wait() rather than result(timeout): a TimeoutError raised by the call itself (a socket
    # timeout) is an error it answered with, not a missed deadline.
    done, _ = wait([future], timeout)
    if not done:
        raise DeadlineExceeded(f"{what} did not answer within {timeout:g} s")
    return future.result()


def _deadline(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()``, or ``DeadlineExceeded`` when it takes longer than ``timeout`` seconds."""
    return _wait(_POOL.submit(fn), timeout, what)


def _retrying(
    fn: Callable[[], T], policy: RetryPolicy, what: str, retry: Callable[[BaseException], bool]
) -> T:
    """``fn()`` tried up to ``policy.attempts`` times while ``retry(exc)``; then StorageError."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "%s failed (attempt %d of %d: %s: %s); retrying in %.2f s",
            what,
            state.attempt_number,
            policy.attempts,
            type(exc).__name__,
            exc,
            state.upcoming_sleep,
        )

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=policy.wait,
        retry=retry_if_exception(retry),
        reraise=True,
        before_sleep=before_sleep,
    )
    try:
        return retrying(fn)
    except Exception as exc:
        if not retry(exc):
            raise  # an answer, or an error this policy does not retry
        tries = f"{policy.attempts} {'try' if policy.attempts == 1 else 'tries'}"
        if isinstance(exc, DeadlineExceeded):
            raise DeadlineExceeded(
                f"{what} did not answer within {policy.timeout:g} s ({tries}); the previous "
                "snapshot is intact",
            ) from exc
        detail = str(exc) if isinstance(exc, StorageError) else f"{type(exc).__name__}: {exc}"
        suffix = "" if isinstance(exc, StorageError) else "; the previous snapshot is intact"
        raise StorageError(f"{what} failed after {tries}: {detail}{suffix}") from exc


def retry_call(fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """``fn()``, tried again from the start on a transient error, as ``policy`` allows.

    For an operation that streams, such as a whole commit: ``fn`` must produce its input again
    on each call. Timeouts are not retried here: the backend already spent its tries on them.

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
    return _retrying(
        fn,
        policy,
        what,
        lambda exc: policy.is_transient(exc) and not isinstance(exc, DeadlineExceeded),
    )


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
        future = _POOL.submit(fn)
        try:
            return _wait(future, self._timeout, what)
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


class RetryingBackend:
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

    def __init__(self, backend: Backend, policy: RetryPolicy | None = None) -> None:
        self.backend = backend
        self.policy = policy or RetryPolicy()
        self.url = backend.url
        self.exclusive = backend.exclusive

    def __repr__(self) -> str:
        return f"RetryingBackend({self.backend!r}, {self.policy!r})"

    def _call(self, fn: Callable[[], T], what: str) -> T:
        timeout = self.policy.timeout
        return _retrying(
            lambda: _deadline(fn, timeout, what), self.policy, what, self.policy.is_transient
        )

    def _target(self, name: str | None = None) -> str:
        return self.url if name is None else f"{self.url.rstrip('/')}/{name}"

    def _what(self, call: str, name: str | None = None) -> str:
        return f"{call} {self._target(name)}"

    def entries(self) -> list[Entry]:
        """The objects directly under the root."""
        return self._call(self.backend.entries, self._what("listing"))

    def list_children(self) -> list[str]:
        """Names of the folders directly under the root."""
        return self._call(self.backend.list_children, self._what("listing folders of"))

    def read(self, name: str) -> bytes:
        """A whole (small) object."""
        return self._call(lambda: self.backend.read(name), self._what("reading", name))

    def open_read(self, name: str) -> BinaryIO:
        """A stream over an object: opening is retried, each read has a deadline."""
        stream = self._call(lambda: self.backend.open_read(name), self._what("opening", name))
        return cast(BinaryIO, _DeadlineReader(stream, self.policy.timeout, self._target(name)))

    def writer(self, name: str) -> BlobWriter:
        """A writer for a new object: opening is retried, each write and commit has a deadline."""
        inner = self._call(lambda: self.backend.writer(name), self._what("opening", name))
        return _DeadlineWriter(inner, self.policy.timeout, self._target(name))

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

        what = self._what("creating", name)
        timeout = self.policy.timeout

        def with_deadline() -> None:
            nonlocal failed_before
            try:
                _deadline(attempt, timeout, what)
            except DeadlineExceeded:
                failed_before = True
                raise

        _retrying(with_deadline, self.policy, what, self.policy.is_transient)

    def delete(self, name: str) -> None:
        """Remove an object; a missing one is not an error."""
        self._call(lambda: self.backend.delete(name), self._what("deleting", name))
