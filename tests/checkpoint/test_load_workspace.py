"""The folder ``load`` returns stays until ``close()`` or the end of the process.

``Checkpoint(url).load_sync()`` keeps no reference to its ``Checkpoint``, which the garbage
collector may take at once: the folder it returned must outlive it.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resumable import Checkpoint


def test_loaded_folder_outlives_its_collected_checkpoint(tmp: Path, tmp_path: Path) -> None:
    """``Checkpoint(url).load_sync()``: the folder is there after the Checkpoint is collected."""
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(b"step 3")
    root = Checkpoint(tmp_path / "store").load_sync()
    gc.collect()
    assert root is not None
    assert (root / "payload").read_bytes() == b"step 3"


def test_close_still_removes_the_loaded_folder(tmp: Path, tmp_path: Path) -> None:
    """``close()`` removes what the load returned, with nothing of the workspace left behind."""
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(b"x")
        root = cp.load_sync()
        assert root is not None
    assert not root.exists()
    assert list(tmp.iterdir()) == []


EXITS = """
import os, sys
from resumable import Checkpoint

root = Checkpoint(sys.argv[1]).load_sync()
print(root, flush=True)
if sys.argv[2] == "fork":
    child = os.fork()
    if child == 0:
        sys.exit(0)  # the child's exit hooks run: they must leave the parent's folder alone
    os.waitpid(child, 0)
    assert (root / "payload").read_bytes() == b"state", "the child removed the parent's folder"
print("alive", flush=True)
"""


@pytest.mark.parametrize("how", ["exit", "fork"])
def test_loaded_folder_is_removed_at_exit(tmp: Path, tmp_path: Path, how: str) -> None:
    """A folder never closed is removed when its process exits (not when a forked child does)."""
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(b"state")
    script = tmp_path / "exits.py"
    script.write_text(textwrap.dedent(EXITS))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store"), how],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    root, alive = done.stdout.split()
    assert alive == "alive"
    assert Path(root).is_relative_to(tmp)
    assert list(tmp.iterdir()) == []


def test_many_unclosed_loads_warn_once(
    tmp: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every 100 loaded folders of collected Checkpoints, one warning says to close them."""
    with Checkpoint(tmp_path / "store") as cp:
        cp.save_sync(b"x")
    roots = []
    for _ in range(100):  # from any count before, it passes exactly one multiple of 100
        roots.append(Checkpoint(tmp_path / "store").load_sync())
        gc.collect()
    warned = [r for r in caplog.records if "were not closed" in r.getMessage()]
    assert len(warned) == 1
    assert all(root is not None and root.is_dir() for root in roots)
