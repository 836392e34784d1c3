"""``ctx()``: what a running task can ask of its decorator (a context variable per attempt)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from ._errors import NoTaskContextError
from ._persist import MISSING as _MISSING

if TYPE_CHECKING:
    from ._checkpoint import Checkpoint

__all__ = ["AttemptNumber", "TaskContext", "ctx", "enter_task", "leave_task"]


class AttemptNumber(int):
    """An attempt number: an ``int`` that can also be called, returning itself.

    flyte's ``attempt_number`` is a property and this library's was a method; as this type is
    both, ``ctx().attempt_number == 0`` and ``ctx().attempt_number() == 0`` both hold on the
    first attempt (comparing a bound method with ``0`` was silently always ``False``).

    Example:
        >>> n = AttemptNumber(0)
        >>> n == 0, n() == 0, n + 1, f"{n}"
        (True, True, 1, '0')

    """

    __slots__ = ()

    def __call__(self) -> int:
        """The number as a plain ``int`` (the older, method spelling)."""
        return int(self)

    def __repr__(self) -> str:
        return int.__repr__(self)


class TaskContext:
    """The running task's checkpoint, key and attempt number; returned by :func:`ctx`.

    Example:
        >>> from resumable import resumable, ctx
        >>> @resumable(store="memory://doc-ctx")
        ... def task():
        ...     return ctx().attempt_number == 0, ctx().attempt_number()
        >>> task()
        (True, 0)

    """

    __slots__ = (
        "_asynchronous",
        "_attempt",
        "_loop",
        "_preempted",
        "_save",
        "_save_sync",
        "checkpoint",
        "key",
    )

    def __init__(
        self,
        checkpoint: Checkpoint,
        key: str,
        attempt: int,
        *,
        save_sync: Callable[[Any], None],
        save: Callable[[Any], Awaitable[None]],
        preempted: Callable[[], bool],
        asynchronous: bool = False,
    ) -> None:
        """Made by ``@resumable`` for each attempt; tasks get it from :func:`ctx`.

        ``asynchronous``: whether the task is a coroutine or an async generator.
        """
        #: The task's :class:`~resumable.Checkpoint`, at ``<store>/<key>``.
        self.checkpoint = checkpoint
        #: The task's key under its store.
        self.key = key
        self._attempt = attempt
        self._save_sync = save_sync
        self._save = save
        self._preempted = preempted
        self._asynchronous = asynchronous
        # The loop a sync task was called in (Jupyter's), if any: its code cannot await.
        self._loop = None if asynchronous else _running_loop()

    def __repr__(self) -> str:
        return f"TaskContext(key={self.key!r}, attempt={self._attempt})"

    @property
    def attempt_number(self) -> AttemptNumber:
        """The attempt number of this call in this process: 0 first, 1 for the first retry.

        An ``int`` (as in flyte: ``ctx().attempt_number == 0``) that may also be called
        (``ctx().attempt_number() == 0``), so code written either way works.
        """
        return AttemptNumber(self._attempt)

    @property
    def preempted(self) -> bool:
        """Whether the call was asked to stop (``request_stop()``, or SIGTERM if preemptible).

        A task without yields can poll it, save with :meth:`save_sync`, which then raises
        ``Preempted``.
        """
        return self._preempted()

    def save_sync(self, state: Any = _MISSING) -> None:
        """Persist a snapshot now, like a ``yield`` that is never throttled.

        Pass the state to save; in a ``Dir`` task pass nothing: the folder is saved.
        """
        self._save_sync(state)

    def save(self, state: Any = _MISSING) -> Awaitable[None]:
        """Async twin of :meth:`save_sync`: ``await ctx().save(state)`` in an async task.

        In a sync task nothing could await it, and the snapshot would be lost with only
        Python's "never awaited" warning: there it saves at once, as :meth:`save_sync`, and
        warns (``RuntimeWarning``) to write ``ctx().save_sync(state)``. A coroutine that a
        sync task runs on a loop of its own (``asyncio.run``) awaits it as usual.

        Example:
            >>> import asyncio
            >>> from resumable import resumable, ctx
            >>> @resumable(store="memory://doc-ctx-save")
            ... async def task():
            ...     await ctx().save(b"step 1")
            >>> asyncio.run(task())

        """
        if not self._asynchronous and _running_loop() is self._loop:
            warnings.warn(
                "ctx().save() is for async tasks, and this task is sync: nothing can await "
                "it here. Write ctx().save_sync(state) (the state was saved now).",
                RuntimeWarning,
                stacklevel=2,
            )
            self._save_sync(state)
            return _Saved()
        return self._save(state)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Saved:
    """An awaitable that is already done: awaiting it or not is the same, and never warns."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_current: ContextVar[TaskContext | None] = ContextVar("resumable_task", default=None)


def enter_task(context: TaskContext) -> Token[TaskContext | None]:
    """Make ``context`` what :func:`ctx` returns (for one attempt); undo with :func:`leave_task`."""
    return _current.set(context)


def leave_task(token: Token[TaskContext | None]) -> None:
    """Undo :func:`enter_task`."""
    _current.reset(token)


def ctx() -> TaskContext:
    """The context of the ``@resumable`` task running now.

    Raises ``NoTaskContextError`` outside a task.

    Example:
        >>> ctx()
        Traceback (most recent call last):
        ...
        resumable.NoTaskContextError: ctx() was called outside a @resumable task: ...

    """
    current = _current.get()
    if current is None:
        raise NoTaskContextError(
            "ctx() was called outside a @resumable task: call it from the decorated function "
            "(or code it calls), or use Checkpoint directly"
        )
    return current
