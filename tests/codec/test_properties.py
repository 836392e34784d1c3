"""Property tests: any payload and any small folder survive a round trip; manifests too."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import Checkpoint
from resumable._manifest import Manifest

names = st.text(
    alphabet=st.characters(min_codepoint=48, max_codepoint=122, categories=["L", "Nd"]),
    min_size=1,
    max_size=12,
)
trees = st.dictionaries(names, st.binary(max_size=3000), min_size=0, max_size=6)


@given(payload=st.binary(max_size=200_000))
@settings(max_examples=40, deadline=None)
def test_any_bytes_round_trip(payload: bytes) -> None:
    """Any byte string (inline or as a payload object) loads back identical."""
    with Checkpoint(f"memory://prop-{uuid.uuid4().hex}") as cp:
        cp.save_sync(payload)
        assert (cp.load_sync() / "payload").read_bytes() == payload


@given(files=trees, sub=trees)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_folder_round_trip(files: dict[str, bytes], sub: dict[str, bytes]) -> None:
    """Any small folder (with a subfolder) loads back with the same files and bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        (src / "nested").mkdir(parents=True)
        for name, data in files.items():
            (src / f"f-{name}").write_bytes(data)
        for name, data in sub.items():
            (src / "nested" / name).write_bytes(data)
        with Checkpoint(Path(tmp) / "store") as cp:
            cp.save_sync(src)
            root = cp.load_sync()
            assert root is not None
            got = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
            want = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()}
            assert got == want


@given(
    seq=st.integers(min_value=0, max_value=10**19),
    kind=st.sampled_from(["bytes", "file", "dir", "state"]),
    inline=st.one_of(st.none(), st.binary(max_size=100)),
    size=st.integers(min_value=0, max_value=2**50),
    attempt=st.integers(min_value=0, max_value=1000),
)
def test_manifest_json_round_trip(
    seq: int, kind: str, inline: bytes | None, size: int, attempt: int
) -> None:
    """A manifest written to JSON parses back to the same record."""
    m = Manifest(
        seq=seq,
        kind=kind,  # type: ignore[arg-type]
        size=size,
        digest="ab" * 32,
        compression="none",
        blob=None if inline is not None else f"{seq:020d}.0123456789abcdef.blob",
        inline=inline,
        created=1700000000.5,
        attempt=attempt,
        writer="0123456789abcdef",
    )
    assert Manifest.from_json(m.to_json(), seq) == m
