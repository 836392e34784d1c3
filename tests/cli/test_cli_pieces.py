"""The ``resumable`` command on folder snapshots by content: their ``~pieces`` and packs.

Show and verify read the packs, ls and the walk never take ``~pieces`` for a task, rm removes
the packs with the snapshots, and gc removes the packs that no snapshot uses, and only those.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from resumable import Checkpoint, Storage
from resumable.testing import run_command

HOUR = 3600
SECRET = "a secret only the writers know"


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """Run the command in this process: its exit code and what it printed on stdout."""
    capsys.readouterr()
    code = run_command([str(a) for a in args])
    return code, capsys.readouterr().out


def cli_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, Any]:
    """Run the command with ``--json``: its exit code and the parsed document."""
    code, out = cli(capsys, *args, "--json")
    return code, json.loads(out)


def make_tree(root: Path, files: int = 3) -> Path:
    """A small folder of ``files`` files, one of them in a sub-folder."""
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "big.bin").write_bytes(secrets.token_bytes(200_000))
    for i in range(files - 1):
        (root / f"f{i:04d}.txt").write_text(f"file {i}\n")
    return root


def save_tree(task: Path, tree: Path, **storage: Any) -> None:
    """Two folder snapshots of ``tree`` by content in ``task``: as saved, then one file edited."""
    with Checkpoint(task, storage=Storage(keep=2, **storage)) as cp:
        cp.save_sync(tree)
        (tree / "f0000.txt").write_text("edited\n")
        cp.save_sync(tree)


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s modification time ``seconds`` in the past."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def age_task(task: Path, seconds: float) -> None:
    """Age every object of a task folder and of its ``~pieces``: a task idle that long."""
    for path in [*task.iterdir(), *(task / "~pieces").iterdir()]:
        if path.is_file():
            age(path, seconds)


def packs(task: Path) -> list[Path]:
    return sorted((task / "~pieces").glob("*.pack"))


def plant_pack(task: Path) -> Path:
    """A pack no snapshot uses, as a save killed before its commit leaves."""
    pack = task / "~pieces" / f"{secrets.token_hex(16)}.pack"
    pack.write_bytes(b"pieces nobody uses")
    return pack


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> Path:
    """A store with a task "t": two folder snapshots by content (the default for a folder)."""
    root = tmp_path / "store"
    save_tree(root / "t", make_tree(tmp_path / "tree"))
    return root


def test_verify_and_show_load_a_folder_snapshot_by_content(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify` and `show` read the task's packs: folder snapshots by content verify ok."""
    assert packs(store / "t")
    code, out = cli(capsys, "verify", store)
    assert code == 0, out
    assert "checked 2 snapshots of 1 task" in out
    assert "all verify" in out
    code, doc = cli_json(capsys, "show", store, "t")
    assert code == 0
    assert [s["status"] for s in doc["snapshots"]] == ["ok", "ok"]


