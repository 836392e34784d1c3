"""Signed snapshots, poison snapshots, preemption and background saves for Checkpoint users."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from resumable import (
    Checkpoint,
    ConfigurationError,
    CorruptCheckpointError,
    ResumableError,
    RetryPolicy,
    StateError,
    Storage,
    StorageError,
    ctx,
    resumable,
    testing,
)
from resumable._checkpoint import Captured
from resumable._statecodec import read_state

from ..conftest import IO, read_object, store_files, write_object

KEY = b"a secret only the writers know"


class Exploit:
    """Unpickling this runs code: the attack that signing defends against."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned-by-pickle",))


# -- signing ---------------------------------------------------------------------------------


def test_signed_round_trip(store_url: str, io: IO) -> None:
    """With a key, manifests carry an HMAC and load back."""
    with Checkpoint(store_url, storage=Storage(signing_key=KEY)) as cp:
        io.save(cp, b"signed")
        doc = json.loads(read_object(store_url, "00000000000000000000.json"))
        assert len(doc["hmac"]) == 64
        assert (io.load(cp) / "payload").read_bytes() == b"signed"


def test_unsigned_snapshot_refused_with_key(store_url: str, io: IO) -> None:
    """With a key set, an unsigned snapshot is refused; the previous signed one is used."""
    with (
        Checkpoint(store_url, storage=Storage(signing_key=KEY)) as signed,
        Checkpoint(store_url) as unsigned,
    ):
        io.save(signed, b"good")
        io.save(unsigned, b"planted")
        assert (io.load(signed) / "payload").read_bytes() == b"good"


def test_wrong_key_refused(store_url: str, io: IO) -> None:
    """A snapshot signed with another key is refused with SignatureError."""
    with Checkpoint(store_url, storage=Storage(signing_key=b"other")) as other:
        io.save(other, b"x")
    with (
        Checkpoint(store_url, storage=Storage(signing_key=KEY)) as cp,
        pytest.raises(CorruptCheckpointError) as exc,
    ):
        io.load(cp)
    assert "signature is wrong" in str(exc.value)


def test_moved_signature_refused(store_url: str, io: IO) -> None:
    """A valid signature copied onto another manifest does not verify."""
    with Checkpoint(store_url, storage=Storage(signing_key=KEY)) as cp:
        io.save(cp, b"first")
        io.save(cp, b"second")
        first = json.loads(read_object(store_url, "00000000000000000000.json"))
        second = json.loads(read_object(store_url, "00000000000000000001.json"))
        second["hmac"] = first["hmac"]
        write_object(store_url, "00000000000000000001.json", json.dumps(second).encode())
        assert (io.load(cp) / "payload").read_bytes() == b"first"


def test_malicious_pickle_never_unpickled_with_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted pickle that runs code is refused before unpickling when a key is set."""
    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "store")
    Checkpoint(f"{store}/victim").commit(Captured("state", lambda: [pickle.dumps(Exploit())]))

    @resumable(state=0, store=store, key="victim", storage=Storage(signing_key=KEY))
    def task(state: int = 0) -> int:
        return state

    with pytest.raises(CorruptCheckpointError, match="not signed"):
        task()
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_signing_key_from_environment(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """RESUMABLE_SIGNING_KEY turns signing on without code changes."""
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", "from-env")
    with Checkpoint(store_url) as cp:
        cp.save_sync(b"x")
    doc = json.loads(read_object(store_url, "00000000000000000000.json"))
    assert "hmac" in doc
    with pytest.raises(ConfigurationError):
        Checkpoint(store_url, storage=Storage(signing_key=b""))


# -- poison snapshots ----------------------------------------------------------------------


def test_poison_snapshot_falls_back_to_previous(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot every attempt crashes on is skipped after poison_after tries, with a log."""
    starts: list[int] = []

    @resumable(
        state=0, store=store_url, key="p", poison_after=2, retry=RetryPolicy(attempts=6, wait=0)
    )
    def task(state: int = 0) -> Any:
        starts.append(state)
        if state == 0:
            yield 1
            yield 2  # the poison: restoring it always crashes
            raise RuntimeError("crash after saving")
        if state == 2:
            raise RuntimeError("this state always crashes")
        return state

    with caplog.at_level(logging.WARNING, logger="resumable"):
        assert task() == 1
    assert starts == [0, 2, 2, 1]
    assert any("poison" in r.getMessage() for r in caplog.records)


