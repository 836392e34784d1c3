"""``@resumable``: restore, inject, persist yields, retry from the last snapshot.

The driver. ``resumable(...)`` checks its options once (``_options.make_spec``); each call of
the decorated task is one ``_Call`` (key, checkpoint, persister, state loading), and four thin
drivers -- function, generator, coroutine, async generator -- run the user's task inside
tenacity's ``Retrying`` / ``AsyncRetrying`` and differ only in how they call it and how they
wait. Everything it stores and loads goes through the call's ``Checkpoint``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import inspect
import logging
import os
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterator,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, overload

import tenacity
import wrapt

from ._checkpoint import Checkpoint, CheckpointInfo
from ._context import TaskContext, enter_task, leave_task
from ._dirstate import check_dir, restore_dir
from ._engines import warn_if_unshared
from ._errors import (
    ConfigurationError,
    NonRetryableError,
    ResumableError,
    StateError,
)
from ._iteration import ASYNC_ITERATION, caller_iterates, iterable, not_an_iterator
from ._keys import call_arguments, call_key, check_key, pin_task_name
from ._options import OMITTED, Dir, Spec, Storage, make_spec, refuse_removed_options
from ._persist import Persister
from ._pickling import Task
from ._preempt import PreemptionWatch
from ._retry import RetryPolicy
from ._rng import restore_rng
from ._threads import run_async

__all__ = ["TaskDecorator", "resumable"]

log = logging.getLogger("resumable")

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")


S = TypeVar("S")
It = TypeVar("It", bound=Iterator[Any])


class TaskDecorator(Protocol):
    """What ``resumable(...)`` returns: the type of a decorated task follows its kind.

    - generator (``Generator[Y, S, R]``): a function returning ``R``; one annotated
      ``Iterator[Y]`` returns ``None``, as such a generator has no return value;
    - async generator (``AsyncGenerator[Y, S]`` or ``AsyncIterator[Y]``): a coroutine
      function whose result is ``Y``, the last state;
    - anything else (plain functions, coroutines): unchanged.

    Parameters are kept (``ParamSpec``). A plain function whose return type is an iterator
    is typed as a generator task (types cannot tell a generator from a function that returns
    one); sync ``Iterable`` is not matched, since lists and strings are iterables.

    Example:
        >>> from collections.abc import Iterator
        >>> @resumable(state=0, store="memory://doc-typing")
        ... def count(n: int, state: int = 0) -> Iterator[int]:
        ...     yield from range(state + 1, n + 1)
        >>> count(3)  # typed as returning None

    """

    # The parameters use type variables, never Any: when a task's own annotations contain
    # Any, mypy compares the overloads that match, and only identical inferred parameter
    # types let it pick the first one instead of giving up with an untyped callable. Hence
    # Iterator as a bound type variable, and no separate AsyncGenerator overload (its
    # AsyncIterator supertype gives the same result for both).
    @overload
    def __call__(  # type: ignore[overload-overlap]  # a Generator is an Iterator: order picks
        self, fn: Callable[P, Generator[Y, S, R]]
    ) -> Callable[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, It]) -> Callable[P, None]: ...
    @overload
    def __call__(
        self, fn: Callable[P, AsyncIterator[Y]]
    ) -> Callable[P, Coroutine[Any, Any, Y]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...


@refuse_removed_options
def resumable(
    *,
    state: Any = OMITTED,
    store: str | os.PathLike[str] | None = None,
    key: str | Callable[..., str] | None = None,
    attempts: int | None = None,
    retry: RetryPolicy | None = None,
    every: int | datetime.timedelta = 1,
    background: bool = False,
    on_success: Literal["clear", "keep"] = "clear",
    poison_after: int | None = None,
    preemptible: bool = False,
    rng: bool = False,
    storage: Storage | None = None,
) -> TaskDecorator:
    """Make a task resume from its last snapshot after a crash or a retry.

    Args:
        state: the initial state when nothing was saved yet (any picklable value, copied for
            every call), or ``Dir(path)`` for a folder; injected as the task's ``state``
            keyword argument. Omitted: nothing is injected and the task uses
            ``ctx().checkpoint`` itself.
        store: where snapshots live (a folder or an fsspec URL); default ``$RESUMABLE_STORE``,
            else ``./.resumable``. A task's snapshots are under ``<store>/<key>``.
        key: a string, or a callable of the call's arguments (methods: ``self`` first) that
            returns one. Default: module + qualified name + a digest of the arguments.
        attempts: how many times the task is tried, the first included (default 1: no
            retry); each retry resumes from the last snapshot. Short for
            ``retry=RetryPolicy(attempts=...)`` with the task's defaults: any ``Exception``
            is retried, after exponential backoff with jitter from 0.1 s, capped at 10 s.
        retry: the task's whole :class:`RetryPolicy`: ``attempts``, ``wait``, ``retry_on``
            (exception types or a tenacity retry strategy) and ``no_retry_on`` (types never
            retried, even when ``retry_on`` matches them). Library errors are never retried.
            Give ``attempts=`` or ``retry=``, not both.
        every: persist every N-th yield, or, as a ``datetime.timedelta``, at most once per
            that much time.
        background: write snapshots on a background thread (at most one in flight).
        on_success: ``"clear"`` deletes the snapshots after success, ``"keep"`` keeps them.
        poison_after: after the task failed this many times (with an exception, in any
            process) from the same snapshot without saving a newer one, skip that snapshot
            and fall back to an older one, if an older one is valid. Off by default
            (``None``): a transient outage would count against a good snapshot.
        preemptible: on SIGTERM, persist the next yield at once, flush, raise
            ``Preempted`` (not retried), and only then hand the signal to the previous
            handler; the next process resumes. The handler is installed when the call
            runs in the main thread; elsewhere use ``request_stop()``.
        rng: store the states of the global random generators in use (``random``, NumPy's,
            torch's CPU and CUDA ones; see ``capture_rng``) with every snapshot, and restore
            them just before the task is called to resume from it. The task must then not
            reseed or draw from them before its loop when it resumes (seed only when the
            injected state is the initial one). Needs pickled ``state=`` (not ``Dir``).
        storage: how snapshots are stored (:class:`Storage`: ``keep``, ``signing_key``,
            ``storage_options``, storage ``retry``, ...), shared with ``Checkpoint``.
            ``Storage(progress=True)`` draws a progress bar per save and per load.

    Example:
        >>> @resumable(state=0, attempts=3, store="memory://doc-counter")
        ... def count(n, state=0):
        ...     for i in range(state, n):
        ...         yield i + 1
        ...     return n
        >>> count(3)
        3

    """
    spec = make_spec(
        state=state,
        store=store,
        key=key,
        attempts=attempts,
        retry=retry,
        every=every,
        background=background,
        on_success=on_success,
        poison_after=poison_after,
        preemptible=preemptible,
        rng=rng,
        storage=storage,
    )
    return _make_decorator(spec)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """How a task pickled by value is decorated again: its options, checked."""

    spec: Spec

    def decorate(self, fn: Any) -> Any:
        """``fn`` decorated with these options."""
        return _make_decorator(self.spec)(fn)


async def _closing_async(coro: Coroutine[Any, Any, Any], call: _Call) -> Any:
    try:
        return await coro
    finally:
        await run_async(call.close)


def _make_decorator(spec: Spec) -> Callable[[Any], Any]:
    def decorate(fn: Any) -> Any:
        target = getattr(fn, "__func__", fn)  # classmethod / staticmethod objects
        if not callable(target):
            raise ConfigurationError(f"@resumable decorates functions, got {fn!r}")
        if spec.inject and not _accepts(target, spec.arg):
            raise ConfigurationError(
                f"{target.__qualname__} has no parameter {spec.arg!r} to receive the state: "
                f"add `{spec.arg}=None` to its signature"
            )
        is_async = inspect.isasyncgenfunction(target) or inspect.iscoroutinefunction(target)
        if inspect.isasyncgenfunction(target):
            driver: Callable[..., Any] = _drive_async_generator
            marker = wrapt.mark_as_async(generator=False)
        elif inspect.iscoroutinefunction(target):
            driver, marker = _drive_coroutine, None
        elif inspect.isgeneratorfunction(target):
            driver, marker = _drive_generator, wrapt.mark_as_sync(generator=False)
        else:
            driver, marker = _drive_function, None

        pin_task_name(target)  # a __main__ task keeps its name in other processes

        def wrapper(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if driver is _drive_async_generator and caller_iterates(ASYNC_ITERATION):
                raise not_an_iterator(target, asynchronous=True)
            call = _Call(spec, wrapped, instance, args, kwargs, asynchronous=is_async)
            if is_async:
                return _closing_async(driver(call), call)
            try:
                result = driver(call)
            finally:
                call.close()
            if driver is _drive_generator and not iterable(result) and caller_iterates():
                raise not_an_iterator(target, asynchronous=False)
            return result

        # The marker sits inside, so the outermost object is a Task, which pickles; the
        # Task forwards __code__ to it, so inspect sees the calling convention of the call.
        inner = marker(fn) if marker is not None else fn
        return Task(inner, wrapper, spec=_Rebuild(spec), source=fn)

    return decorate


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` can receive ``name=...`` as a keyword argument."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to check: let the call itself decide
        return True
    param = params.get(name)
    if param is not None:
        return param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    return any(p.kind is p.VAR_KEYWORD for p in params.values())


class _Call:
    """One call of a decorated task: its key, checkpoint, persister and retry policy."""

    def __init__(
        self,
        spec: Spec,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        asynchronous: bool = False,
    ) -> None:
        self.spec = spec
        self.wrapped = wrapped
        self.asynchronous = asynchronous  # a coroutine or an async generator
        self.args = args
        self.kwargs = {k: v for k, v in kwargs.items() if not (spec.inject and k == spec.arg)}
        self.key = self._key(instance)
        self.store = store = spec.resolve_store()  # now, in the process and folder of the call
        warn_if_unshared(store)
        self.checkpoint = Checkpoint(
            f"{store if store.endswith('/') else store + '/'}{self.key}",
            storage=spec.storage,
            name=self.key,  # signatures cover the whole key: nested keys differ in any part
        )
        # Relative paths are resolved now, in the folder the call runs in: Dir like store=.
        self.folder = None if spec.folder is None else self._folder(spec.folder, instance)
        if self.folder is not None:
            check_dir(self.folder, store)
        self.restored: int | None = None  # the snapshot the current attempt started from
        self.newest_at_start: int | None = None  # the newest committed one at that moment
        self.persister = Persister(
            self.checkpoint,
            folder=self.folder,
            every=spec.every,
            every_seconds=spec.every_seconds,
            background=spec.background,
            rng=spec.rng,
        )

    def _folder(self, folder: Dir, instance: Any) -> Path:
        """The call's folder of a ``Dir``: its fields filled in, or its callable's answer."""
        if callable(folder.path):
            args = self.args if instance is None else (instance, *self.args)
            made = folder.path(*args, **self.kwargs)
            if not isinstance(made, str | os.PathLike):
                raise ConfigurationError(f"the Dir callable returned {made!r}, not a path")
            return Path(made).absolute()
        text = os.fspath(folder.path)
        if "{" in text or "}" in text:
            fields = call_arguments(self.wrapped, self.args, self.kwargs, self.spec.arg)
            fields["key"] = self.key
            try:
                text = text.format(**fields)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise ConfigurationError(
                    f"Dir({text!r}): cannot fill in its fields ({type(exc).__name__}: {exc}); "
                    f"the fields are {{key}} and the call's arguments by name "
                    f"({', '.join(sorted(fields))}); write {{{{ and }}}} for literal braces"
                ) from exc
        return Path(text).absolute()

    def _key(self, instance: Any) -> str:
        key = self.spec.key
        if isinstance(key, str):
            return check_key(key)
        if key is not None:
            args = self.args if instance is None else (instance, *self.args)
            made = key(*args, **self.kwargs)
            if not isinstance(made, str):
                raise ConfigurationError(f"key= returned {made!r}, not a string")
            return check_key(made)
        return call_key(self.wrapped, self.args, self.kwargs, self.spec.arg)

    # -- retry policy ---------------------------------------------------------------------

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "%s: attempt %d failed (%s: %s); retrying in %.2f s from the last snapshot",
            self.key,
            retry_state.attempt_number,
            type(exc).__name__,
            exc,
            wait,
        )

    def retry_kwargs(self) -> dict[str, Any]:
        """The arguments of tenacity's ``Retrying`` for this call's attempts."""
        return self.spec.retrying(self._before_sleep)

    # -- one attempt ------------------------------------------------------------------------

    def _begin(self, number: int) -> contextvars.Token[TaskContext | None]:
        self.persister.begin(number)
        self.restored = self.newest_at_start = None
        persister = self.persister
        return enter_task(
            TaskContext(
                self.checkpoint,
                self.key,
                number,
                save_sync=persister.force_sync,
                save=persister.force,
                preempted=lambda: persister.preempted,
                asynchronous=self.asynchronous,
            )
        )

    def _failed(self, exc: BaseException) -> None:
        """After a failed attempt: flush, so the next attempt sees every snapshot; count it."""
        with contextlib.suppress(Exception):
            self.persister.flush_sync()
        self._note_failure(exc)

    @contextlib.contextmanager
    def attempt(self, number: int) -> Iterator[None]:
        """Run one attempt with ``ctx()`` set; flush pending background saves if it fails."""
        token = self._begin(number)
        try:
            yield
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            leave_task(token)

    @contextlib.asynccontextmanager
    async def aattempt(self, number: int) -> AsyncIterator[None]:
        """Async twin of :meth:`attempt`: the failure path's I/O runs off the event loop."""
        token = self._begin(number)
        try:
            yield
        except BaseException as exc:
            await run_async(self._failed, exc)
            raise
        finally:
            leave_task(token)

    def _note_failure(self, exc: BaseException) -> None:
        """Count a failure of the task against the snapshot it started from (poison)."""
        seq = self.restored
        if self.spec.poison_after is None or seq is None:
            return
        # Kills, interrupts, preemption and the library's own errors say nothing about the
        # snapshot; only the task's own exceptions do (NonRetryableError is one of them).
        if not isinstance(exc, Exception):
            return
        if isinstance(exc, ResumableError) and not isinstance(exc, NonRetryableError):
            return
        with contextlib.suppress(Exception):
            # Nothing committed since the attempt started: the snapshot it started from is
            # suspect (also when it is an older one, chosen because a newer one was poison).
            if self.checkpoint.newest_seq() == self.newest_at_start:
                self.checkpoint.mark_failed(seq)

    def _accept(self, m: CheckpointInfo) -> None:
        want = "dir" if self.spec.folder is not None else "state"
        if m.kind != want:
            raise StateError(
                f"the newest snapshot of {self.key} is a {m.kind!r} snapshot written through "
                f"ctx().checkpoint, but this task asks for injected {want} state. Use one or "
                "the other: drop state= from @resumable, or save through yield / ctx().save()."
            )

    def load_state(self, number: int) -> Any:
        """The state to inject: restored from the newest snapshot, or a fresh initial copy."""
        if not self.spec.inject:
            return None
        folder, poison_after = self.folder, self.spec.poison_after
        cp = self.checkpoint
        m: CheckpointInfo | None
        if folder is not None:
            m = restore_dir(cp, folder, self._accept, poison_after)
            value: Any = folder
        else:
            # Streamed from the store into the unpickler: no disk trip, no whole-payload copy.
            found = cp.read_newest_state(accept=self._accept, poison_after=poison_after)
            if found is None:
                m, value = None, self.spec.initial_state()
            else:
                m, value, extras = found
                if self.spec.rng and "rng" in extras:
                    restore_rng(extras["rng"])  # just before the attempt resumes from it
        self.restored = None if m is None else m.seq
        if m is not None and poison_after is not None:
            self.newest_at_start = cp.newest_seq()
        if m is not None:
            self._log_resume(number, m)
        elif number:  # attempts counted from 1 in the log, as tenacity counts
            log.info("%s: attempt %d starts from the initial state", self.key, number + 1)
        return value

    def _log_resume(self, number: int, m: CheckpointInfo) -> None:
        """Log a resume: the snapshot's seq for tools, when and by which attempt for people.

        A retry's resume is INFO (its failure was a warning). A call's first attempt that
        resumes means an earlier call did not finish, which nothing else says: a WARNING,
        unless on_success="keep" makes resuming from the final snapshot the normal course.
        """
        saved = datetime.datetime.fromtimestamp(m.created).astimezone()
        whose = f"by attempt {m.attempt + 1}" + ("" if number else " of an earlier call")
        level = logging.INFO if number or self.spec.on_success == "keep" else logging.WARNING
        if level == logging.WARNING:
            whose += ", which did not finish"
        text = "%s: attempt %d resumes from snapshot %d of %s: the state saved at %s %s"
        stamp = saved.isoformat(sep=" ", timespec="seconds")
        log.log(level, text, self.key, number + 1, m.seq, self.store, stamp, whose)

    def call_args(self, state: Any) -> dict[str, Any]:
        if self.spec.inject:
            return {**self.kwargs, self.spec.arg: state}
        return self.kwargs

    def succeed(self) -> None:
        """After success: clear the snapshots (unless on_success="keep"), free the workspace."""
        self.checkpoint.flush_sync()  # the task's own background saves land first
        if self.spec.on_success == "clear":
            self.checkpoint.clear_sync()
        elif self.spec.poison_after is not None:
            self.checkpoint.clear_marks()

    def guard(self) -> contextlib.AbstractContextManager[None]:
        """Stop requests for the whole call: ``request_stop()``, and SIGTERM if preemptible."""
        return PreemptionWatch(self.persister.preempt, signals=self.spec.preemptible)

    def close(self) -> None:
        self.checkpoint.close()


# -- the four drivers ------------------------------------------------------------------------
# Each runs the attempts inside tenacity's iterator; `call` holds everything else.


def _drive_function(call: _Call) -> Any:
    with call.guard():
        for attempt in tenacity.Retrying(**call.retry_kwargs()):
            number = attempt.retry_state.attempt_number - 1
            with attempt, call.attempt(number):
                state = call.load_state(number)
                result = call.wrapped(*call.args, **call.call_args(state))
                call.persister.flush_sync()
    call.succeed()
    return result


def _drive_generator(call: _Call) -> Any:
    persister = call.persister
    with call.guard():
        for attempt in tenacity.Retrying(**call.retry_kwargs()):
            number = attempt.retry_state.attempt_number - 1
            with attempt, call.attempt(number):
                gen = call.wrapped(*call.args, **call.call_args(call.load_state(number)))
                offer = persister.offer_sync
                try:
                    while True:
                        offer(next(gen))
                except StopIteration as stop:
                    result = stop.value
                finally:
                    gen.close()
                if call.spec.on_success == "keep":
                    persister.finish_sync()
                persister.flush_sync()
    call.succeed()
    return result


async def _drive_coroutine(call: _Call) -> Any:
    with call.guard():
        async for attempt in tenacity.AsyncRetrying(**call.retry_kwargs()):
            number = attempt.retry_state.attempt_number - 1
            with attempt:
                async with call.aattempt(number):
                    state = await run_async(call.load_state, number)
                    result = await call.wrapped(*call.args, **call.call_args(state))
                    await call.persister.flush()
    await run_async(call.succeed)
    return result


async def _drive_async_generator(call: _Call) -> Any:
    persister = call.persister
    with call.guard():
        async for attempt in tenacity.AsyncRetrying(**call.retry_kwargs()):
            number = attempt.retry_state.attempt_number - 1
            with attempt:
                async with call.aattempt(number):
                    result = state = await run_async(call.load_state, number)
                    agen = call.wrapped(*call.args, **call.call_args(state))
                    offer = persister.offer
                    try:
                        async for value in agen:
                            result = value
                            await offer(value)
                    finally:
                        await agen.aclose()
                    if call.spec.on_success == "keep":
                        await persister.finish()
                    await persister.flush()
    await run_async(call.succeed)
    return result
