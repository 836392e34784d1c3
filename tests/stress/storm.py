"""The kill storm's child process and checks, shared by the tests and the stress script.

Users: tests/store/test_kill.py, tests/store/test_two_writers.py and tests/stress/kill_storm.py.
Imported, this module drives a storm: it starts a real child process running a resumable task
that saves on every ``yield``, kills it with SIGKILL after a random delay, checks what the store
then holds with a fresh ``Checkpoint``, and repeats. Run as a script, it *is* that child (and the
two-writers child). Both sides need only the standard library and ``resumable``, and share the
functions that derive the expected data from a counter and check it, so the child and the
checker cannot drift apart.

Every saved state checks itself: its payload (and, with NumPy, its array) is derived from its
counter and it carries a sha256 over counter, tag and contents, so a torn, mixed or
stale-but-renamed snapshot cannot pass, and what loads is exactly one committed state. The
storm's states range from 1 KiB to 8 MiB (bytes, and NumPy arrays when NumPy is installed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from resumable import ConcurrentWriterError, Dir, Storage, resumable
from resumable._checkpoint import Checkpoint
from resumable._errors import ResumableError
from resumable._statecodec import read_state

__all__ = [
    "KEY",
    "MAX_STATE",
    "StormReport",
    "Torn",
    "check_folder",
    "check_state",
    "layout_for",
    "load_store",
    "make_state",
    "run_storm",
    "spawn_child",
]

#: The fixed key of the storm's task: every child run resumes the same snapshots.
KEY = "storm"
#: This file, run as the child script.
CHILD = Path(__file__).resolve()
#: The file in a ``Dir`` state folder that lists the other files and their digests.
FOLDER_MANIFEST = "MANIFEST.json"
_STATE_KEYS = {"counter", "tag", "big", "payload", "digest"}
#: The largest state of the storm (payload and array together).
MAX_STATE = 8 << 20
#: The dtypes of the storm's arrays.
_DTYPES = ("uint8", "float32", "int64")

try:
    import numpy as np
except ImportError:  # numpy is optional: the storm's states are then bytes only
    np = None  # type: ignore[assignment]


class Torn(Exception):
    """A loaded state or folder is not whole and self-consistent."""


# -- the self-checking state: derived from a counter, carrying its own digest -----------------


def layout_for(counter: int, tag: str = "", big: bool = False) -> tuple[int, int, str]:
    """The sizes of state ``counter``: its payload's bytes, its array's bytes and dtype.

    Small states (``big=False``, the two-writers race) hold 1 KiB to 100 KiB of bytes, no
    array: the pickled state is inlined in the manifest up to 64 KiB and stored as a separate
    payload object above that, so consecutive snapshots exercise both commit paths. Big
    states (the kill storm) range up to ``MAX_STATE``: half small like those, three in ten
    from 100 KiB to 2 MiB (across the 1 MiB read chunk), one in five from 2 MiB to 8 MiB; with
    NumPy installed, half of them hold part of that as an array (out-of-band buffers).
    """
    rng = random.Random(f"layout:{tag}:{counter}:{big}")
    if not big:
        return rng.randrange(1024, 100 * 1024), 0, "uint8"
    pick = rng.random()
    if pick < 0.5:
        total = rng.randrange(1024, 100 * 1024)
    elif pick < 0.8:
        total = rng.randrange(100 * 1024, 2 << 20)
    else:
        total = rng.randrange(2 << 20, MAX_STATE + 1)
    if np is None or rng.random() < 0.5:
        return total, 0, "uint8"
    dtype = rng.choice(_DTYPES)
    itemsize = np.dtype(dtype).itemsize
    array = rng.randrange(total // 2, total + 1) // itemsize * itemsize
    return total - array, array, dtype


def payload_for(counter: int, tag: str = "", big: bool = False) -> bytes:
    """The payload bytes of state ``counter`` (sized by :func:`layout_for`)."""
    size = layout_for(counter, tag, big)[0]
    return random.Random(f"state:{tag}:{counter}").randbytes(size)


def array_for(counter: int, tag: str = "", big: bool = False) -> object | None:
    """The array of state ``counter``, or None when it has none (or NumPy is missing)."""
    _, nbytes, dtype = layout_for(counter, tag, big)
    if not nbytes or np is None:
        return None
    data = random.Random(f"array:{tag}:{counter}").randbytes(nbytes)
    return np.frombuffer(data, dtype=dtype).copy()


def _array_bytes(array: object | None) -> bytes:
    if array is None:
        return b""
    assert np is not None
    assert isinstance(array, np.ndarray)
    return f"{array.dtype}:{array.shape}:".encode() + array.tobytes()


def state_digest(
    counter: int, tag: str, payload: bytes, array: object | None = None, big: bool = False
) -> str:
    """The sha256 a state records over its counter, writer's tag, size class and contents."""
    head = f"{counter}:{tag}:{int(big)}:".encode()
    return hashlib.sha256(head + payload + b"|" + _array_bytes(array)).hexdigest()


