"""Every thread the library starts, and how work on them is bounded and flushed at exit.

Two pools, nothing else starts a thread:

``CPU`` (at most :data:`CPU_WORKERS` threads)
    Short work on one chunk, holding no GIL: digest updates, gzip of a 1 MiB member, a batch
    of a folder's pieces read from the folder being saved, hashed and coded. Nothing that
    waits on the store: one thread per core, so a blocked one would idle a core. A stream
    bounds what it has in flight (a digest or gzip stream one or two chunks, a folder's scan
    a few batches) and takes the results in order, so streams never interleave their bytes. A
    ``ThreadPoolExecutor``: it is shut down before ``atexit`` handlers run, after which
    :func:`submit` does the work on the caller's thread.

``IO`` (daemon threads; idle ones are kept, at most :data:`IO_IDLE`)
    Anything that may block on storage: each storage call that has a deadline, one thread per
    pipelined transfer (upload behind / download ahead), the ``fdatasync`` that runs behind a
    local writer, one per ``Checkpoint`` whose
    background saves are running (it exits when idle), and the async twins
    (:func:`run_async`), which run their sync method here instead of on the event loop. A
    thread is taken when work starts and handed back when it ends, so the number of threads
    is the number of calls in flight: per ``Checkpoint`` at most one operation (saves and
    loads of one checkpoint are serialized), its one background saver, and that operation's
    transfer and storage call. Daemon threads, because a storage call that never answers
    must not keep the process from exiting: the caller stops waiting at its deadline and the
    stray call only holds its own thread.

In a forked child, which has none of its parent's threads, both pools start empty (reset
through ``_forks``, like every other object that owns threads).

At exit, one hook (:func:`close_at_exit`) closes every live object registered with it (each
``Checkpoint``: its pending background saves are committed, waiting at most
:data:`EXIT_TIMEOUT` seconds and logging any that is lost, then its workspace is removed).

Example:
    >>> run_on_io(lambda: 6 * 7).result()
    42

"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import functools
import logging
import os
import queue
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol, TypeVar

from ._errors import DeadlineExceeded
from ._forks import at_fork

__all__ = [
    "CPU_WORKERS",
    "EXIT_TIMEOUT",
    "IO_IDLE",
    "async_twin",
    "call_with_deadline",
    "close_at_exit",
    "run_async",
    "run_on_io",
    "submit",
    "wait_with_deadline",
]

log = logging.getLogger("resumable")

T = TypeVar("T")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # not on every platform
        return os.cpu_count() or 2


#: Threads of the CPU pool: one per core (at least two, at most eight). Their work holds no
#: GIL and never waits on the store, so more threads than cores only contend: on two cores,
#: four hashed a changed file's blocks with a third more CPU time than two.
CPU_WORKERS = min(max(_cores(), 2), 8)
#: Idle IO threads kept for reuse; more are started while more calls are in flight.
IO_IDLE = 8
#: How long interpreter exit waits for a checkpoint's background save before giving up.
EXIT_TIMEOUT = 120.0


def _new_cpu_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=CPU_WORKERS, thread_name_prefix="resumable-cpu")


_CPU = _new_cpu_pool()


def submit(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run ``fn(*args)`` on the CPU pool; on the caller's thread once the pool is shut down.

    Python shuts thread pools down before ``atexit`` handlers run, and the exit flush of
    background saves must still be able to hash, compress and sync.
    """
    try:
        return _CPU.submit(fn, *args)
    except RuntimeError:
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
        return done


class _DaemonPool:
    """Daemon threads that take one call each; idle ones are reused, hung ones abandoned.

    Not a ``ThreadPoolExecutor``: its workers are joined at interpreter exit, so one call
    that never answers would keep the process from ever exiting, and its fixed size would let
    long-running transfers starve the calls that feed them.
    """

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._idle: list[queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]] = []
        self._lock = threading.Lock()

    def forget_workers(self) -> None:
        """Drop the idle workers (in a forked child, where their threads do not exist)."""
        self._idle = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._work, args=(inbox,), name="resumable-io", daemon=True
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


_IO = _DaemonPool(max_idle=IO_IDLE)


@at_fork
def _new_pools_in_child() -> None:
    # A forked child has none of its parent's threads, but both pools still believe their
    # idle workers exist and would hand them work forever: new pools, no workers yet.
    global _CPU
    _CPU = _new_cpu_pool()
    _IO.forget_workers()


def run_on_io(fn: Callable[[], T]) -> Future[T]:
    """Start ``fn()`` on an IO thread (with the caller's context variables); its future."""
    context = contextvars.copy_context()
    return _IO.submit(functools.partial(context.run, fn))


async def run_async(fn: Callable[..., T], *args: Any) -> T:
    """``await`` ``fn(*args)`` run on an IO thread: the async twin of any sync method.

    Like ``asyncio.to_thread``, but on the library's own threads, so that every thread the
    library uses is accounted for here. Cancelling the awaiting task never leaves the call
    running behind it: a call not started yet never runs, and one already running is waited
    for before the cancellation propagates (a save in flight then completes, or never
    commits, before the caller can start another).
    """
    future = run_on_io(functools.partial(fn, *args))
    waiter = asyncio.wrap_future(future)
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        if future.cancel():  # not started: it never will be
            raise
        while not waiter.done():  # running: let it finish first, whatever else is cancelled
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(waiter)
        if not waiter.cancelled():
            waiter.exception()  # retrieved: its outcome is superseded by the cancellation
        raise


def wait_with_deadline(future: Future[T], timeout: float, what: str) -> T:
    """The result of ``future``, or ``DeadlineExceeded`` if it is not done within ``timeout``."""
    # wait() rather than result(timeout): a TimeoutError raised by the call itself (a socket
    # timeout) is an error it answered with, not a missed deadline.
    done, _ = wait([future], timeout)
    if not done:
        raise DeadlineExceeded(f"{what} did not answer within {timeout:g} s")
    return future.result()


def call_with_deadline(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` on an IO thread, or ``DeadlineExceeded`` when it takes over ``timeout`` s."""
    return wait_with_deadline(_IO.submit(fn), timeout, what)


class Closable(Protocol):
    """What :func:`close_at_exit` keeps: an object with a ``close()``."""

    def close(self) -> None:
        """Finish pending work and release resources."""


_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def close_at_exit(obj: Closable) -> None:
    """Close ``obj`` at interpreter exit if it is still alive and open then."""
    _OPEN.add(obj)


@atexit.register
def _close_all() -> None:
    for obj in list(_OPEN):
        try:
            obj.close()
        except BaseException:
            log.exception("at exit, closing %r failed: a background save may be lost", obj)


class _Done:
    """An awaitable that is already done (awaiting it, or not, is the same)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


def async_twin(sync: Callable[..., None], name: str, *args: Any) -> Awaitable[None]:
    """The async twin of ``sync``; from sync code, ``sync`` itself and a deprecation warning.

    For methods that were sync before they became async twins (``Checkpoint.clear``): a
    sync caller that was not changed would get a coroutine it never awaits, and the work
    would silently not happen. Without a running event loop the call cannot be meant as a
    coroutine, so it is done now, and the warning says what to write.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        warnings.warn(
            f"{name}() is async: from sync code call {name}_sync() "
            f"(done now; in a later release {name}() without await does nothing)",
            DeprecationWarning,
            stacklevel=3,
        )
        sync(*args)
        return _Done()
    return run_async(sync, *args)
