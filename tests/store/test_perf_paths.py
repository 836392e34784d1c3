"""Fast paths of the store's local side, each held to a slow, obviously correct twin.

- A workspace keeps its emptied restore staging for the next load, instead of making and
  removing a marked folder per load; a load of bytes into a workspace holding only its
  payload replaces that one file (a temp file swapped in by an atomic exchange, or renamed
  over it); what a load hands out is the same either way.
- ``empty_folder`` (scan, unlink, rmtree subfolders) against ``empty_folder_slow`` (rmtree the
  folder, make it again), on random trees with links that must not be followed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import stat
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import Checkpoint, Storage, ctx, resumable
from resumable import _files as files
from resumable._capture import CapturedState
from resumable._workspace import NEW, empty_folder, empty_folder_slow
from resumable.testing import FaultyFileSystem, filesystem

# -- staging reuse -------------------------------------------------------------------------


def hidden(folder: Path) -> list[str]:
    """The names beside a workspace's root: its marker and stagings."""
    return sorted(p.name for p in folder.iterdir() if p.name != "root")


def test_byte_loads_replace_only_the_payload_and_hand_out_each_snapshot(tmp: Path) -> None:
    """Loads of bytes into a workspace holding only its payload need no staging at all."""
    root: Path | None = None
    with Checkpoint(tmp / "store") as cp:
        for i in range(4):
            cp.save_sync(f"state {i}".encode())
            root = cp.load_sync()
            assert root is not None
            assert sorted(p.name for p in root.iterdir()) == ["payload"]
            assert (root / "payload").read_bytes() == f"state {i}".encode()
            assert hidden(root.parent) == [".resumable-owner"]  # the marker, no staging
    assert root is not None
    assert not root.parent.exists()  # close() removes the workspace