def make_state(counter: int, tag: str = "", big: bool = False) -> dict[str, object]:
    """State number ``counter`` of the writer ``tag`` (``big``: up to 8 MiB, maybe an array)."""
    payload = payload_for(counter, tag, big)
    array = array_for(counter, tag, big)
    state: dict[str, object] = {
        "counter": counter,
        "tag": tag,
        "big": big,
        "payload": payload,
        "digest": state_digest(counter, tag, payload, array, big),
    }
    if array is not None:
        state["array"] = array
    return state


def state_size(state: dict[str, object]) -> int:
    """The bytes a (checked) state holds: its payload and its array."""
    payload, array = state["payload"], state.get("array")
    assert isinstance(payload, bytes)
    return len(payload) + len(_array_bytes(array))


def check_state(state: object) -> int:
    """The counter of a loaded state; ``Torn`` unless it is exactly the one derived from it."""
    if not isinstance(state, dict) or set(state) - {"array"} != _STATE_KEYS:
        raise Torn(f"not a storm state: {type(state).__name__}")
    counter, tag, big, payload, digest = (
        state[k] for k in ("counter", "tag", "big", "payload", "digest")
    )
    if not (isinstance(counter, int) and isinstance(tag, str) and isinstance(payload, bytes)):
        raise Torn("state fields have the wrong types")
    if not isinstance(big, bool):
        raise Torn("state fields have the wrong types")
    array = state.get("array")
    if array is not None and (np is None or not isinstance(array, np.ndarray)):
        raise Torn(f"state {counter}: its array is a {type(array).__name__}")
    if state_digest(counter, tag, payload, array, big) != digest:
        raise Torn(f"state {counter} of {tag!r}: digest does not match its contents")
    if payload != payload_for(counter, tag, big):
        raise Torn(f"state {counter} of {tag!r}: payload is not the one derived from it")
    expected = array_for(counter, tag, big)
    if _array_bytes(array) != _array_bytes(expected):
        raise Torn(f"state {counter} of {tag!r}: array is not the one derived from it")
    return counter


def folder_files(counter: int) -> dict[str, bytes]:
    """The files (relative path -> content) of folder state ``counter``.

    One to four files, some in a subfolder, 256 B to 48 KiB each: the set of files changes from
    one snapshot to the next (so a restore must delete what the snapshot lacks), and the packed
    folder is sometimes inlined in the manifest and sometimes a separate payload object.
    """
    rng = random.Random(f"dir:{counter}")
    return {
        f"sub/part-{i}.bin" if i % 2 else f"part-{i}.bin": rng.randbytes(
            rng.randrange(256, 48 << 10)
        )
        for i in range(1 + counter % 4)
    }


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def write_folder(folder: Path, counter: int) -> None:
    """Turn ``folder`` into folder state ``counter``, file by file (deliberately not atomic)."""
    files = folder_files(counter)
    for stale in _files_under(folder) - set(files) - {FOLDER_MANIFEST}:
        (folder / stale).unlink()
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    # Written last: a folder caught between two states has a manifest that does not match.
    listing = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (folder / FOLDER_MANIFEST).write_text(json.dumps({"counter": counter, "files": listing}))


