"""The ``resumable`` command under store problems, nested keys, signing and hostile folders."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.spec import AbstractFileSystem

from resumable import Checkpoint, Storage
from resumable._checkpoint import Captured
from resumable._cli import main

from .test_cli import BIG, age, blobs, run, run_json, save

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
