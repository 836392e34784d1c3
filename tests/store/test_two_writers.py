"""Two real processes run the same task on the same key at once: no snapshot is ever mixed."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from resumable.testing import read_state
from tests.conftest import payload_digest
from tests.stress.storm import KEY, check_state, spawn_child

#: Saves each writer completes: enough for many sequence-number races on 2 cores.
YIELDS = 200
_MANIFEST = re.compile(r"^(\d{20})\.json$")


def verify_by_hand(keydir: Path, seq: int) -> tuple[dict[str, object], str | None]:
    """Snapshot ``seq`` read as docs/storage-format.md describes, checked and unpickled.

    Returns the state and the payload's object name (``None`` when it is inlined).
    """
    doc = json.loads((keydir / f"{seq:020d}.json").read_bytes())
    assert doc["seq"] == seq
    assert doc["kind"] == "state"
    if doc["blob"] is None:
        data = base64.b64decode(doc["inline"])
    else:
        # The payload's name carries the token of the writer whose manifest points to it.
        assert doc["blob"] == f"{seq:020d}.{doc['writer']}.blob"
        data = (keydir / doc["blob"]).read_bytes()
    assert len(data) == doc["size"]
    assert payload_digest(doc, data) == doc["blake3"]
    state = read_state(data)
    check_state(state)
    assert isinstance(state, dict)
    return state, doc["blob"]


def run_writers(store: Path, keep: int) -> list[tuple[int, list[str]]]:
    """Run writers A and B from a common start; each one's exit code and stdout lines."""
    procs = [spawn_child("writer", tag, str(store), str(keep), str(YIELDS)) for tag in "AB"]
    try:
        for proc in procs:  # the barrier: both have imported everything and wait for "go"
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append((proc.returncode, out.splitlines() + err.splitlines()))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("keep", [2, 100_000])
def test_two_writers_never_mix_snapshots(tmp_path: Path, keep: int) -> None:
    """Racing writers only ever lose with ConcurrentWriterError; every snapshot left verifies."""
    store = tmp_path / "store"
    results = run_writers(store, keep)
    for code, lines in results:
        # 0: every error the writer met was a ConcurrentWriterError (2: torn, 1: other error).
        assert code == 0, lines
        assert lines[-1].startswith("conflicts "), lines
    keydir = store / KEY
    seqs = sorted(int(m.group(1)) for n in keydir.iterdir() if (m := _MANIFEST.match(n.name)))
    checked = [verify_by_hand(keydir, seq) for seq in seqs]
    if keep > 2 * YIELDS:
        # Nothing was pruned: every completed save is one snapshot, every lost race none.
        assert len(seqs) == 2 * YIELDS
        assert {state["tag"] for state, _ in checked} == {"A", "B"}
        # A lost race deletes its own payload: no orphan payload and no temp file is left.
        manifests = {f"{seq:020d}.json" for seq in seqs}
        blobs = {blob for _, blob in checked if blob is not None}
        assert {n.name for n in keydir.iterdir()} == manifests | blobs
    else:
        assert 1 <= len(seqs) <= keep
    conflicts = [int(lines[-1].split()[1]) for _, lines in results]
    print(f"keep={keep}: conflicts {conflicts}, {len(seqs)} snapshots")
