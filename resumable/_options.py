"""The options of ``Checkpoint`` and ``@resumable``: one vocabulary, checked once.

- :class:`Storage`: how snapshots are stored (``keep``, the signing key, fsspec's
  ``storage_options``, storage retries, compression, limits, progress), one value that
  ``Checkpoint(storage=...)`` and ``@resumable(storage=...)`` share;
- :class:`Dir`: directory state, the value of ``state=``;
- :class:`Spec`: the checked options of one ``@resumable(...)``, made by :func:`make_spec`,
  and what the driver asks of them (the task's retry policy as tenacity arguments, the
  store of a call, a fresh copy of the initial state).

Nothing here does I/O or runs a task: ``_decorator`` drives calls with a :class:`Spec`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

import tenacity

from ._archive import Compression, Limits
from ._backend import check_store_url
from ._errors import ConfigurationError, ResumableError
from ._keys import check_key
from ._progress import ProgressArg
from ._retry import RetryPolicy, backoff, finite_seconds, never_retried, storage_policy
from ._stack import SIGNING_KEY_ENV, check_keep, resolve_signing_key
from ._statecodec import dumps_state, loads_state

__all__ = [
    "OMITTED",
    "Dir",
    "Spec",
    "Storage",
    "make_spec",
    "refuse_removed_options",
    "resolve_store",
    "storage_from_deprecated",
]

P = ParamSpec("P")
R = TypeVar("R")

#: The default of ``state=``: nothing is injected.
OMITTED: Any = object()

#: Where snapshots live when neither ``store=`` nor ``$RESUMABLE_STORE`` says.
DEFAULT_STORE = ".resumable"
#: The environment variable that names the default store.
STORE_ENV = "RESUMABLE_STORE"


def resolve_store(store: str | os.PathLike[str] | None = None) -> str:
    """The store to use now: ``store``, else ``$RESUMABLE_STORE``, else ``./.resumable``.

    The one rule for the default store, of ``@resumable`` (per call) and of the
    ``resumable`` command. A path is made absolute in the current folder; a URL is kept as
    it is; a URL missing its ``//`` is refused (``ConfigurationError``).

    Example:
        >>> import os
        >>> resolve_store("s3://bucket/runs")
        's3://bucket/runs'
        >>> resolve_store("runs") == os.path.abspath("runs")
        True

    """
    chosen = os.fspath(store) if store else os.environ.get(STORE_ENV) or DEFAULT_STORE
    check_store_url(chosen)
    return chosen if "://" in chosen else os.path.abspath(chosen)


@dataclasses.dataclass(frozen=True, slots=True)
class Storage:
    """How snapshots are stored: one value for ``Checkpoint`` and ``@resumable``.

    *Where* is the checkpoint's ``uri`` (or the task's ``store=``); this is *how*. Share one
    ``Storage`` between the checkpoints and tasks that use the same store.

    Args:
        keep: how many committed snapshots to keep (at least 1).
        signing_key: a secret; manifests then carry an HMAC, and loads refuse unsigned or
            wrongly signed snapshots before reading them. Default: ``$RESUMABLE_SIGNING_KEY``.
            See docs/guarantees.md ("Signing") for what it protects against. A ``Storage``
            pickles without its key: unpickled, it takes ``$RESUMABLE_SIGNING_KEY`` of the
            process it is unpickled in, and refuses to unpickle when that is unset.
        storage_options: passed to the fsspec filesystem (credentials, endpoint, ...).
        retry: how storage calls are retried and how long each may take
            (:class:`RetryPolicy`; by default 5 tries with backoff, 60 s per call; on a local
            disk only whole saves and loads are retried unless a policy is given). A save that
            meets a transient error is retried whole; when tries run out, or a call hangs
            past its timeout, a ``StorageError`` says so and the previous snapshot stays
            intact. Separate from ``@resumable(attempts=...)``, which retries the task.
        compression: ``"gzip"`` (default: a fast, adaptive ``.tar.gz``) or ``"none"``, for
            folders saved whole (``incremental=False``); bytes, files and state are stored as
            they are.
        incremental: ``True`` (default): a folder snapshot stores only what changed since the
            previous one: its files are listed, their content is stored in pieces (deflated
            where it pays) that later snapshots reuse, and unchanged files are not even read.
            ``False``: each folder snapshot is one ``.tar.gz`` of the whole folder, readable
            with ``tar`` alone and by releases before incremental snapshots. See
            docs/howto-dir-state.md.
        limits: caps on what restoring a folder may write (tar bombs); default ``Limits()``.
        progress: ``True`` for a tqdm progress bar per transfer (the ``progress`` extra), or
            an ``fsspec.callbacks.Callback``: each save and load is reported to
            ``callback.branched(source, destination)``, or to the callback itself when it
            does not branch (``set_size``, ``relative_update``, ``close``). Transfers of
            16 MiB or more also log their size and rate at INFO level either way.

    Example:
        >>> import tempfile
        >>> from resumable import Checkpoint, RetryPolicy, resumable
        >>> storage = Storage(keep=3, retry=RetryPolicy(attempts=10, timeout=30.0))
        >>> with Checkpoint(tempfile.mkdtemp(), storage=storage) as cp:
        ...     cp.save_sync(b"step 1")
        >>> @resumable(state=0, store="memory://doc-storage", storage=storage)
        ... def count(n, state=0):
        ...     yield from range(state + 1, n + 1)

    """

    keep: int = 2
    signing_key: bytes | str | None = dataclasses.field(default=None, repr=False)
    storage_options: dict[str, Any] | None = None
    retry: RetryPolicy | None = None
    compression: Compression = "gzip"
    limits: Limits | None = None
    progress: ProgressArg = False
    incremental: bool = True

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.compression not in ("gzip", "none"):
            raise ConfigurationError(
                f"compression must be 'gzip' or 'none', got {self.compression!r}"
            )
        if not isinstance(self.incremental, bool):
            raise ConfigurationError(f"incremental must be True or False, got {self.incremental!r}")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {self.retry!r}")
        storage_policy(self.retry)  # refuses what storage retries cannot do
        if self.limits is not None and not isinstance(self.limits, Limits):
            raise ConfigurationError(f"limits must be a Limits or None, got {self.limits!r}")
        if self.signing_key is not None:
            resolve_signing_key(self.signing_key)  # refuses an empty key now

    def __reduce__(self) -> tuple[Any, ...]:
        # A task shipped by value (Dask, Ray, process pools) must not carry its signing key
        # in clear through the scheduler and its logs: the worker resolves it from its own
        # environment, as a Checkpoint does.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        signed = values.pop("signing_key") is not None
        return _storage_on_worker, (values, signed)


def _storage_on_worker(values: dict[str, Any], signed: bool) -> Storage:
    """A shipped ``Storage``, with its signing key (if it had one) from this process."""
    if not signed:
        return Storage(**values)
    key = resolve_signing_key(None)
    if key is None:
        raise ConfigurationError(
            f"this task signs its snapshots, and its signing key does not travel with it: "
            f"set ${SIGNING_KEY_ENV} on the worker that runs it (the same secret)"
        )
    return Storage(**values, signing_key=key)


#: The old flat keyword arguments of ``Checkpoint``, now fields of :class:`Storage`.
_STORAGE_FIELDS = frozenset(f.name for f in dataclasses.fields(Storage))


def storage_from_deprecated(
    storage: Storage | None, deprecated: dict[str, Any], where: str
) -> Storage:
    """``storage``, or the default, with the old flat keyword arguments of ``where`` applied.

    Each old argument is a :class:`Storage` field of the same name; they are accepted with a
    ``DeprecationWarning`` that says what to write instead. Anything else is a ``TypeError``.
    """
    if storage is not None and not isinstance(storage, Storage):
        raise ConfigurationError(f"storage must be a Storage or None, got {storage!r}")
    if not deprecated:
        return storage or Storage()
    unknown = sorted(deprecated.keys() - _STORAGE_FIELDS)
    if unknown:
        raise TypeError(f"{where} got an unexpected keyword argument {unknown[0]!r}")
    if storage is not None:
        raise ConfigurationError(
            f"{where}: pass the options in storage=Storage(...), not beside it "
            f"({', '.join(sorted(deprecated))})"
        )
    spelled = ", ".join(f"{name}=..." for name in sorted(deprecated))
    warnings.warn(
        f"{where}({spelled}) is deprecated and will be removed in the next release: write "
        f"{where}(..., storage=Storage({spelled}))",
        DeprecationWarning,
        stacklevel=3,
    )
    return Storage(**deprecated)


#: The options ``@resumable`` no longer takes, and what to write instead.
_REMOVED = {
    "retries": "attempts=<retries + 1> (attempts counts tries, the first included)",
    "retry_on": "retry=RetryPolicy(retry_on=...)",
    "no_retry_on": "retry=RetryPolicy(no_retry_on=...)",
    "wait": "retry=RetryPolicy(wait=...)",
    "every_seconds": "every=datetime.timedelta(seconds=...)",
    "keep": "storage=Storage(keep=...)",
    "signing_key": "storage=Storage(signing_key=...)",
    "storage_options": "storage=Storage(storage_options=...)",
    "storage_retry": "storage=Storage(retry=...)",
    "arg": "name the task's parameter `state` (the state is always injected as state=)",
}


def refuse_removed_options(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, which names the replacement of an option ``@resumable`` no longer takes.

    Python's own error would only say the argument is unexpected.
    """

    @functools.wraps(fn)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        removed = [name for name in kwargs if name in _REMOVED]
        if removed:
            fixes = "; ".join(f"instead of {name}=, write {_REMOVED[name]}" for name in removed)
            raise TypeError(f"resumable() no longer takes {', '.join(removed)}: {fixes}")
        return fn(*args, **kwargs)

    return checked


