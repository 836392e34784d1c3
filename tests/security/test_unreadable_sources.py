"""A save that meets a file or folder it may not read: the error names it and blames no store.

Each save runs in a child process as a user without the right to read (``nobody`` when the
tests run as root, who reads anything), against a real local store, and reports what it
raised: its type, message, ``errno`` and ``filename``, whether the store was retried, and
whether the snapshot saved before is still the newest.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable import (
    ResumableError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceUnreadableError,
    StorageError,
)
from resumable._errors import source_error

_SAVE = textwrap.dedent(
    """
    import json, logging, os, shutil, sys, tempfile
    from pathlib import Path
    from resumable import Checkpoint, RetryPolicy, Storage

    store, target, kind = sys.argv[1:]
    storage = Storage(incremental=kind != "archive", retry=RetryPolicy(attempts=3, wait=0))

    def save():
        retries = []

        class Retries(logging.Handler):
            def emit(self, record):
                if "retrying" in record.getMessage():
                    retries.append(record.getMessage())

        logging.getLogger("resumable").addHandler(Retries())
        with Checkpoint(store, storage=storage) as cp:
            cp.save_sync(b"previous")
            try:
                if kind == "background":  # the capture copies the file at the call
                    cp.save_background_sync(target)
                    cp.flush_sync()
                else:
                    cp.save_sync(target)
                found = None
            except Exception as exc:
                found = {
                    "mro": [c.__name__ for c in type(exc).__mro__],
                    "message": str(exc),
                    "errno": getattr(exc, "errno", None),
                    "filename": getattr(exc, "filename", None),
                }
            previous = (cp.load_sync() / "payload").read_bytes() == b"previous"
        return {"error": found, "retries": retries, "previous": previous}

    if os.geteuid() != 0:
        answer = save()
    else:  # root reads anything: a child that is nobody saves
        warm = Path(tempfile.mkdtemp())
        with Checkpoint(warm / "store", storage=storage) as cp:  # imports what saves need
            (warm / "src").mkdir()
            (warm / "src" / "f").write_bytes(b"x")
            cp.save_sync(warm / "src")
            cp.save_sync(warm / "src" / "f")
            cp.load_sync()
        shutil.rmtree(warm)
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.setgid(65534)
            os.setuid(65534)
            os.write(writer, json.dumps(save()).encode())
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader) as pipe:
            answer = json.loads(pipe.read())
        os.waitpid(pid, 0)
    print(json.dumps(answer))
    """
)


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder under the system's temp folder that the saving user may enter and write."""
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o777)
        shutil.rmtree(folder)


def save_as_reader(work: Path, target: Path, kind: str) -> dict[str, Any]:
    """Save ``target`` in a child process that may not read what was made unreadable."""
    done = subprocess.run(
        [sys.executable, "-c", _SAVE, str(work / f"store-{kind}"), str(target), kind],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    print(answer["error"])  # shown when an assertion fails
    return answer


def folder_to_save(work: Path) -> Path:
    """A folder to save holding one readable file."""
    src = work / "src"
    src.mkdir(mode=0o755)
    (src / "readable.txt").write_text("fine")
    (src / "readable.txt").chmod(0o644)
    return src


def assert_names(answer: dict[str, Any], path: Path, fix: str) -> None:
    """The save failed with a PermissionError naming ``path``, unretried, the store intact."""
    error = answer["error"]
    assert error is not None, "the save read what it may not read"
    assert error["mro"][:2] == ["SourcePermissionError", "SourceUnreadableError"], error
    assert "PermissionError" in error["mro"]
    assert "StorageError" not in error["mro"]
    assert (error["errno"], error["filename"]) == (errno.EACCES, str(path))
    assert str(path) in error["message"]
    assert fix in error["message"]
    assert answer["retries"] == []
    assert answer["previous"]


@pytest.mark.parametrize("kind", ["incremental", "archive"])
def test_a_folder_inside_that_cannot_be_listed_is_named(work: Path, kind: str) -> None:
    """A subfolder the process may not list: a PermissionError naming it, never retried."""
    src = folder_to_save(work)
    locked = src / "locked"
    locked.mkdir()
    (locked / "inside.txt").write_text("hidden")
    locked.chmod(0o000)
    answer = save_as_reader(work, src, kind)
    assert_names(answer, locked, "make it readable, or move it out of the folder")


@pytest.mark.parametrize("kind", ["incremental", "archive", "background"])
def test_a_single_file_the_process_cannot_read_is_named(work: Path, kind: str) -> None:
    """Saving one unreadable file: a PermissionError naming it, the store untouched."""
    secret = work / "model.pt"
    secret.write_bytes(b"weights")
    secret.chmod(0o000)
    answer = save_as_reader(work, secret, kind)
    assert_names(answer, secret, "make it readable")
    assert "move it out" not in answer["error"]["message"]


def test_a_folder_on_the_way_that_cannot_be_entered_is_named(work: Path) -> None:
    """A file behind a folder the process may not enter: the error names the path given."""
    closed = work / "closed"
    closed.mkdir()
    (closed / "model.pt").write_bytes(b"weights")
    closed.chmod(0o600)
    answer = save_as_reader(work, closed / "model.pt", "archive")
    assert_names(answer, closed / "model.pt", "make it readable")


def test_other_read_errors_keep_their_errno_and_name_the_file() -> None:
    """An I/O error reading a source: a SourceUnreadableError with errno and filename."""
    error = source_error(OSError(errno.EIO, "Input/output error"), "/d/f.bin", in_folder=True)
    assert type(error) is SourceUnreadableError
    assert isinstance(error, OSError)
    assert isinstance(error, ResumableError)
    assert not isinstance(error, StorageError | PermissionError)
    assert (error.errno, error.filename) == (errno.EIO, "/d/f.bin")
    assert "Input/output error" in str(error)
    assert "move it out of the folder" in str(error)


def test_a_file_removed_while_saved_is_a_source_not_found() -> None:
    """ENOENT reading a source is a SourceNotFoundError naming it; EPERM a PermissionError."""
    gone = source_error(FileNotFoundError(errno.ENOENT, "No such file"), "/f", in_folder=True)
    assert isinstance(gone, SourceNotFoundError)
    assert gone.filename == "/f"
    assert "removed while it was being saved" in str(gone)
    denied = source_error(PermissionError(errno.EPERM, "Not permitted"), "/f", in_folder=False)
    assert type(denied) is SourcePermissionError
    assert denied.errno == errno.EPERM
