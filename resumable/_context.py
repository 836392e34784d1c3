"""``ctx()``: what a running task can ask of its decorator (a context variable per attempt)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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

    __slots__ = ("_attempt", "_preempted", "_save", "_save_sync", "checkpoint", "key")

    def __init__(
        self,
        checkpoint: Checkpoint,
        key: str,
        attempt: int,
        *,
        save_sync: Callable[[Any], None],
        save: Callable[[Any], Awaitable[None]],
        preempted: Callable[[], bool],
    ) -> None:
        """Made by ``@resumable`` for each attempt; tasks get it from :func:`ctx`."""
        #: The task's :class:`~resumable.Checkpoint`, at ``<store>/<key>``.
        self.checkpoint = checkpoint
        #: The task's key under its store.
        self.key = key
        self._attempt = attempt
        self._save_sync = save_sync
        self._save = save
        self._preempted = preempted

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

    async def save(self, state: Any = _MISSING) -> None:
        """Async twin of :meth:`save_sync`."""
        await self._save(state)


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