@dataclasses.dataclass(frozen=True, slots=True)
class Dir:
    """Directory state: a folder restored before each attempt and snapshotted on each yield.

    Before every attempt, when a snapshot exists, the folder is made **identical** to it:
    files that are not in the snapshot are deleted. The task receives the folder's ``Path``;
    each ``yield`` (its value is ignored) saves the whole folder.

    The folder is chosen per call, when the call starts (a relative one against the working
    folder of the call), so that calls with different arguments do not share files. ``path``
    is either

    - a path, which may hold ``str.format`` fields: ``{key}``, the call's key, and the call's
      arguments by parameter name, defaults included (``"runs/{key}"``, ``"runs/lr={lr}"``;
      ``{{`` and ``}}`` for literal braces); or
    - a callable that receives the call's arguments, like ``key=`` (``self``/``cls`` first
      for methods), and returns the path.

    Example:
        >>> from resumable import resumable, Dir
        >>> @resumable(state=Dir("outputs/{key}"), store="memory://doc-dir")
        ... def train(lr, state):
        ...     (state / "weights.txt").write_text(f"lr={lr}")
        ...     yield
        >>> @resumable(state=Dir(lambda lr: f"outputs/lr={lr}"), store="memory://doc-dir")
        ... def tune(lr, state):
        ...     yield

    """

    path: str | os.PathLike[str] | Callable[..., str | os.PathLike[str]]


