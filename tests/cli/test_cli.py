"""The ``resumable`` command, run as a real process against stores on local disk.

Also under store problems, nested keys, signing and hostile folders.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.spec import AbstractFileSystem

from resumable import Captured, Checkpoint, Storage
from resumable.testing import run_command as main

BIG = 100_000  # larger than INLINE_MAX: stored as a separate payload object


HOUR = 3600


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m resumable ARGS``, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "resumable", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_json(*args: str | Path) -> tuple[int, Any]:
    """``python -m resumable ARGS --json``: the exit code and the parsed document."""
    done = run(*args, "--json")
    return done.returncode, json.loads(done.stdout)


def save(folder: Path, *payloads: bytes) -> None:
    """Save each payload as a new snapshot under ``folder``."""
    with Checkpoint(folder) as cp:
        for data in payloads:
            cp.save_sync(data)


def blobs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.blob"))


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s modification time ``seconds`` in the past."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> Path:
    """A store with a task "train" (two large snapshots) and a nested "fit/abc" (one small)."""
    root = tmp_path / "store"
    save(root / "train", b"a" * BIG, b"b" * BIG)
    save(root / "fit" / "abc", b"small")
    return root


def test_ls_lists_tasks_with_count_time_and_size(store: Path) -> None:
    """`ls` shows one row per task, nested keys included, with count, UTC time and size."""
    done = run("ls", store)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["KEY", "SNAPSHOTS", "NEWEST", "(UTC)", "SIZE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"fit/abc", "train"}
    assert rows["train"][1] == "2"
    assert rows["fit/abc"][1] == "1"
    assert rows["train"][2].endswith("Z")


def test_ls_json_reports_total_size_of_task_folder(store: Path) -> None:
    """`ls` --json gives each task's snapshot count, newest seq and the bytes of its folder."""
    code, doc = run_json("ls", store)
    assert code == 0
    tasks = {t["key"]: t for t in doc["tasks"]}
    train = tasks["train"]
    assert train["snapshots"] == 2
    assert train["newest_seq"] == 1
    assert train["newest_created_utc"].endswith("Z")
    assert train["size"] == sum(p.stat().st_size for p in (store / "train").iterdir())


def test_ls_of_a_checkpoint_url_lists_its_own_folder(tmp_path: Path) -> None:
    """A bare Checkpoint URL given as STORE is listed as one task with the key '.'."""
    save(tmp_path / "cp", b"x")
    code, doc = run_json("ls", tmp_path / "cp")
    assert code == 0
    assert [t["key"] for t in doc["tasks"]] == ["."]


def test_ls_of_empty_store_says_so(tmp_path: Path) -> None:
    """An existing folder without snapshots lists no tasks and exits 0."""
    (tmp_path / "empty").mkdir()
    done = run("ls", tmp_path / "empty")
    assert done.returncode == 0
    assert "no tasks" in done.stdout


def test_show_lists_snapshots_verified(store: Path) -> None:
    """`show` prints each snapshot of the task, oldest first, verified ok."""
    done = run("show", store, "train")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["0", "1"]
    assert all(r[1] == "bytes" and r[-1] == "ok" for r in rows)


def test_show_json_has_manifest_fields(store: Path) -> None:
    """`show` --json gives seq, kind, size, created, attempt and the verification result."""
    code, doc = run_json("show", store, "fit/abc")
    assert code == 0
    (snap,) = doc["snapshots"]
    assert snap["seq"] == 0
    assert snap["kind"] == "bytes"
    assert snap["size"] == len(b"small")
    assert snap["attempt"] == 0
    assert snap["blob"] is None  # inlined in the manifest
    assert snap["verified"] is True
    assert snap["created_utc"].endswith("Z")


def test_show_no_verify_does_not_read_payloads(store: Path) -> None:
    """With --no-verify a corrupt payload goes unnoticed: the manifests alone are shown."""
    blobs(store / "train")[-1].write_bytes(b"garbage")
    code, doc = run_json("show", store, "train", "--no-verify")
    assert code == 0
    assert [s["status"] for s in doc["snapshots"]] == ["unchecked", "unchecked"]
    assert all(s["verified"] is None for s in doc["snapshots"])