def test_poison_counting_survives_processes(store_url: str) -> None:
    """Failure records live in the store, so failures in separate calls count too."""
    calls: list[int] = []

    @resumable(state=0, store=store_url, key="q", poison_after=2, on_success="keep")
    def task(state: int = 0) -> Any:
        calls.append(state)
        if state == 0:
            yield 1
            yield 2
        raise RuntimeError("boom")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            task()
    assert calls == [0, 2, 2]
    with pytest.raises(RuntimeError):
        task()
    assert calls[-1] == 1


def test_successful_runs_do_not_count_as_poison(store_url: str) -> None:
    """Restoring the same kept snapshot in successful calls never marks it as poison."""

    @resumable(state=0, store=store_url, key="ok", poison_after=1, on_success="keep")
    def task(state: int = 0) -> Any:
        if state == 0:
            yield 5
        return state

    assert task() == 0
    for _ in range(3):
        assert task() == 5
    assert not [n for n in store_files(f"{store_url}/ok") if ".failed." in n]


# -- background saves for Checkpoint users --------------------------------------------------


def test_checkpoint_background_save_captures_now(store_url: str, io: IO, tmp_path: Path) -> None:
    """save_background captures the file at the call; flush waits; the newest wins."""
    src = tmp_path / "f.bin"
    with Checkpoint(store_url) as cp:
        for i in range(5):
            src.write_bytes(bytes([i]) * 100_000)
            cp.save_background_sync(src)
        src.write_bytes(b"changed after the last save")
        cp.flush_sync()
        assert (io.load(cp) / "payload").read_bytes() == bytes([4]) * 100_000