#: The parameter the state is injected as.
STATE_ARG = "state"


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """The checked options of one ``@resumable(...)``."""

    initial: bytes | None  # the pickled initial state; None for Dir or no state
    folder: Dir | None
    inject: bool
    store: str | None
    key: str | Callable[..., str] | None
    retry: RetryPolicy
    every: int
    every_seconds: float | None
    background: bool
    on_success: Literal["clear", "keep"]
    poison_after: int | None
    preemptible: bool
    rng: bool
    storage: Storage

    @property
    def arg(self) -> str:
        """The keyword argument the state is injected as."""
        return STATE_ARG

    def initial_state(self) -> Any:
        """A fresh copy of the initial state (never shared between calls)."""
        assert self.initial is not None
        return loads_state(self.initial)

    def resolve_store(self) -> str:
        """The store of a call made now: ``store=``, ``$RESUMABLE_STORE``, else ``.resumable``.

        A path is made absolute in the folder the call runs in (see :func:`resolve_store`).
        """
        return resolve_store(self.store)

    def should_retry(self, exc: BaseException) -> bool:
        """Whether the task's exception may be retried by type (``retry_on``, ``no_retry_on``)."""
        never: tuple[type[BaseException], ...] = (ResumableError, *never_retried(self.retry))
        if isinstance(exc, never):
            return False
        retry_on = self.retry.retry_on
        return not isinstance(retry_on, tuple) or isinstance(exc, retry_on)

    def retrying(self, before_sleep: Callable[[tenacity.RetryCallState], None]) -> dict[str, Any]:
        """The keyword arguments of tenacity's ``Retrying`` for the task's attempts."""
        by_type = tenacity.retry_if_exception(self.should_retry)
        retry_on = self.retry.retry_on
        strategy = by_type & retry_on if isinstance(retry_on, tenacity.retry_base) else by_type
        return {
            "stop": tenacity.stop_after_attempt(self.retry.attempts),
            "wait": backoff(self.retry, _task_wait),
            "retry": strategy,
            "reraise": True,
            "before_sleep": before_sleep,
        }