def test_verify_of_a_missing_pack_is_bad(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder snapshot by content whose pack is gone is bad, naming the pack."""
    for pack in packs(store / "t"):
        pack.unlink()
    code, out = cli(capsys, "verify", store)
    assert code == 1
    assert "BAD  t  snapshot 1: pack" in out
    assert "is missing" in out


def test_show_json_gives_size_entries_and_bytes_added(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show --json`: a snapshot by content's folder bytes, entries and added bytes; the packs."""
    tree = store.parent / "tree"
    folder_bytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    code, doc = cli_json(capsys, "show", store, "t")
    assert code == 0
    first, second = doc["snapshots"]
    assert first["compression"] == second["compression"] == "pieces"
    assert second["raw_size"] == folder_bytes
    assert second["members"] == 4  # three files and the sub-folder
    assert first["added"] >= 200_000  # everything, the random file uncompressed
    assert second["added"] == len("edited\n")  # only the edited file's new piece
    listed = packs(store / "t")
    assert doc["packs"] == {"count": len(listed), "size": sum(p.stat().st_size for p in listed)}


def test_show_text_says_incremental_with_entries_and_added(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show`'s table gains STORED, FOLDER, ENTRIES and ADDED columns, and counts the packs."""
    code, out = cli(capsys, "show", store, "t")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == [
        *("SEQ", "KIND", "STORED", "SIZE", "FOLDER", "ENTRIES", "ADDED"),
        *("CREATED", "(UTC)", "ATTEMPT", "FAILURES", "VERIFIED"),
    ]
    row = lines[2].split()
    assert row[:3] == ["1", "dir", "pieces"]
    assert row[-1] == "ok"
    assert row[7:9] == ["4", "7"]  # ENTRIES, then ADDED: "7 B"
    assert "incremental" in out
    count = len(packs(store / "t"))
    assert f"~pieces: {count} pack" in out


def test_show_of_bytes_keeps_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A task without folder snapshots by content keeps the short table, with no pack line."""
    with Checkpoint(tmp_path / "store" / "b") as cp:
        cp.save_sync(b"bytes")
    code, out = cli(capsys, "show", tmp_path / "store", "b")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["SEQ", "KIND", "SIZE"]
    assert "~pieces" not in out
    code, doc = cli_json(capsys, "show", tmp_path / "store", "b")
    assert doc["packs"] == {"count": 0, "size": 0}
    assert doc["snapshots"][0]["added"] is None


def test_ls_never_takes_pieces_for_a_task(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ls` lists the task once, with its packs in its size; ~pieces is neither task nor foreign."""
    code, doc = cli_json(capsys, "ls", store)
    assert code == 0
    (task,) = doc["tasks"]
    assert task["key"] == "t"
    objects = [*(store / "t").iterdir(), *(store / "t" / "~pieces").iterdir()]
    assert task["size"] == sum(p.stat().st_size for p in objects if p.is_file())
    # A bare Checkpoint's own folder as the store: its ~pieces is not foreign content.
    code, doc = cli_json(capsys, "ls", store / "t")
    assert code == 0
    assert [t["key"] for t in doc["tasks"]] == ["."]
    assert cli(capsys, "verify", store / "t")[0] == 0


def test_rm_removes_the_packs_and_the_pieces_folder(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rm --yes` deletes the snapshots, then every pack, and the emptied folders."""
    before = len([*(store / "t").glob("*.json"), *packs(store / "t")])
    code, doc = cli_json(capsys, "rm", store, "t", "--yes")
    assert code == 0
    assert doc["snapshots"] == 2
    names = [r["name"] for r in doc["removed"]]
    assert any(n.startswith("~pieces/") and n.endswith(".pack") for n in names)
    assert len(names) >= before
    assert not (store / "t").exists()


def test_rm_leaves_foreign_files_in_pieces(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file in ~pieces that is not a pack is not rm's: it stays, and its folders too."""
    (store / "t" / "~pieces" / "notes.txt").write_text("mine")
    code, _ = cli(capsys, "rm", store, "t", "--yes")
    assert code == 0
    assert [p.name for p in (store / "t" / "~pieces").iterdir()] == ["notes.txt"]
    assert not list((store / "t").glob("*.json"))


def test_rm_never_follows_a_pieces_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ~pieces that is a symbolic link to a folder elsewhere: rm deletes nothing there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = elsewhere / f"{'ab' * 16}.pack"
    precious.write_bytes(b"someone else's")
    with Checkpoint(tmp_path / "store" / "t") as cp:
        cp.save_sync(b"bytes")
    (tmp_path / "store" / "t" / "~pieces").symlink_to(elsewhere, target_is_directory=True)
    assert cli(capsys, "rm", tmp_path / "store", "t", "--yes")[0] == 0
    assert precious.read_bytes() == b"someone else's"


def test_rm_of_a_signed_folder_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signed task by content: rm leaves the signed record, removes its packs and ~pieces."""
    store = tmp_path / "store"
    save_tree(store / "t", make_tree(tmp_path / "tree"), signing_key=SECRET)
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", SECRET)
    assert cli(capsys, "verify", store)[0] == 0
    code, doc = cli_json(capsys, "rm", store, "t", "--yes")
    assert code == 0
    assert doc["cleared_record"] == "00000000000000000002.json"
    assert [p.name for p in (store / "t").iterdir()] == [doc["cleared_record"]]
    with Checkpoint(store / "t", storage=Storage(signing_key=SECRET)) as cp:
        assert cp.load_sync() is None


def test_gc_removes_a_planted_pack_after_the_grace(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pack no snapshot uses, in a task idle for longer than the grace, is an orphan pack."""
    task = store / "t"
    used = packs(task)
    orphan = plant_pack(task)
    age_task(task, 2 * HOUR)
    code, doc = cli_json(capsys, "gc", store, "--dry-run")
    assert code == 0
    assert [(g["key"], g["name"], g["reason"]) for g in doc["removed"]] == [
        ("t", f"~pieces/{orphan.name}", "orphan pack")
    ]
    assert orphan.exists()
    code, out = cli(capsys, "gc", store)
    assert code == 0
    assert "orphan pack" in out
    assert "removed 1 object" in out
    assert not orphan.exists()
    assert packs(task) == used
    assert cli(capsys, "verify", store)[0] == 0


def test_gc_never_removes_a_pack_a_snapshot_uses(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even with --grace 0, the packs the snapshots' indexes name all stay."""
    task = store / "t"
    used = packs(task)
    code, doc = cli_json(capsys, "gc", store, "--grace", "0")
    assert code == 0
    assert doc["removed"] == []
    assert packs(task) == used
    assert cli(capsys, "verify", store)[0] == 0


def test_gc_drops_the_packs_only_old_snapshots_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The packs of a snapshot retention dropped, that no snapshot left uses, are orphans."""
    store = tmp_path / "store"
    tree = make_tree(tmp_path / "tree", files=1)  # one file, rewritten whole below
    with Checkpoint(store / "t", storage=Storage(keep=2)) as cp:
        cp.save_sync(tree)
        first = packs(store / "t")
        (tree / "sub" / "big.bin").write_bytes(secrets.token_bytes(200_000))
        cp.save_sync(tree)
        cp.save_sync(tree)  # retention drops the first snapshot; its pack waits for a grace
    assert not (store / "t" / f"{0:020d}.json").exists()
    assert set(first) < set(packs(store / "t"))
    age_task(store / "t", 2 * HOUR)
    code, doc = cli_json(capsys, "gc", store)
    assert code == 0
    assert [g["name"] for g in doc["removed"]] == [f"~pieces/{p.name}" for p in first]
    assert cli(capsys, "verify", store)[0] == 0
    with Checkpoint(store / "t") as cp:
        restored = cp.load_sync()
        assert restored is not None
        assert (restored / "sub" / "big.bin").read_bytes() == (
            tree / "sub" / "big.bin"
        ).read_bytes()


def test_gc_keeps_every_pack_when_a_manifest_cannot_be_read(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable manifest may be the only user of any pack: gc removes none."""
    task = store / "t"
    orphan = plant_pack(task)
    (task / f"{1:020d}.json").write_text("{not json")
    age_task(task, 2 * HOUR)
    code, doc = cli_json(capsys, "gc", store, "--grace", "0")
    assert code == 0
    assert doc["removed"] == []
    assert orphan.exists()


def test_gc_keeps_every_pack_when_an_index_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder snapshot whose index (a payload object here) is corrupt: every pack stays."""
    store = tmp_path / "store"
    with Checkpoint(store / "t") as cp:
        cp.save_sync(make_tree(tmp_path / "tree", files=500))  # an index too large to inline
    (index,) = (store / "t").glob("*.blob")
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    orphan = plant_pack(store / "t")
    code, doc = cli_json(capsys, "gc", store, "--grace", "0")
    assert code == 0
    assert doc["removed"] == []
    assert orphan.exists()


def test_gc_keeps_a_pack_younger_than_the_grace(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new orphan pack may be a save in progress (packs come before the manifest): kept."""
    orphan = plant_pack(store / "t")
    code, out = cli(capsys, "gc", store)
    assert code == 0
    assert "removed 0 objects" in out
    assert "kept 1 object newer than the grace period" in out
    assert orphan.exists()


def test_gc_counts_an_orphan_packs_age_from_the_newest_commit(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An old pack of a task that committed just now is kept: its next save may reuse it."""
    task = store / "t"
    orphan = plant_pack(task)
    age(orphan, 2 * HOUR)  # the manifests are new
    code, doc = cli_json(capsys, "gc", store)
    assert code == 0
    assert doc["removed"] == []
    (kept,) = doc["kept"]
    assert kept["reason"] == "orphan pack"
    assert kept["age"] < HOUR
    assert orphan.exists()


def test_gc_reaches_a_task_that_has_only_packs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Packs of a first save killed before its commit: gc removes them, ls lists no task."""
    store = tmp_path / "store"
    (store / "t" / "~pieces").mkdir(parents=True)
    orphan = plant_pack(store / "t")
    temp = store / "t" / "~pieces" / f".{secrets.token_hex(16)}.pack.0123abcd.tmp"
    temp.write_bytes(b"torn")
    age(orphan, 2 * HOUR)
    age(temp, 2 * HOUR)
    code, doc = cli_json(capsys, "ls", store)
    assert code == 0
    assert doc["tasks"] == []
    code, doc = cli_json(capsys, "gc", store)
    assert code == 0
    assert {(g["name"], g["reason"]) for g in doc["removed"]} == {
        (f"~pieces/{orphan.name}", "orphan pack"),
        (f"~pieces/{temp.name}", "temp file"),
    }
    assert not list((store / "t" / "~pieces").iterdir())


def test_memory_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On an fsspec URL (memory://) show, verify, gc and rm handle ~pieces as on disk."""
    root = f"/resumable-cli-pieces-{uuid.uuid4().hex}"
    url = f"memory://{root}"
    with Checkpoint(f"{url}/job") as cp:
        cp.save_sync(make_tree(tmp_path / "tree"))
    fs = fsspec.filesystem("memory")
    try:
        orphan = f"{root}/job/~pieces/{secrets.token_hex(16)}.pack"
        fs.pipe_file(orphan, b"pieces nobody uses")
        code, doc = cli_json(capsys, "ls", url)
        assert (code, [t["key"] for t in doc["tasks"]]) == (0, ["job"])
        assert cli(capsys, "verify", url) == (
            0,
            f"checked 1 snapshot of 1 task in {url}: all verify\n",
        )
        code, doc = cli_json(capsys, "show", url, "job")
        assert code == 0
        assert doc["snapshots"][0]["compression"] == "pieces"
        assert doc["packs"]["count"] == 2
        code, doc = cli_json(capsys, "gc", url, "--grace", "0")
        assert code == 0
        assert [(g["name"], g["reason"]) for g in doc["removed"]] == [
            (orphan.removeprefix(f"{root}/job/"), "orphan pack")
        ]
        assert cli(capsys, "verify", url)[0] == 0
        assert cli(capsys, "rm", url, "job", "--yes")[0] == 0
        assert not [p for p in fs.find(root) if not p.endswith("/")]
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)