def test_checkpoint_background_failure_surfaces(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed background save is raised by the next flush, never lost silently."""

    def broken(self: Checkpoint, *args: Any, **kwargs: Any) -> Any:
        raise OSError("no space left")

    cp = Checkpoint(store_url)
    monkeypatch.setattr(Checkpoint, "commit", broken)
    cp.save_background_sync(b"x")
    with pytest.raises(OSError, match="no space left"):
        cp.flush_sync()
    cp.close()


def test_close_flushes_background_saves(store_url: str) -> None:
    """close() waits for pending background saves."""
    with Checkpoint(store_url) as cp:
        cp.save_background_sync(b"last words")
    with Checkpoint(store_url) as again:
        assert (again.load_sync() / "payload").read_bytes() == b"last words"


# -- preemption -------------------------------------------------------------------------------

PREEMPTIBLE = textwrap.dedent(
    """
    import sys
    from resumable import Preempted, RetryPolicy, resumable

    @resumable(state=0, store=sys.argv[1], key="spot", every=10**9, preemptible=True,
               retry=RetryPolicy(attempts=4, wait=0), on_success="keep")
    def work(state=0):
        print(f"start {state}", flush=True)
        i = state
        while True:
            i += 1
            yield i
            if i == state + 1000:
                print("running", flush=True)
            if i >= state + 10**7:
                return i

    try:
        work()
    except Preempted as exc:
        print("preempted", flush=True)
        sys.exit(3)
    """
)


def test_sigterm_saves_then_raises_preempted(tmp_path: Path) -> None:
    """On SIGTERM the next yield is saved despite the throttle, and Preempted is not retried."""
    script = tmp_path / "spot.py"
    script.write_text(PREEMPTIBLE)
    store = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, str(script), store], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start 0"
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait() == 3
    assert rest.strip() == "preempted"  # no "start" again: not retried in-process
    with Checkpoint(f"{store}/spot") as cp:
        cp.load_sync()
        saved = read_state([(cp.path / "payload").read_bytes()])[0]
    assert saved > 1000


# preemptible=True on a worker thread: tests/test_preempt.py.


def test_ctx_preempted_flag_for_plain_functions(store_url: str) -> None:
    """A task without yields can see ctx().preempted (and the previous handler is called)."""
    seen: list[int] = []

    @resumable(state=0, store=store_url, preemptible=True)
    def task(state: int = 0) -> bool:
        before = ctx().preempted
        os.kill(os.getpid(), signal.SIGTERM)
        return before is False and ctx().preempted is True

    # A Python handler, so the signal is not delivered again to the default one (which
    # would end this process: see tests/test_preempt.py).
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        assert task() is True
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]


def test_state_error_names_the_task(store_url: str) -> None:
    """Unpickling failures of saved state are StateErrors that say what to do."""
    Checkpoint(f"{store_url}/broken").commit(Captured("state", lambda: [b"not a pickle"]))

    @resumable(state=0, store=store_url, key="broken")
    def task(state: int = 0) -> int:
        return state

    with pytest.raises(StateError, match="resumable rm"):
        task()


# -- review fixes -------------------------------------------------------------------------------


def test_retention_failure_never_fails_a_committed_save(
    store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that refuses deletes still commits saves; retention failing is only a warning."""
    with Checkpoint(store_url, storage=Storage(keep=1)) as cp:
        cp.save_sync(b"one")

        def refuse(name: object) -> None:
            raise PermissionError(13, "DeleteObject denied", str(name))

        monkeypatch.setattr(testing.backend(cp), "delete", refuse)
        monkeypatch.setattr(testing.backend(cp), "delete_many", refuse)
        with caplog.at_level(logging.WARNING, logger="resumable"):
            cp.save_sync(b"two")
        assert (cp.load_sync() / "payload").read_bytes() == b"two"
    assert any("retention failed" in r.getMessage() for r in caplog.records)


def test_storage_answer_is_a_storage_error_and_not_retried(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk during a save is a StorageError: the task is not retried, nothing poisoned."""
    import errno

    attempts: list[int] = []

    @resumable(state=0, store=store_url, key="full", retry=RetryPolicy(attempts=4, wait=0))
    def task(state: int = 0) -> Any:
        attempts.append(ctx().attempt_number())
        store = testing.store(ctx().checkpoint)

        def full(name: str, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(store.backend, "create_exclusive", full)
        yield 1

    with pytest.raises(StorageError, match="No space left"):
        task()
    assert attempts == [0]


def test_poison_fallback_is_protected_too(store_url: str) -> None:
    """Failures from the snapshot used after a poison one count as well.

    When every snapshot failed, the newest is used again; the task's own exception ends it.
    """
    starts: list[int] = []

    @resumable(
        state=0, store=store_url, key="loop", poison_after=2, retry=RetryPolicy(attempts=21, wait=0)
    )
    def task(state: int = 0) -> Any:
        starts.append(state)
        if state == 0:
            yield 1
            yield 2
        raise RuntimeError("always fails")

    with pytest.raises(RuntimeError, match="always fails"):
        task()
    assert starts == [0, 2, 2, 1, 1] + [2] * 16


def test_sync_save_lands_after_pending_background_save(store_url: str) -> None:
    """save_sync after save_background: the synchronous (newer) snapshot is the newest."""
    with Checkpoint(store_url) as cp:
        cp.save_background_sync(b"older")
        cp.save_sync(b"newer")
        assert (cp.load_sync() / "payload").read_bytes() == b"newer"


def test_background_save_after_close_is_refused(store_url: str) -> None:
    """save_background on a closed Checkpoint raises instead of waiting forever."""
    cp = Checkpoint(store_url)
    cp.save_background_sync(b"x")
    cp.close()
    with pytest.raises(ResumableError, match="closed"):
        cp.save_background_sync(b"y")


EXIT_FLUSH = textwrap.dedent(
    """
    import os, sys
    from resumable import Checkpoint
    cp = Checkpoint(sys.argv[1])
    cp.save_background_sync(b"big" * 2_000_000)   # hashed on worker threads: > 64 KiB
    # no flush, no close: interpreter exit must still commit it
    """
)


def test_interpreter_exit_flushes_large_background_saves(tmp_path: Path) -> None:
    """A large background save still pending at exit is committed before the process ends."""
    script = tmp_path / "exit.py"
    script.write_text(EXIT_FLUSH)
    store = str(tmp_path / "store")
    done = subprocess.run(
        [sys.executable, str(script), store], capture_output=True, text=True, check=True
    )
    assert "lost" not in done.stderr
    with Checkpoint(store) as cp:
        assert (cp.load_sync() / "payload").read_bytes() == b"big" * 2_000_000


def test_store_url_joins_keys_on_bare_protocols() -> None:
    """store="memory://" puts key k at memory://k, not at a local path named memory:."""

    @resumable(state=0, store="memory://", key="joined-key", on_success="keep")
    def task(state: int = 0) -> Any:
        yield 1

    task()
    assert not Path("memory:").exists()
    with Checkpoint("memory://joined-key") as cp:
        assert cp.load_sync() is not None
