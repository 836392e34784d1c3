"""Payload digests: blake3 for new snapshots, sha256 stores written before it stay readable.

A manifest names its digest by its field (``"blake3"`` from format 2; format 1 always had
``"sha256"``). Signature version 3 covers the algorithm's name; versions 1 and 2, which
predate it, are accepted only on the sha256 manifests they were made for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resumable import Checkpoint, Storage
from resumable._stream import DIGESTS, Digest

from ..conftest import IO, as_format_1, read_object, store_files, write_object

SECRET = b"digest secret"
BIG = bytes(range(256)) * 1024  # 256 KiB: stored as a payload object, not inline


def _sign_v2(doc: dict[str, object], name: str) -> None:
    """Sign a format 1 manifest as resumable did before signatures named the digest."""
    fields = [1, doc["seq"], doc["kind"], doc["size"], doc["sha256"], doc["compression"]]
    bounds = [doc.get("raw_size"), doc.get("members")]
    message = json.dumps(["resumable-manifest", name, *fields, doc["blob"] or "", *bounds])
    doc["hmac_version"] = 2
    doc["hmac"] = hmac.new(SECRET, message.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("data", [b"inline state", BIG], ids=["inline", "payload"])
def test_format_1_sha256_snapshot_loads(store_url: str, io: IO, data: bytes) -> None:
    """A snapshot written as format 1 with a sha256 loads, and the next save writes blake3."""
    with Checkpoint(store_url) as cp:
        io.save(cp, data)
    as_format_1(store_url, 0)
    with Checkpoint(store_url) as cp:
        root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == data
        io.save(cp, b"next")
    doc = json.loads(read_object(store_url, f"{1:020d}.json"))
    assert doc["format"] == 2
    assert doc["blake3"] == blake3.blake3(b"next").hexdigest()


def test_format_1_folder_snapshot_loads(store_url: str, io: IO, tmp_path: Path) -> None:
    """A folder snapshot written as format 1 restores its files."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha")
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        io.save(cp, src)
    as_format_1(store_url, 0)
    with Checkpoint(store_url, storage=Storage(incremental=False)) as cp:
        root = io.load(cp)
        assert root is not None
        assert (root / "a.txt").read_text() == "alpha"


def test_format_1_payload_damage_is_caught_by_its_sha256(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """An old snapshot is still verified: a flipped byte fails its sha256 and is skipped."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"previous")
        io.save(cp, BIG)
    doc = as_format_1(store_url, 1)
    data = bytearray(read_object(store_url, doc["blob"]))
    data[1000] ^= 1
    write_object(store_url, doc["blob"], bytes(data))
    with Checkpoint(store_url) as cp:
        with caplog.at_level(logging.WARNING, logger="resumable"):
            root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"previous"
    assert "does not match its sha256" in caplog.text


def test_version_2_signature_on_format_1_loads(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """A store signed before digests were named (signature 2, sha256) loads without warning."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, BIG)
    doc = as_format_1(store_url, 0)
    _sign_v2(doc, store_url.rstrip("/").rsplit("/", 1)[-1])
    write_object(store_url, f"{0:020d}.json", json.dumps(doc).encode())
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        with caplog.at_level(logging.WARNING, logger="resumable"):
            root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == BIG
    assert "signature" not in caplog.text


def test_signature_is_bound_to_the_digest_algorithm(
    store_url: str, io: IO, caplog: pytest.LogCaptureFixture
) -> None:
    """Relabelling a signed blake3 manifest as sha256 (same hex) breaks its signature."""
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, b"previous")
        io.save(cp, b"newest")
    name = f"{1:020d}.json"
    doc = json.loads(read_object(store_url, name))
    doc["sha256"] = doc.pop("blake3")
    write_object(store_url, name, json.dumps(doc).encode())
    with Checkpoint(store_url, storage=Storage(signing_key=SECRET)) as cp:
        with caplog.at_level(logging.WARNING, logger="resumable"):
            root = io.load(cp)
        assert root is not None
        assert (root / "payload").read_bytes() == b"previous"
    assert "signature is wrong" in caplog.text


def test_manifest_names_one_digest(store_url: str, io: IO) -> None:
    """A new manifest holds the blake3 field and no sha256 field."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"x")
    (manifest,) = [n for n in store_files(store_url) if n.endswith(".json")]
    doc = json.loads(read_object(store_url, manifest))
    assert doc["blake3"] == blake3.blake3(b"x").hexdigest()
    assert "sha256" not in doc


@given(
    chunks=st.lists(st.binary(max_size=200_000), max_size=6),
    algorithm=st.sampled_from(sorted(DIGESTS)),
)
def test_digest_matches_one_pass_over_any_chunking(chunks: list[bytes], algorithm: str) -> None:
    """A Digest fed chunks (some hashed on a worker) equals one pass over their concatenation."""
    d = Digest(algorithm)
    for chunk in chunks:
        d.update(chunk)
    whole = b"".join(chunks)
    assert d.size == len(whole)
    one_pass = DIGESTS[algorithm]()
    one_pass.update(whole)
    assert d.hexdigest() == one_pass.hexdigest()


def test_signature_version_3_is_what_the_storage_format_page_says(store_url: str, io: IO) -> None:
    """The hmac of a new manifest is HMAC-SHA256 of the JSON array docs/storage-format.md gives."""
    with Checkpoint(store_url, name="task-7", storage=Storage(signing_key=SECRET)) as cp:
        io.save(cp, BIG)
    doc = json.loads(read_object(store_url, f"{0:020d}.json"))
    array = ["resumable-manifest", "task-7", doc["format"], doc["seq"], doc["kind"], doc["size"]]
    array += ["blake3", doc["blake3"], doc["compression"], doc["blob"] or ""]
    array += [doc.get("raw_size"), doc.get("members")]
    expected = hmac.new(SECRET, json.dumps(array).encode(), hashlib.sha256).hexdigest()
    assert doc["hmac_version"] == 3
    assert doc["hmac"] == expected
