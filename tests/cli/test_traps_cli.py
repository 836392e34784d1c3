"""The command's traps: STORE defaults as the decorator's store does, walks stay in a store.

Run in-process (``main``), on stores made by real tasks and checkpoints on local disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import Checkpoint, ctx, resumable
from resumable._cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``resumable ARGS`` in this process: exit code, stdout, stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code, out, _ = run(capsys, *args, "--json")
    return code, json.loads(out)


def _keep_a_snapshot(**options: Any) -> str:
    """Run a task that keeps its snapshot where the decorator's default store says; its key."""
    keys: list[str] = []

    @resumable(state=0, key="nightly", on_success="keep", **options)
    def nightly(state: int = 0) -> Iterator[int]:
        keys.append(ctx().key)
        yield state + 1

    nightly()
    return keys[0]


# -- STORE defaults to the decorator's store ---------------------------------------------------


def test_ls_without_store_lists_the_default_store_of_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resumable ls` lists ./.resumable, where a task run in that folder without store= saves."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    key = _keep_a_snapshot()
    code, doc = run_json(capsys, "ls")
    assert code == 0
    assert doc["store"] == str(tmp_path / ".resumable")
    assert [t["key"] for t in doc["tasks"]] == [key]


def test_ls_without_store_follows_resumable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With $RESUMABLE_STORE set, `resumable ls` lists that store, as the decorator uses it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESUMABLE_STORE", str(tmp_path / "shared"))
    key = _keep_a_snapshot()
    code, doc = run_json(capsys, "ls")
    assert code == 0
    assert doc["store"] == str(tmp_path / "shared")
    assert [t["key"] for t in doc["tasks"]] == [key]
    assert not (tmp_path / ".resumable").exists()


def test_show_verify_rm_take_the_key_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show KEY`, `verify` and `rm KEY --yes` without STORE work on the default store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    key = _keep_a_snapshot()
    code, doc = run_json(capsys, "show", key)
    assert code == 0
    assert [s["status"] for s in doc["snapshots"]] == ["ok"]
    code, doc = run_json(capsys, "verify")
    assert (code, doc["ok"], doc["tasks"]) == (0, True, 1)
    code, _, _ = run(capsys, "rm", key, "--yes")
    assert code == 0
    code, doc = run_json(capsys, "ls")
    assert doc["tasks"] == []


def test_a_missing_default_store_says_it_was_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No ./.resumable here: exit 2, and stderr says which default was used and how to choose."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    code, out, err = run(capsys, "ls")
    assert code == 2
    assert out == ""
    assert str(tmp_path / ".resumable") in err
    assert "default store" in err
    assert "give STORE" in err


def test_a_store_url_with_one_slash_is_refused_with_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`resumable ls s3:/bucket/runs`: exit 2 and the URL to write instead."""
    code, _, err = run(capsys, "ls", "s3:/bucket/runs")
    assert code == 2
    assert "Write 's3://bucket/runs'" in err


# -- a walk stays inside a store ---------------------------------------------------------------


def _temp_like(root: Path) -> None:
    """A folder like the temp folder: other programs' files, and stores deep under it."""
    root.mkdir()
    (root / "report.txt").write_text("not a snapshot")
    (root / "build.log").write_text("not a snapshot")
    with Checkpoint(root / "job1" / ".resumable" / "t") as cp:
        cp.save_sync(b"x")


@pytest.mark.parametrize("command", ["ls", "verify", "gc"])
def test_a_walk_of_a_folder_that_is_not_a_store_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls, verify and gc of a folder holding other files and no snapshot: exit 2, nothing walked."""
    root = tmp_path / "tmp"
    _temp_like(root)
    code, out, err = run(capsys, command, str(root))
    assert code == 2
    assert out == ""
    assert "is not a store" in err
    assert "'build.log', 'report.txt'" in err


def test_folders_of_other_files_inside_a_store_are_not_walked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inside a store, a folder of other files is skipped; tasks and nested keys are found."""
    store = tmp_path / "store"
    for key in ("a", "proj/exp/run1"):
        with Checkpoint(store / key) as cp:
            cp.save_sync(b"x")
    (store / ".DS_Store").write_text("hidden files are tolerated")
    elsewhere = store / "notes" / "deep"
    elsewhere.mkdir(parents=True)
    (store / "notes" / "todo.txt").write_text("not a snapshot")
    with Checkpoint(elsewhere) as cp:  # under a folder that is not part of the store
        cp.save_sync(b"x")
    code, doc = run_json(capsys, "ls", str(store))
    assert code == 0
    assert [t["key"] for t in doc["tasks"]] == ["a", "proj/exp/run1"]


def test_a_checkpoint_folder_with_other_files_is_still_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare Checkpoint's folder that also holds other files is listed: its snapshots count."""
    folder = tmp_path / "cp"
    with Checkpoint(folder) as cp:
        cp.save_sync(b"x")
    (folder / "README.txt").write_text("the user's own file")
    code, doc = run_json(capsys, "ls", str(folder))
    assert code == 0
    assert [t["key"] for t in doc["tasks"]] == ["."]