def test_show_flags_corrupt_snapshot_and_exits_1(store: Path) -> None:
    """`show` marks a snapshot whose payload does not match as BAD and exits 1."""
    newest = blobs(store / "train")[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    done = run("show", store, "train")
    assert done.returncode == 1
    assert "BAD: payload does not match its blake3" in done.stdout


def test_show_unknown_key_exits_2(store: Path) -> None:
    """`show` of a key without snapshots is a usage error that points at ls."""
    done = run("show", store, "nope")
    assert done.returncode == 2
    assert "no snapshots of task 'nope'" in done.stderr
    assert "resumable ls" in done.stderr


def test_verify_all_good_exits_0(store: Path) -> None:
    """`verify` checks every snapshot of every task and exits 0 when all verify."""
    done = run("verify", store)
    assert done.returncode == 0, done.stderr
    assert "checked 3 snapshots of 2 tasks" in done.stdout
    assert "all verify" in done.stdout


def test_verify_corrupt_blob_exits_1_naming_snapshot(store: Path) -> None:
    """A truncated payload makes verify exit 1 and name the task, the seq and why."""
    newest = blobs(store / "train")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    done = run("verify", store)
    assert done.returncode == 1
    assert "BAD  train  snapshot 1: payload is truncated" in done.stdout
    assert "1 bad" in done.stdout


def test_verify_json_lists_bad_snapshots(store: Path) -> None:
    """`verify` --json reports ok=false and each bad snapshot's key, seq and problem."""
    (store / "train" / "00000000000000000000.json").write_text("{not json")
    code, doc = run_json("verify", store)
    assert code == 1
    assert doc["ok"] is False
    assert doc["checked"] == 3
    assert [(b["key"], b["seq"]) for b in doc["bad"]] == [("train", 0)]
    assert "not valid JSON" in doc["bad"][0]["problem"]


def test_verify_key_checks_only_that_task(store: Path) -> None:
    """`verify` STORE KEY ignores the other tasks' problems."""
    blobs(store / "train")[-1].write_bytes(b"garbage")
    code, doc = run_json("verify", store, "fit/abc")
    assert code == 0
    assert doc == {"store": str(store), "ok": True, "tasks": 1, "checked": 1, "bad": []}


def test_verify_missing_payload_is_bad(store: Path) -> None:
    """A manifest whose payload was deleted fails verification."""
    blobs(store / "train")[0].unlink()
    done = run("verify", store, "train")
    assert done.returncode == 1
    assert "snapshot 0: payload" in done.stdout
    assert "is missing" in done.stdout


def test_rm_without_yes_refuses_and_keeps_everything(store: Path) -> None:
    """`rm` without --yes deletes nothing, says to add --yes, and exits 2."""
    before = sorted((store / "train").iterdir())
    done = run("rm", store, "train")
    assert done.returncode == 2
    assert "--yes" in done.stderr
    assert sorted((store / "train").iterdir()) == before


def test_rm_yes_removes_snapshots_and_leftovers_only_of_that_key(store: Path) -> None:
    """`rm` --yes deletes the task's snapshots, orphan payloads and temp files, nothing else."""
    task = store / "train"
    (task / "00000000000000000007.0123456789abcdef.blob").write_bytes(b"orphan")
    (task / ".00000000000000000008.json.cafe.tmp").write_bytes(b"torn")
    done = run("rm", store, "train", "--yes")
    assert done.returncode == 0, done.stderr
    assert "removed task train" in done.stdout
    assert not task.exists()
    assert run("verify", store, "fit/abc").returncode == 0
    _, doc = run_json("ls", store)
    assert [t["key"] for t in doc["tasks"]] == ["fit/abc"]


def test_rm_keeps_files_that_are_not_snapshot_objects(store: Path) -> None:
    """`rm` leaves foreign files in the task folder alone, and the folder with them."""
    (store / "train" / "notes.txt").write_text("mine")
    code, doc = run_json("rm", store, "train", "--yes")
    assert code == 0
    assert doc["snapshots"] == 2
    assert "notes.txt" not in {r["name"] for r in doc["removed"]}
    assert [p.name for p in (store / "train").iterdir()] == ["notes.txt"]


def test_rm_refuses_key_outside_store(store: Path, tmp_path: Path) -> None:
    """A key with '..' is refused: rm never reaches outside the store."""
    save(tmp_path / "outside", b"precious")
    done = run("rm", store, "../outside", "--yes")
    assert done.returncode == 2
    assert "invalid task key" in done.stderr
    assert list((tmp_path / "outside").glob("*.json"))


def test_gc_removes_old_garbage_and_keeps_young_and_committed(store: Path) -> None:
    """`gc` removes orphans and temp files past the grace period; new ones and snapshots stay."""
    task = store / "train"
    committed = sorted(task.iterdir())
    old_orphan = task / "00000000000000000005.00000000deadbeef.blob"
    old_temp = task / ".00000000000000000006.1111111122222222.blob.abcd.tmp"
    young_orphan = task / "00000000000000000009.aaaaaaaabbbbbbbb.blob"
    for path in (old_orphan, old_temp, young_orphan):
        path.write_bytes(b"junk")
    age(old_orphan, 2 * HOUR)
    age(old_temp, 2 * HOUR)
    done = run("gc", store)
    assert done.returncode == 0, done.stderr
    assert old_orphan.name in done.stdout
    assert "removed 2 objects" in done.stdout
    assert "kept 1 object" in done.stdout
    assert not old_orphan.exists()
    assert not old_temp.exists()
    assert young_orphan.exists()
    assert sorted(p for p in task.iterdir() if p != young_orphan) == committed
    assert run("verify", store).returncode == 0


def test_gc_grace_option_sets_the_age_limit(store: Path) -> None:
    """--grace 60 removes an orphan two minutes old that the default hour would keep."""
    orphan = store / "fit" / "abc" / "00000000000000000003.00000000deadbeef.blob"
    orphan.write_bytes(b"junk")
    age(orphan, 120)
    assert run("gc", store).returncode == 0
    assert orphan.exists()
    assert run("gc", store, "--grace", "60").returncode == 0
    assert not orphan.exists()


def test_gc_dry_run_removes_nothing(store: Path) -> None:
    """`gc` --dry-run --json lists what it would remove and leaves it in place."""
    orphan = store / "train" / "00000000000000000005.00000000deadbeef.blob"
    orphan.write_bytes(b"junk")
    age(orphan, 2 * HOUR)
    code, doc = run_json("gc", store, "--dry-run")
    assert code == 0
    assert doc["dry_run"] is True
    assert [(g["key"], g["name"], g["reason"]) for g in doc["removed"]] == [
        ("train", orphan.name, "orphan payload")
    ]
    assert orphan.exists()


def test_gc_removes_payload_of_losing_writer(store: Path) -> None:
    """A payload whose seq was committed by another writer's manifest is garbage too."""
    task = store / "train"
    loser = task / "00000000000000000001.0000000000000000.blob"
    loser.write_bytes(b"b" * BIG)
    age(loser, 2 * HOUR)
    code, doc = run_json("gc", store)
    assert code == 0
    assert [g["name"] for g in doc["removed"]] == [loser.name]
    assert run("verify", store).returncode == 0


def test_gc_keeps_payload_of_unreadable_manifest(store: Path) -> None:
    """A payload whose manifest is corrupt may be the only copy: gc keeps it."""
    task = store / "train"
    (task / "00000000000000000001.json").write_text("{not json")
    payload = blobs(task)[-1]
    age(payload, 2 * HOUR)
    code, doc = run_json("gc", store, "--grace", "0")
    assert code == 0
    assert doc["removed"] == []
    assert payload.exists()


def test_bad_url_exits_2_with_message(tmp_path: Path) -> None:
    """An unknown URL protocol is a clear error on stderr, exit 2 and no traceback."""
    done = run("ls", "nosuchproto://bucket/store")
    assert done.returncode == 2
    assert "cannot open store" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_missing_store_exits_2(tmp_path: Path) -> None:
    """A store folder that does not exist is an error, not an empty listing."""
    done = run("verify", tmp_path / "typo")
    assert done.returncode == 2
    assert "no store at" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_error_exits_2() -> None:
    """A missing subcommand or a negative grace is a usage error (exit 2)."""
    assert run().returncode == 2
    done = run("gc", ".", "--grace", "-1")
    assert done.returncode == 2
    assert "grace" in done.stderr


def test_memory_store_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """On an fsspec URL (memory://, so in-process) ls, verify, gc and rm work as on disk."""
    root = f"/resumable-cli-{uuid.uuid4().hex}"
    url = f"memory://{root}"
    with Checkpoint(f"{url}/job") as cp:
        cp.save_sync(b"x" * BIG)
    fs = fsspec.filesystem("memory")
    try:
        fs.pipe_file(f"{root}/job/00000000000000000009.abcdef01.blob", b"orphan")
        assert main(["ls", url, "--json"]) == 0
        assert [t["key"] for t in json.loads(capsys.readouterr().out)["tasks"]] == ["job"]
        assert main(["verify", url]) == 0
        assert "all verify" in capsys.readouterr().out
        assert main(["gc", url, "--grace", "0"]) == 0
        assert "removed 1 object" in capsys.readouterr().out
        assert main(["rm", url, "job", "--yes"]) == 0
        assert "removed task job" in capsys.readouterr().out
        assert not [p for p in fs.find(root) if p.endswith((".json", ".blob"))]
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


# -- store problems, nested keys, signing and hostile folders -------------------------------------


SECRET = "a secret only the writers know"


class NoCredentialsError(Exception):
    """What botocore raises when no credentials are found: not an OSError."""


class _NoCredentials(AbstractFileSystem):
    protocol = "nocreds"

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        raise NoCredentialsError("Unable to locate credentials")

    def info(self, path: str, **kwargs: Any) -> Any:
        raise NoCredentialsError("Unable to locate credentials")


@pytest.mark.parametrize("command", ["ls", "verify", "gc"])
def test_any_store_error_is_one_line_and_exit_2(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store error that is no OSError (botocore's NoCredentialsError): one line, exit 2."""
    fsspec.register_implementation("nocreds", _NoCredentials, clobber=True)
    assert main([command, "nocreds://bucket/runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "NoCredentialsError" in err
    assert "Unable to locate credentials" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "manifest",
    [
        b'{"format": 1, "seq": 0, "attempt": 1e999}',
        b'{"format": 1, "seq": 0, "created": 1' + b"0" * 400 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_bad_manifest_is_a_bad_snapshot_never_a_traceback(tmp_path: Path, manifest: bytes) -> None:
    """A malformed manifest is reported as BAD (exit 1) by show and verify, ls still lists."""
    task = tmp_path / "store" / "t"
    save(task, b"good")
    (task / "00000000000000000001.json").write_bytes(manifest)
    for args in (["show", tmp_path / "store", "t"], ["verify", tmp_path / "store"]):
        done = run(*args)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "BAD" in done.stdout
    listed = run("ls", tmp_path / "store")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr


def test_verify_and_gc_reach_keys_at_any_depth(tmp_path: Path) -> None:
    """``proj/exp/run1`` and ``a/b`` under a task ``a`` are found by ls, verify and gc."""
    store = tmp_path / "store"
    save(store / "proj" / "exp" / "run1", b"x" * BIG)
    save(store / "a", b"outer")
    save(store / "a" / "b", b"y" * BIG)
    code, doc = run_json("ls", store)
    assert code == 0
    assert [t["key"] for t in doc["tasks"]] == ["a", "a/b", "proj/exp/run1"]

    (deep_blob,) = blobs(store / "proj" / "exp" / "run1")
    data = bytearray(deep_blob.read_bytes())
    data[10] ^= 0xFF
    deep_blob.write_bytes(bytes(data))
    code, doc = run_json("verify", store)
    assert code == 1
    assert doc["tasks"] == 3
    assert [b["key"] for b in doc["bad"]] == ["proj/exp/run1"]

    orphan = store / "a" / "b" / "00000000000000000009.abcdef01.blob"
    orphan.write_bytes(b"orphan")
    age(orphan, 7200)
    code, doc = run_json("gc", store)
    assert code == 0
    assert [(g["key"], g["name"]) for g in doc["removed"]] == [("a/b", orphan.name)]
    assert not orphan.exists()


def test_verify_honours_the_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``RESUMABLE_SIGNING_KEY`` set, an unsigned snapshot is bad, as a load refuses it."""
    store = tmp_path / "store"
    with Checkpoint(store / "t", storage=Storage(signing_key=SECRET)) as cp:
        cp.save_sync(b"signed")
    with Checkpoint(store / "t") as cp:  # no key: unsigned, planted after the signed one
        monkeypatch.delenv("RESUMABLE_SIGNING_KEY", raising=False)
        cp.save_sync(b"planted")
    monkeypatch.delenv("RESUMABLE_SIGNING_KEY", raising=False)
    assert main(["verify", str(store)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("RESUMABLE_SIGNING_KEY", SECRET)
    assert main(["verify", str(store), "--json"]) == 1
    out = capsys.readouterr().out
    assert '"seq": 1' in out
    assert '"seq": 0' not in out


def _tar(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (_tar(("ok.txt", b"fine")), "archive"),  # recorded as gzip, but it is not
        (gzip.compress(_tar(("../escaped.txt", b"evil"))), "escaped"),  # a member outside
    ],
)
def test_verify_reports_what_a_load_refuses(tmp_path: Path, payload: bytes, problem: str) -> None:
    """A folder snapshot whose digest is right but that a load refuses is reported as bad."""
    store = tmp_path / "store"
    with Checkpoint(store / "t") as cp:
        cp.commit(Captured("dir", lambda: (payload,)))
        with pytest.raises(Exception, match=problem):
            cp.load_sync()
    done = run("verify", store)
    assert done.returncode == 1, done.stdout
    assert "BAD  t  snapshot 0" in done.stdout
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("escaped.txt"))


def test_rm_never_follows_a_symlink_out_of_the_store(tmp_path: Path) -> None:
    """``rm`` of a key that is a link to a folder outside the store removes nothing there."""
    outside = tmp_path / "outside"
    save(outside, b"someone else's")
    before = sorted(p.name for p in outside.iterdir())
    store = tmp_path / "store"
    save(store / "real", b"mine")
    (store / "link").symlink_to(outside, target_is_directory=True)
    done = run("rm", store, "link", "--yes")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in outside.iterdir()) == before
    (store / "nested").mkdir()
    (store / "nested" / "via").symlink_to(outside, target_is_directory=True)
    assert run("rm", store, "nested/via", "--yes").returncode == 2
    assert sorted(p.name for p in outside.iterdir()) == before