def check_folder(folder: Path, *, allow_empty: bool = False) -> int:
    """The counter of a folder state; ``Torn`` unless it is whole and self-consistent.

    ``allow_empty``: an empty folder is state 0 (the task's first run).
    """
    present = _files_under(folder)
    if not present and allow_empty:
        return 0
    try:
        doc = json.loads((folder / FOLDER_MANIFEST).read_bytes())
        counter, listing = doc["counter"], doc["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Torn(f"folder manifest unreadable ({exc!r})") from None
    if not isinstance(counter, int) or not isinstance(listing, dict):
        raise Torn("folder manifest has the wrong types")
    if present != set(listing) | {FOLDER_MANIFEST}:
        raise Torn(
            f"folder {counter} holds {sorted(present)}, its manifest lists {sorted(listing)}"
        )
    expected = folder_files(counter)
    for name, digest in listing.items():
        data = (folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise Torn(f"folder {counter}: {name} does not match its digest")
        if data != expected.get(name):
            raise Torn(f"folder {counter}: {name} is not the file derived from it")
    return counter


# -- checking the store from the outside ------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _warnings_of_resumable() -> Iterator[list[str]]:
    handler = _Collect()
    logger = logging.getLogger("resumable")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def load_store(
    store: Path, *, dir_state: bool, seen: list[tuple[int, bool]] | None = None
) -> tuple[int | None, list[str]]:
    """Load the task's newest snapshot with a fresh ``Checkpoint`` and check it.

    Returns its counter (``None`` when nothing was committed yet) and the warnings the load
    logged: after a mere SIGKILL no snapshot may be refused, so a warning is a finding too.
    Raises ``Torn`` when what loads is not exactly the state derived from its counter.
    ``seen`` gets the loaded state's size and whether it holds an array (pickled state).
    """
    with _warnings_of_resumable() as warned, Checkpoint(store / KEY) as cp:
        try:
            root = cp.load_sync()
            if root is None:
                return None, warned
            if dir_state:
                return check_folder(root), warned
            state = read_state([(root / "payload").read_bytes()])[0]
        except ResumableError as exc:
            raise Torn(f"load failed: {exc!r}") from None
        counter = check_state(state)
        if seen is not None:
            seen.append((state_size(state), "array" in state))
        return counter, warned


# -- the phase a kill landed in, read from what it left behind --------------------------------

#: A temp name: ``.<name>.<random>.tmp``, or with the maker's stamp before the random part.
_TMP = r"(?:[0-9a-f]{12}-\d+-\d+\.)?[0-9a-f]+\.tmp$"
_TMP_BLOB = re.compile(r"^\.\d{20}\.[0-9a-f]+\.blob\." + _TMP)
_TMP_MANIFEST = re.compile(r"^\.\d{20}\.json\." + _TMP)
_BLOB = re.compile(r"^(\d{20})\.[0-9a-f]+\.blob$")
_MANIFEST = re.compile(r"^(\d{20})\.json$")


def _listing(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def kill_phase(before: set[str], after: set[str], keep: int) -> str:
    """Which step of a save a kill interrupted, judged by the files it left in the store."""
    new = after - before
    if any(_TMP_MANIFEST.match(n) for n in new):
        return "manifest"  # temp manifest written (or linked, not yet unlinked)
    if any(_TMP_BLOB.match(n) for n in new):
        return "payload"  # payload being written or fsynced under its temp name
    manifests = {int(m.group(1)) for n in after if (m := _MANIFEST.match(n))}
    newest = max(manifests, default=-1)
    blobs = {int(m.group(1)) for n in after if (m := _BLOB.match(n))}
    if any(seq > newest for seq in blobs if f"{seq:020d}.json" not in after):
        return "before-commit"  # payload renamed into place, manifest not yet created
    committed_now = any(_MANIFEST.match(n) for n in new)
    pruned_now = {int(m.group(1)) for n in before - after if (m := _MANIFEST.match(n))}
    if (committed_now and len(manifests) > keep) or (pruned_now & blobs):
        return "retention"  # committed, old snapshots not (all) deleted yet
    return "no-store-write"  # the task's work, pickling, packing the folder (until 64 KiB)


# -- the storm --------------------------------------------------------------------------------


@dataclass
class StormReport:
    """What a storm did and found."""

    kills: int = 0
    #: Kills after which the store's newest snapshot was not whole, self-consistent and at
    #: least as new as every save the child had acknowledged, or the next child did not start
    #: from it.
    torn: int = 0
    problems: list[str] = field(default_factory=list)
    #: The newest verified counter: how far the task got across all its lives.
    counter: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    #: The size of each pickled state loaded after a kill, and whether it held an array.
    loaded: list[tuple[int, bool]] = field(default_factory=list)
    #: The largest pickled state a child acknowledged as saved (``saved N``), in bytes.
    largest_saved: int = 0

    def lines(self) -> list[str]:
        """The report, the ``K kills, T torn`` line first."""
        phases = ", ".join(f"{name} {n}" for name, n in sorted(self.phases.items()))
        sizes = [size for size, _ in self.loaded]
        states = []
        if sizes:  # pickled state
            states = [
                f"states loaded after kills: {len(sizes)}, {sum(s >= 1 << 20 for s in sizes)} "
                f"of 1 MiB or more, largest {max(sizes) / 2**20:.1f} MiB, "
                f"{sum(a for _, a in self.loaded)} with an array; largest saved "
                f"{self.largest_saved / 2**20:.1f} MiB"
            ]
        return [
            f"{self.kills} kills, {self.torn} torn",
            f"counter reached {self.counter}",
            f"kills by phase: {phases}",
            *states,
            f"took {self.seconds:.1f} s",
            *self.problems,
        ]


def _delay(rng: random.Random) -> float:
    """How long after the child starts to kill it: the storm's fault injection.

    Many kills land in the first save (0-2 ms after the task starts), others anywhere in the
    stream of saves that follows; the save phases are tried in proportion to their duration.
    """
    pick = rng.random()
    if pick < 0.45:
        return rng.uniform(0.0, 0.002)
    if pick < 0.8:
        return rng.uniform(0.002, 0.03)
    return rng.uniform(0.03, 0.2)


def spawn_child(*args: str) -> subprocess.Popen[str]:
    """Start this file as a child process; it waits for a line on stdin before it works."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _reap(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Kill (if still alive) and wait for ``proc``; the rest of its stdout and its stderr."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    with contextlib.suppress(BrokenPipeError):  # the child died with our "go" line unread
        proc.stdin.close()
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return out, err


def run_storm(
    workdir: Path,
    *,
    kills: int,
    dir_state: bool,
    seed: int,
    poison_after: int | None = 3,
    progress: Callable[[StormReport], None] | None = None,
    big_states: bool = True,
) -> StormReport:
    """Kill the task ``kills`` times and check the store after each kill.

    Each child is the same script run again, with keep=1 or keep=2 picked at random. It is
    started one kill ahead and waits for a "go" line, so Python's start-up overlaps the
    previous child's life instead of adding to the storm's duration; the previous child is
    dead before the next one touches the store.

    ``poison_after`` is passed to ``@resumable`` (3, its default). SIGKILLs that land between
    a restore and the next save must not count against a good snapshot: were they counted,
    the task would resume from an older snapshot, or from none.

    ``big_states``: pickled states of random sizes up to ``MAX_STATE`` (8 MiB), some with
    a NumPy array; otherwise 1 KiB to 100 KiB of bytes.
    """
    rng = random.Random(seed)
    store, folder = workdir / "store", workdir / "folder"
    mode = "dir" if dir_state else "big" if big_states else "state"
    report = StormReport()
    started = time.perf_counter()
    queue: deque[tuple[subprocess.Popen[str], int]] = deque()

    def spawn() -> None:
        keep = rng.choice((1, 2))
        poison = "none" if poison_after is None else str(poison_after)
        child = spawn_child("storm", mode, str(store), str(keep), poison, str(folder))
        queue.append((child, keep))

    committed = False  # whether a snapshot exists, so the next child must resume from it
    try:
        spawn()
        for number in range(1, kills + 1):
            proc, keep = queue.popleft()
            spawn()
            before = _listing(store / KEY)
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            first = proc.stdout.readline()  # the event: the task runs, restored
            delay = _delay(rng)
            time.sleep(delay)
            out, err = _reap(proc)
            problems = _check_start(first, report.counter, committed)
            if proc.returncode != -signal.SIGKILL:
                problems.append(f"child exited by itself ({proc.returncode}): {err[-2000:]}")
            saved = [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved ")]
            acked = max([_start_counter(first, report.counter), *saved])
            if not dir_state:
                report.largest_saved = max(
                    [report.largest_saved] + [sum(layout_for(n, big=big_states)[:2]) for n in saved]
                )
            try:
                loaded, warned = load_store(store, dir_state=dir_state, seen=report.loaded)
            except Torn as exc:
                problems.append(f"torn load: {exc}")
            else:
                problems += [f"load refused a snapshot: {w}" for w in warned]
                problems += _check_load(loaded, report.counter, committed, acked)
                if loaded is not None:
                    report.counter, committed = loaded, True
            report.phases[kill_phase(before, _listing(store / KEY), keep)] += 1
            report.kills = number
            if problems:
                report.torn += 1
                report.problems += [
                    f"kill {number} (after {delay * 1e3:.1f} ms): {p}" for p in problems
                ]
            if progress is not None:
                progress(report)
    finally:
        for proc, _ in queue:
            _reap(proc)
        report.seconds = time.perf_counter() - started
    return report


def _check_start(first: str, counter: int, committed: bool) -> list[str]:
    """Problems with the child's first line: it must start from the newest snapshot."""
    words = first.split()
    if not committed and words[:1] in (["started"], ["started-torn"]):
        # Nothing to restore yet: a pickled task starts from its initial state, a Dir task from
        # whatever its folder holds (a kill may have torn it, or left a state never committed).
        return []
    if words[:1] != ["started"] or len(words) != 2:
        return [f"child did not start cleanly: {first.strip()!r}"]
    if int(words[1]) != counter:
        return [f"child started from {words[1]}, the newest snapshot is {counter}"]
    return []


def _start_counter(first: str, counter: int) -> int:
    """The counter the child started from (its first save is this plus one)."""
    words = first.split()
    if words[:1] == ["started"] and len(words) == 2:
        return int(words[1])
    return 0 if words[:1] == ["started-torn"] else counter


def _check_load(loaded: int | None, counter: int, committed: bool, acked: int) -> list[str]:
    """Problems with the counter loaded after a kill."""
    if loaded is None:
        return ["the store lost every snapshot"] if committed else []
    problems = []
    if loaded < counter:
        problems.append(f"went backwards: loaded {loaded} after {counter}")
    if loaded < acked:
        problems.append(f"lost a save: loaded {loaded}, the child had saved {acked}")
    if loaded > acked + 1:
        problems.append(f"loaded {loaded}, but only {acked + 1} could have been saved")
    return problems


# -- the children -----------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


def _state_task(store: str, keep: int, poison_after: int | None, big: bool) -> Callable[[], None]:
    @resumable(
        state=None,
        store=store,
        key=KEY,
        on_success="keep",
        poison_after=poison_after,
        storage=Storage(keep=keep),
    )
    def task(state: dict[str, object] | None = None) -> Generator[dict[str, object], None, None]:
        counter = 0 if state is None else check_state(state)
        _say(f"started {counter}")
        while True:
            counter += 1
            yield make_state(counter, big=big)
            _say(f"saved {counter}")

    return task


def _dir_task(store: str, keep: int, poison_after: int | None, folder: str) -> Callable[[], None]:
    @resumable(
        state=Dir(folder),
        store=store,
        key=KEY,
        on_success="keep",
        poison_after=poison_after,
        storage=Storage(keep=keep),
    )
    def task(state: Path | None = None) -> Generator[None, None, None]:
        assert state is not None  # injected: the folder, restored from the newest snapshot
        try:
            counter = check_folder(state, allow_empty=True)
            _say(f"started {counter}")
        except Torn as exc:
            # Before the first snapshot nothing can repair a folder that a kill tore; the
            # parent accepts this only while the store is empty.
            _say(f"started-torn {exc}")
            shutil.rmtree(state)
            state.mkdir()
            counter = 0
        while True:
            counter += 1
            write_folder(state, counter)
            yield
            _say(f"saved {counter}")

    return task


def storm_child(mode: str, store: str, keep: int, poison_after: int | None, folder: str) -> int:
    """The storm's task: count up forever, saving a self-checking state on every yield."""
    if mode in ("state", "big"):
        task = _state_task(store, keep, poison_after, big=mode == "big")
    else:
        task = _dir_task(store, keep, poison_after, folder)
    if sys.stdin.readline() != "go\n":  # the previous child is dead; EOF: the parent is
        return 3
    try:
        task()
    except Torn as exc:
        _say(f"torn {exc}")
        return 2
    return 0


def writer_child(tag: str, store: str, keep: int, yields: int) -> int:
    """A two-writers child: ``yields`` saves of its own states, resuming after each conflict.

    Prints ``conflicts N`` at the end; exits 0 when every error it met was a
    ``ConcurrentWriterError``, 2 when it restored a torn state, 1 on any other error.
    """
    done = 0
    conflicts = 0

    @resumable(state=None, store=store, key=KEY, on_success="keep", storage=Storage(keep=keep))
    def task(state: dict[str, object] | None = None) -> Generator[dict[str, object], None, None]:
        nonlocal done
        counter = 0 if state is None else check_state(state)
        while done < yields:
            counter += 1
            yield make_state(counter, tag)
            done += 1

    _say("ready")
    if sys.stdin.readline() != "go\n":  # the start barrier: both writers are ready
        return 3
    while done < yields:
        try:
            task()
        except ConcurrentWriterError as exc:
            conflicts += 1
            if conflicts == 1:
                _say(f"first conflict: {exc}")
        except Torn as exc:
            _say(f"torn {exc}")
            return 2
        except Exception as exc:
            _say(f"error {type(exc).__name__}: {exc}")
            return 1
    _say(f"conflicts {conflicts}")
    return 0


def main(argv: list[str]) -> int:
    """Child entry point: ``storm MODE STORE KEEP POISON_AFTER FOLDER``, or ``writer ...``.

    MODE is ``big`` (pickled states up to 8 MiB), ``state`` (small ones) or ``dir``.

    ``writer TAG STORE KEEP YIELDS`` is the two-writers child.
    """
    role, *args = argv
    if role == "storm":
        poison_after = None if args[3] == "none" else int(args[3])
        return storm_child(args[0], args[1], int(args[2]), poison_after, args[4])
    if role == "writer":
        return writer_child(args[0], args[1], int(args[2]), int(args[3]))
    raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
