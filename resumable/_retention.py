"""Retention: deleting the snapshots beyond ``keep``, on a thread behind the saves.

A :class:`Retention` knows the objects of each snapshot its store committed or listed, oldest
first, without asking the store. After each commit it deletes what fell out of ``keep``: on an
IO thread (``_threads``), one batch at a time and at most one batch per ``_RETIRE_EVERY``
seconds. When saves come faster, the next batch takes every snapshot that fell out meanwhile,
in one request: a request per save would cost as much as the save.

Deletion goes oldest first, each manifest before its payload, so a load racing it never
falls back past a snapshot that is kept. A failed batch is logged and tried again after the
next commit.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

from . import _forks
from ._backend import Backend, Entry
from ._names import manifest_name, manifest_seqs, parse
from ._threads import EXIT_TIMEOUT, close_at_exit, run_on_io

__all__ = ["Retention"]

log = logging.getLogger("resumable")

#: Retention deletes at most one batch per this many seconds: saves that come faster share a
#: batch (one request), so a store holds at most the snapshots of this long beyond ``keep``.
_RETIRE_EVERY = 0.05


class Retention:
    """The known snapshots of one store, and the thread that deletes those beyond ``keep``."""

    def __init__(
        self,
        backend: Backend,
        keep: int,
        *,
        before: Callable[[list[int]], None] | None = None,
        after: Callable[[list[int]], None] | None = None,
    ) -> None:
        self._backend = backend
        self.keep = keep
        # Told which snapshots are about to be deleted, and which were: the packs of folder
        # snapshots follow them (``_pieces.Packs``).
        self._before = before
        self._after = after
        # The objects of each snapshot committed or listed, oldest first. The lock guards it
        # and ``_retiring`` between the caller and the thread; ``settle`` sets ``_hurry`` to
        # skip the pause between batches.
        self._known: OrderedDict[int, list[str]] = OrderedDict()
        self._lock = threading.Lock()
        self._retiring: Future[None] | None = None
        self._hurry = threading.Event()
        _forks.track(self)
        # At exit, retention whose store is gone still finishes: the thread running it holds
        # this object, so it is alive in the exit hook's weak set meanwhile.
        close_at_exit(self)

    def _after_fork(self) -> None:
        """In a child forked while retention ran, its thread is gone: start afresh."""
        self._lock = threading.Lock()  # the parent's may have been held at the fork
        self._retiring = None
        self._hurry = threading.Event()
        self._known = OrderedDict()  # what the parent knew may be stale

    def learn(self, entries: list[Entry]) -> list[int]:
        """Take a listing as the truth; its manifests' sequence numbers, newest first."""
        self.settle()
        seqs = manifest_seqs(e.name for e in entries)
        owned: dict[int, list[str]] = {seq: [manifest_name(seq)] for seq in reversed(seqs)}
        for e in entries:
            name = parse(e.name)
            if name is not None and name.kind != "manifest" and name.seq in owned:
                owned[name.seq].append(e.name)
        self._known = OrderedDict(owned)
        return seqs

    def forget(self) -> None:
        """Know nothing (the next commit lists): after a failure, or a clear."""
        self.settle()
        self._known.clear()

    def committed(self, seq: int, names: list[str]) -> None:
        """Snapshot ``seq`` (objects ``names``) is committed: retire what fell out of keep."""
        with self._lock:
            self._known[seq] = names
            if self._retiring is None and len(self._known) > self.keep:
                # A fresh context: retention's storage calls get tries of their own, not
                # what is left of the save's.
                self._hurry.clear()
                self._retiring = run_on_io(lambda: contextvars.Context().run(self._retire_behind))

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the retention running behind the last commit, if any; it never raises.

        After ``timeout`` seconds it stops waiting with a warning: the retention goes on
        behind, and the snapshots it has not deleted yet stay until it is done.
        """
        with self._lock:
            pending = self._retiring
        if pending is None:
            return
        self._hurry.set()
        try:
            pending.result(timeout)
        except TimeoutError:
            log.warning(
                "retention of %s still runs after %.0f s; the snapshots it has not deleted "
                "yet stay until it is done",
                self._backend.url,
                timeout,
            )

    def close(self) -> None:
        """Let the retention still running finish (at interpreter exit, at most EXIT_TIMEOUT)."""
        self.settle(EXIT_TIMEOUT)

    def _retire_behind(self) -> None:
        """Retention until nothing is beyond ``keep``, batch after batch; failures are logged."""
        while True:
            with self._lock:
                excess = len(self._known) - self.keep
                if excess <= 0:
                    self._retiring = None
                    self._hurry.clear()
                    return
                seqs = list(itertools.islice(self._known, excess))
            batch_started = time.monotonic()
            try:
                self.drop(seqs)
            except BaseException as exc:  # housekeeping: the next commit tries it again
                log.warning(
                    "retention failed on %s (snapshots %s stay until the next save): %r",
                    self._backend.url,
                    ", ".join(map(str, seqs)),
                    exc,
                )
                with self._lock:
                    self._retiring = None
                    self._hurry.clear()
                return
            self._hurry.wait(batch_started + _RETIRE_EVERY - time.monotonic())

    def drop(self, seqs: list[int], *, told: bool = True) -> None:
        """Delete known snapshots ``seqs`` in one batch, in that order: each manifest first.

        Oldest first: a load racing us never falls back past a snapshot we keep. The names
        come from what this store committed or listed, not from a new listing. They are
        forgotten only once deleted, so a failed batch is retried by the next commit.
        ``told``: whether the hooks hear of it (a clear deletes the packs itself).
        """
        try:
            self._delete(seqs, told)
        except Exception:
            if len(seqs) == 1:
                raise
            # A batch that failed may be mostly gone, and a large one may keep failing on
            # some name: one snapshot at a time instead, so each success is kept.
            for seq in seqs:
                self._delete([seq], told)

    def _delete(self, seqs: list[int], told: bool = True) -> None:
        with self._lock:
            names = [n for seq in seqs for n in self._known.get(seq, [manifest_name(seq)])]
        if told and self._before is not None:
            self._before(seqs)
        self._backend.delete_many(names)
        with self._lock:
            for seq in seqs:
                self._known.pop(seq, None)
        if told and self._after is not None:
            self._after(seqs)