def _task_wait() -> tenacity.wait.wait_base:
    return tenacity.wait_exponential_jitter(multiplier=0.1, max=10.0, jitter=0.1)


def _whole(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def _task_retry(attempts: int | None, retry: RetryPolicy | None) -> RetryPolicy:
    if retry is None:
        return RetryPolicy(attempts=1 if attempts is None else _whole("attempts", attempts, 1))
    if not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy or None, got {retry!r}")
    if attempts is not None:
        raise ConfigurationError(
            "pass attempts= or retry=, not both: write "
            f"retry=RetryPolicy(attempts={attempts!r}, ...)"
        )
    if retry.timeout is not None:
        raise ConfigurationError(
            "a task's attempts are not timed: RetryPolicy(timeout=...) is for storage calls "
            "(storage=Storage(retry=...))"
        )
    return retry


def _every(every: int | datetime.timedelta) -> tuple[int, float | None]:
    """``every=`` as (yields, seconds): every N-th yield, or at most once per timedelta."""
    if isinstance(every, datetime.timedelta):
        seconds = every.total_seconds()
        if not finite_seconds(seconds):
            raise ConfigurationError(f"every must be a timedelta >= 0, got {every!r}")
        return 1, seconds
    return _whole("every", every, 1), None


def _store(store: str | os.PathLike[str]) -> str:
    text = os.fspath(store)
    check_store_url(text)  # now, where the decorator is written, not at the first call
    return text


def _storage(storage: Storage | None) -> Storage:
    if storage is not None and not isinstance(storage, Storage):
        raise ConfigurationError(f"storage must be a Storage or None, got {storage!r}")
    return storage or Storage()


def _poison_after(value: int | None) -> int | None:
    return None if value is None else _whole("poison_after", value, 1)


def _key(key: str | Callable[..., str] | None) -> str | Callable[..., str] | None:
    if isinstance(key, str):
        return check_key(key)
    if key is not None and not callable(key):
        raise ConfigurationError(f"key must be a string or a callable, got {key!r}")
    return key


def make_spec(
    *,
    state: Any,
    store: str | os.PathLike[str] | None,
    key: str | Callable[..., str] | None,
    attempts: int | None,
    retry: RetryPolicy | None,
    every: int | datetime.timedelta,
    background: bool,
    on_success: Literal["clear", "keep"],
    poison_after: int | None,
    preemptible: bool,
    rng: bool,
    storage: Storage | None,
) -> Spec:
    """The options of ``@resumable(...)``, checked: a ``ConfigurationError`` names the bad one."""
    folder = state if isinstance(state, Dir) else None  # chosen at call time, like store=
    initial = None if folder is not None or state is OMITTED else dumps_state(state)
    if on_success not in ("clear", "keep"):
        raise ConfigurationError(f"on_success must be 'clear' or 'keep', got {on_success!r}")
    every_yields, every_seconds = _every(every)
    spec = Spec(
        initial=initial,
        folder=folder,
        inject=state is not OMITTED,
        store=None if store is None else _store(store),
        key=_key(key),
        retry=_task_retry(attempts, retry),
        every=every_yields,
        every_seconds=every_seconds,
        background=_flag("background", background),
        on_success=on_success,
        poison_after=_poison_after(poison_after),
        preemptible=_flag("preemptible", preemptible),
        rng=_flag("rng", rng),
        storage=_storage(storage),
    )
    if spec.rng and (folder is not None or not spec.inject):
        raise ConfigurationError(
            "rng=True stores the generators' states beside pickled state: it needs "
            "state=<value>, not Dir() or no state"
        )
    return spec