@pytest.fixture(params=["exchange", "rename"])
def publish(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A payload swapped in by an atomic exchange (Linux), or renamed over the old one."""
    if request.param == "rename":
        monkeypatch.setattr(files, "_RENAMEAT2", None)
    elif files._RENAMEAT2 is None:
        pytest.skip("no renameat2 here")
    return str(request.param)


def test_a_payload_handed_out_stays_whole_while_the_next_load_replaces_it(
    tmp: Path, publish: str
) -> None:
    """The previous payload, still open (or mapped) by its reader, keeps its bytes."""
    with Checkpoint(tmp / "store") as cp:
        cp.save_sync(b"first payload")
        root = cp.load_sync()
        assert root is not None
        with (root / "payload").open("rb") as held:
            cp.save_sync(b"second")
            assert cp.load_sync() == root
            assert held.read() == b"first payload"  # replaced by a rename, not rewritten
        assert (root / "payload").read_bytes() == b"second"


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    old=st.none() | st.binary(max_size=300),
    chunks=st.lists(st.binary(max_size=200), max_size=4),
    fail=st.booleans(),
)
def test_replace_file_by_exchange_does_what_a_rename_does(
    tmp_path_factory: pytest.TempPathFactory,
    old: bytes | None,
    chunks: list[bytes],
    fail: bool,
) -> None:
    """Swapped in by an exchange or renamed over: the same file, the old one intact, no temp."""
    outcomes = []
    for twin in ("exchange", "rename"):
        folder = tmp_path_factory.mktemp(twin)
        path = folder / "payload"
        held = None
        if old is not None:
            path.write_bytes(old)
            held = path.open("rb")

        def stream() -> Iterator[bytes]:
            yield from chunks
            if fail:
                raise OSError("the payload did not verify")

        renameat2 = files._RENAMEAT2 if twin == "exchange" else None
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(files, "_RENAMEAT2", renameat2)
            if fail:
                with pytest.raises(OSError, match="did not verify"):
                    files.replace_file(path, stream())
            else:
                files.replace_file(path, stream())
        if held is not None:
            assert held.read() == old  # never written to
            held.close()
        content = path.read_bytes() if path.exists() else None
        outcomes.append((content, sorted(os.listdir(folder))))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == (old if fail else b"".join(chunks))
    assert outcomes[0][1] == ([] if fail and old is None else ["payload"])


def test_replace_file_leaves_a_folder_in_its_place_alone(tmp_path: Path, publish: str) -> None:
    """A folder where the file would go stays, with its content: IsADirectoryError, no temp."""
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload" / "keep.txt").write_text("mine")
    with pytest.raises(IsADirectoryError):
        files.replace_file(tmp_path / "payload", [b"new"])
    assert os.listdir(tmp_path) == ["payload"]
    assert (tmp_path / "payload" / "keep.txt").read_text() == "mine"


def test_exchange_needs_both_entries_and_changes_nothing_when_one_is_missing(
    tmp_path: Path,
) -> None:
    """An exchange with a missing entry is refused (False), leaving the other as it was."""
    (tmp_path / "a").write_bytes(b"a")
    assert not files.exchange(tmp_path / "a", tmp_path / "missing")
    assert os.listdir(tmp_path) == ["a"]
    if files._RENAMEAT2 is not None:
        (tmp_path / "b").write_bytes(b"b")
        assert files.exchange(tmp_path / "a", tmp_path / "b")
        assert (tmp_path / "a").read_bytes() == b"b"
        assert (tmp_path / "b").read_bytes() == b"a"


def test_folder_loads_reuse_one_staging_and_hand_out_each_snapshot(tmp: Path) -> None:
    """Repeated folder loads into a workspace keep one emptied staging; each is exact."""
    root: Path | None = None
    src = tmp / "src"
    src.mkdir()
    with Checkpoint(tmp / "store") as cp:
        for i in range(4):
            (src / f"f{i}").write_bytes(b"x")
            cp.save_sync(src)
            root = cp.load_sync()
            assert root is not None
            assert sorted(p.name for p in root.iterdir()) == [f"f{j}" for j in range(i + 1)]
            names = hidden(root.parent)
            assert len(names) == 2, names  # the owner marker and one staging
            [staging] = [root.parent / n for n in names if ".root.resumable-" in n]
            assert os.listdir(staging / NEW) == []  # emptied: no copy of the old snapshot
    assert root is not None
    assert not root.parent.exists()  # close() removes the workspace, its staging with it


def test_a_load_replaces_files_a_user_added_to_the_workspace(tmp: Path) -> None:
    """What the user put into the workspace goes at the next load, as without reuse."""
    with Checkpoint(tmp / "store") as cp:
        cp.save_sync(b"one")
        root = cp.load_sync()
        assert root is not None
        (root / "mine.txt").write_text("user data")
        (root / "sub").mkdir()
        (root / "sub" / "x").write_bytes(b"x")
        cp.save_sync(b"two")
        assert cp.load_sync() == root
        assert sorted(p.name for p in root.iterdir()) == ["payload"]
        assert (root / "payload").read_bytes() == b"two"


def test_a_tampered_spare_staging_is_not_reused(tmp: Path) -> None:
    """A spare staging that no longer holds just an empty NEW is left alone for a new one."""
    src = tmp / "src"
    src.mkdir()
    (src / "f").write_bytes(b"one")
    with Checkpoint(tmp / "store") as cp:
        cp.save_sync(src)
        root = cp.load_sync()
        assert root is not None
        [staging] = [p for p in root.parent.iterdir() if ".root.resumable-" in p.name]
        (staging / NEW / "intruder").write_bytes(b"?")
        (src / "f").write_bytes(b"two")
        cp.save_sync(src)
        cp.load_sync()
        assert (root / "f").read_bytes() == b"two"
        assert (staging / NEW / "intruder").read_bytes() == b"?"  # not taken, not emptied
        assert (root / "intruder").exists() is False


def test_a_folder_snapshot_loads_through_a_reused_staging(tmp: Path) -> None:
    """Folder snapshots swap in through the reused staging too: the tree is exactly the new one."""
    src = tmp / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(b"first")
    with Checkpoint(tmp / "store") as cp:
        cp.save_sync(src)
        root = cp.load_sync()
        assert root is not None
        (src / "a" / "b" / "f").unlink()
        (src / "g").write_bytes(b"second")
        cp.save_sync(src)
        cp.load_sync()
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        assert found == ["a", "a/b", "g"]


# -- empty_folder against its twin ---------------------------------------------------------

#: A tree: names mapped to file contents (bytes), subtrees (dicts), or links ("->" + target).
Tree = dict[str, object]

names = st.sampled_from(["a", "b", "c", ".hidden", "d d", "é"])
leaves = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(["->outside-file", "->outside-dir", "->missing", "->.."]),
)
trees = st.recursive(
    st.dictionaries(names, leaves, max_size=4),
    lambda children: st.dictionaries(names, st.one_of(leaves, children), max_size=4),
    max_leaves=20,
)
modes = st.sampled_from([0o700, 0o755, 0o750])


def build(folder: Path, tree: Tree, outside: Path) -> None:
    """Make ``tree`` inside ``folder`` (which exists)."""
    for name, value in tree.items():
        path = folder / name
        if isinstance(value, bytes):
            path.write_bytes(value)
        elif isinstance(value, str):
            target = value[2:]
            os.symlink(outside / target if target.startswith("outside") else target, path)
        else:
            assert isinstance(value, dict)
            path.mkdir()
            build(path, value, outside)


def outcome(folder: Path, outside: Path) -> tuple[list[str], int, list[str]]:
    """What a run left: the folder's entries, its mode, and the untouched outside world."""
    left = sorted(os.listdir(folder))
    mode = stat.S_IMODE(folder.lstat().st_mode)
    world = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    return left, mode, world


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees, mode=modes)
def test_empty_folder_matches_its_slow_twin(tmp: Path, tree: Tree, mode: int) -> None:
    """Both leave the folder empty, with its mode, and touch nothing a link points to."""
    results = []
    for name, empty in (("fast", empty_folder), ("slow", empty_folder_slow)):
        base = tmp / f"{name}-{len(os.listdir(tmp))}"
        outside = base / "outside"
        (outside / "outside-dir").mkdir(parents=True)
        (outside / "outside-dir" / "keep").write_bytes(b"keep")
        (outside / "outside-file").write_bytes(b"keep")
        folder = base / "folder"
        folder.mkdir()
        build(folder, tree, outside)
        folder.chmod(mode)
        empty(folder)
        results.append(outcome(folder, outside))
    assert results[0] == results[1]
    left, got_mode, world = results[0]
    assert left == []
    assert got_mode == mode
    assert world == ["outside-dir", "outside-dir/keep", "outside-file"]


