"""A corrupt newest snapshot falls back: oversized manifests, undecodable corrupt payloads.

A manifest larger than any this library writes is corrupt, and is never read into memory
whole (a planted 40 GiB sparse file must not make every load raise ``MemoryError``). A
payload that ``decode`` fails on and whose digest turns out wrong is corrupt too, however
``decode`` reports it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable import Checkpoint, Storage
from resumable._manifest import MANIFEST_MAX
from resumable._store import INLINE_MAX

NEWEST = "00000000000000000001.json"
HUGE = 40 << 30  # 40 GiB, sparse: no disk space, but read whole it would not fit in memory


def _two_snapshots(store: Path) -> None:
    with Checkpoint(store) as cp:
        cp.save_sync(b"older")
        cp.save_sync(b"newest")


def test_cap_is_far_above_the_largest_manifest_written(tmp_path: Path) -> None:
    """The largest manifest the library writes (a signed, inlined payload) is far below the cap."""
    with Checkpoint(tmp_path, storage=Storage(signing_key=b"k")) as cp:
        cp.save_sync(os.urandom(INLINE_MAX))
    (manifest,) = tmp_path.glob("*.json")
    size = manifest.stat().st_size
    assert "inline" in json.loads(manifest.read_bytes())
    assert size * 8 < MANIFEST_MAX


def test_oversized_manifest_is_corrupt_and_falls_back(tmp_path: Path) -> None:
    """A manifest over the cap (valid JSON, padded) is refused; the previous snapshot loads."""
    _two_snapshots(tmp_path)
    doc = (tmp_path / NEWEST).read_bytes()
    (tmp_path / NEWEST).write_bytes(doc + b" " * MANIFEST_MAX)
    with Checkpoint(tmp_path) as cp:
        found = cp.read_newest_with(b"".join)
        assert found is not None
        assert found[1] == b"older"
        info = cp.info_sync()
        assert info is not None
        assert info.seq == 0


LOAD = """
import sys
from resumable import Checkpoint
with Checkpoint(sys.argv[1]) as cp:
    print(cp.read_newest_with(b"".join)[1].decode())
"""


def _limited() -> None:
    """In the child: a 40 GiB read fails at once instead of filling the machine's memory."""
    limit = 3 << 30  # address space
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_sparse_40_gib_manifest_falls_back(tmp_path: Path) -> None:
    """A planted 40 GiB sparse newest manifest: load falls back, verify and show call it bad."""
    store = tmp_path / "store"
    _two_snapshots(store)
    os.truncate(store / NEWEST, HUGE)
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(LOAD))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            preexec_fn=_limited,
        )

    loaded = run(str(script), str(store))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "older"
    for command in (["verify", str(store), "."], ["show", str(store), "."]):
        done = run("-m", "resumable", *command, "--json")
        assert done.returncode == 1, done.stderr
        doc = json.loads(done.stdout)
        text = json.dumps(doc)
        assert "MemoryError" not in text
        assert "larger than" in text


# -- a decode failure on a corrupt payload --------------------------------------------------


def _decode_wrapping(chunks: Iterator[bytes]) -> bytes:
    """A decoder that reports any failure, the payload's own included, as a ValueError."""
    try:
        data = b"".join(chunks)
    except Exception as exc:
        raise ValueError(f"cannot decode: {exc}") from exc
    if not data.startswith(b"OK"):
        raise ValueError("not a payload of mine")
    return data


def _decode_early(chunks: Iterator[bytes]) -> bytes:
    """A decoder that checks the first chunk and gives up there, reading no further."""
    first = next(chunks)
    if first[:2] != b"OK":
        raise ValueError("corrupted header")
    return first + b"".join(chunks)


@pytest.mark.parametrize("decode", [_decode_wrapping, _decode_early])
def test_decode_failure_on_a_corrupt_payload_falls_back(tmp_path: Path, decode: object) -> None:
    """Unsigned store: a ValueError from decode on a payload whose digest is wrong falls back."""
    with Checkpoint(tmp_path) as cp:
        cp.save_sync(b"OK older" + os.urandom(200_000))
        cp.save_sync(b"OK newest" + os.urandom(200_000))
    (blob,) = tmp_path.glob("00000000000000000001.*.blob")
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF  # the decoder fails on it; the digest (not fixed) no longer matches
    blob.write_bytes(bytes(data))
    with Checkpoint(tmp_path) as cp:
        found = cp.read_newest_with(decode)  # type: ignore[arg-type]
    assert found is not None
    assert found[0].seq == 0
    assert found[1].startswith(b"OK older")


def test_decode_failure_on_a_sound_payload_is_raised(tmp_path: Path) -> None:
    """A decode failure on a payload whose digest matches is the decoder's error, not corruption."""
    with Checkpoint(tmp_path) as cp:
        cp.save_sync(b"OK older" + os.urandom(200_000))
        cp.save_sync(b"not mine" + os.urandom(200_000))
        with pytest.raises(ValueError, match="not a payload of mine") as raised:
            cp.read_newest_with(_decode_wrapping)
    assert type(raised.value) is ValueError