# -- background saves hold at most one copy of the state ------------------------------------


def held_copies() -> int:
    """Captured state payloads alive and still holding their copied buffers."""
    return sum(1 for o in gc.get_objects() if type(o) is CapturedState and o())


class Seen(logging.Handler):
    """Keeps the library's messages; sets ``event`` at one that holds ``text``."""

    def __init__(self, text: str, event: threading.Event) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.event = text, event
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.text in self.messages[-1]:
            self.event.set()


@pytest.fixture(name="seen_wait")
def _seen_wait() -> Iterator[Seen]:
    """The library's DEBUG messages; its event is set when a yield says it waits."""
    handler = Seen("waits for the previous background save", threading.Event())
    logger = logging.getLogger("resumable")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_yield_during_a_background_write_waits_instead_of_copying_again(
    seen_wait: Seen,
) -> None:
    """While a background save is written, the next due yield waits: one copy held at most."""
    np = pytest.importorskip("numpy")
    store = f"faulty:///held-{uuid.uuid4().hex}"
    options = {"target_protocol": "memory", "hang_seconds": 60}
    first, second = np.full(1 << 20, 1.0), np.full(1 << 20, 2.0)
    # Set when the second yield waits (the library says so), or when it went on.
    waited_or_went_on = seen_wait.event
    copies: list[int] = []

    def release_when_blocked(fs: FaultyFileSystem) -> None:
        waited_or_went_on.wait(60)
        fs.release()

    @resumable(
        state=None,
        store=store,
        key="held",
        background=True,
        on_success="keep",
        storage=Storage(storage_options=options),
    )
    def task(state: Any = None) -> Generator[Any, None, None]:
        fs = filesystem(ctx().checkpoint)
        fs.hang_rate = 1.0  # every storage call from now on blocks until released
        helper = threading.Thread(target=release_when_blocked, args=(fs,))
        helper.start()
        try:
            yield {"w": first, "step": 1}  # copied; its write blocks
            assert fs.wait_hanging(1)
            fs.hang_rate = 0.0  # that one call stays blocked; the ones after it go through
            yield {"w": second, "step": 2}  # due while the first is being written
            copies.append(held_copies())
        finally:
            waited_or_went_on.set()
            helper.join()

    task()
    assert any("waits for the previous background save" in m for m in seen_wait.messages)
    assert copies == [1]  # the second copy, made once the first was written and freed

    @resumable(state=None, store=store, key="held", storage=Storage(storage_options=options))
    def resume(state: Any = None) -> dict[str, Any]:
        assert isinstance(state, dict)
        return state

    got = resume()
    assert got["step"] == 2
    assert np.array_equal(got["w"], second)


def test_an_async_yield_waits_for_the_background_write_off_the_event_loop(
    seen_wait: Seen,
) -> None:
    """In an async task the wait runs on a thread: other coroutines (the release) run meanwhile."""
    np = pytest.importorskip("numpy")
    store = f"faulty:///held-async-{uuid.uuid4().hex}"
    options = {"target_protocol": "memory", "hang_seconds": 20}
    first, second = np.full(1 << 20, 1.0), np.full(1 << 20, 2.0)
    released_by_the_loop: list[bool] = []

    async def release_when_waiting(fs: FaultyFileSystem) -> None:
        await asyncio.to_thread(seen_wait.event.wait, 30)
        # On the loop while the yield waits, the first write still hangs; a wait that held
        # the loop would let this run only after the hang timed out.
        released_by_the_loop.append(not fs.wait_idle(0))
        fs.release()

    @resumable(
        state=None,
        store=store,
        key="held",
        background=True,
        on_success="keep",
        storage=Storage(storage_options=options),
    )
    async def task(state: Any = None) -> AsyncIterator[Any]:
        fs = filesystem(ctx().checkpoint)
        fs.hang_rate = 1.0
        helper = asyncio.create_task(release_when_waiting(fs))
        try:
            yield {"w": first, "step": 1}
            assert await asyncio.to_thread(fs.wait_hanging, 1)
            fs.hang_rate = 0.0  # that one call stays blocked; the ones after it go through
            yield {"w": second, "step": 2}
            assert released_by_the_loop == [True]
            assert held_copies() == 1
        finally:
            seen_wait.event.set()
            await helper

    asyncio.run(task())
    assert any("waits for the previous background save" in m for m in seen_wait.messages)
