"""The manifest's rules, one by one: each test pins a check that a weakened parser would drop.

Written against the mutants ``mutmut`` left alive in ``resumable/_manifest.py``: a bound off by
one, a field check that lets a bad value through, a field left out of a signature, a default
changed, an error that no longer says what is wrong. Signatures are checked against the HMAC
``docs/storage-format.md`` describes, computed here by hand, so a signature that changes is
caught even when signing and checking change together. Pure: bytes in, manifests or errors out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from typing import Any

import pytest

from resumable import CorruptCheckpointError, SignatureError
from resumable._manifest import (
    MANIFEST_MAX,
    Manifest,
    check_signature,
    checkpoint_name,
    mark_signature,
    sign,
)
from resumable._version import VERSION

SEQ = 7
KEY = b"secret"
NAME = "task-7"
BLOB = f"{SEQ:020d}.0123456789abcdef.blob"
DIGEST = "0123456789abcdef" * 4
CREATED = 1_700_000_000.5


def manifest(**changes: Any) -> Manifest:
    """A valid folder snapshot with a payload object and recorded bounds, changed as asked."""
    fields: dict[str, Any] = {
        "seq": SEQ,
        "kind": "dir",
        "size": 1234,
        "digest": DIGEST,
        "compression": "gzip",
        "blob": BLOB,
        "inline": None,
        "created": CREATED,
        "attempt": 2,
        "writer": "0123456789abcdef",
        "extra": {"raw_size": 10240, "members": 3},
    }
    fields.update(changes)
    return Manifest(**fields)


def document(**changes: Any) -> dict[str, Any]:
    """The JSON document of a valid manifest, with the given fields set."""
    doc = dict(json.loads(manifest().to_json()))
    doc.update(changes)
    return doc


def without(*names: str) -> bytes:
    """A valid manifest's document without the named fields."""
    doc = document()
    for name in names:
        del doc[name]
    return json.dumps(doc).encode()


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def mac(array: list[Any]) -> str:
    """HMAC-SHA256 (hex) of a JSON array as docs/storage-format.md says signatures are made."""
    return hmac.new(KEY, json.dumps(array).encode(), hashlib.sha256).hexdigest()


def corrupt(data: bytes) -> str:
    """The message of the CorruptCheckpointError that parsing ``data`` raises."""
    with pytest.raises(CorruptCheckpointError) as info:
        Manifest.from_json(data, SEQ)
    return str(info.value)


# -- checkpoint names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("s3://bucket/store/train-3f2a/", "train-3f2a"),
        ("s3://bucket/store/train-3f2a", "train-3f2a"),
        ("/data/store/runX//", "runX"),
        ("C:\\stores\\task\\", "task"),
        ("task", "task"),
    ],
)
def test_checkpoint_name_is_the_urls_last_segment(url: str, name: str) -> None:
    """A checkpoint's name is its URL's last segment, with trailing (back)slashes ignored."""
    assert checkpoint_name(url) == name


# -- parsing --------------------------------------------------------------------------------


def test_a_manifest_of_exactly_the_cap_parses() -> None:
    """A manifest of MANIFEST_MAX bytes parses; one byte more is corrupt."""
    data = manifest().to_json()
    padded = data + b" " * (MANIFEST_MAX - len(data))
    assert len(padded) == MANIFEST_MAX
    assert Manifest.from_json(padded, SEQ) == manifest()
    message = corrupt(padded + b" ")
    assert f"larger than the {MANIFEST_MAX} bytes" in message


def test_to_json_round_trips_a_signed_folder_manifest() -> None:
    """A signed manifest with bounds parses back to the same record, and its signature checks."""
    m = manifest()
    sign(m, KEY, NAME)
    parsed = Manifest.from_json(m.to_json(), SEQ)
    assert parsed == m
    assert check_signature(parsed, KEY, NAME) == 3


def test_to_json_records_time_and_versions_for_people() -> None:
    """A manifest records its time in ISO 8601 UTC and the library and Python that wrote it."""
    doc = json.loads(manifest().to_json())
    assert doc["created_utc"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(CREATED))
    assert doc["created_utc"] == "2023-11-14T22:13:20Z"
    assert doc["library"] == f"resumable {VERSION}"
    assert doc["python"] == "{}.{}.{}".format(*sys.version_info[:3])


def test_attempt_and_writer_default_for_older_manifests() -> None:
    """A manifest without ``attempt`` or ``writer`` parses as attempt 0 by writer ''."""
    m = Manifest.from_json(without("attempt", "writer"), SEQ)
    assert m.attempt == 0
    assert m.writer == ""


@pytest.mark.parametrize("inline", ["YWJj!", "YW Jj", "YWJj\n", "Y-Jj"])
def test_inline_payload_must_be_strict_base64(inline: str) -> None:
    """An inline payload with any character outside base64 is corrupt, not silently skipped."""
    data = dumps(document(blob=None, inline=inline))
    assert "malformed" in corrupt(data)


def test_inline_payload_decodes() -> None:
    """A valid inline payload parses to its bytes, whatever ``blob`` says."""
    assert Manifest.from_json(dumps(document(blob=None, inline="YWJj")), SEQ).inline == b"abc"


@pytest.mark.parametrize(
    "digest",
    ["", "a" * 63, "a" * 65, "A" * 64, "g" * 64, " " + "a" * 63, list("a" * 64), 12, None],
)
def test_digest_must_be_64_lowercase_hex_digits(digest: Any) -> None:
    """A digest that is not a string of 64 lowercase hex digits is corrupt."""
    corrupt(dumps(document(blake3=digest)))


@pytest.mark.parametrize("field", ["raw_size", "members"])
@pytest.mark.parametrize("value", [-1, 1.5, "3", True, None, [3]])
def test_folder_bounds_must_be_whole_numbers(field: str, value: Any) -> None:
    """A recorded ``raw_size`` or ``members`` that is not a whole number >= 0 is corrupt."""
    assert "not a whole number >= 0" in corrupt(dumps(document(**{field: value})))


@pytest.mark.parametrize("field", ["raw_size", "members"])
def test_a_folder_records_both_bounds_or_neither(field: str) -> None:
    """A ``dir`` manifest with only one of ``raw_size`` and ``members`` is corrupt."""
    assert "records only one of raw_size and members" in corrupt(without(field))
    assert Manifest.from_json(without("raw_size", "members"), SEQ).extra == {}


@pytest.mark.parametrize(
    "blob",
    [
        f"{SEQ + 1:020d}.0123456789abcdef.blob",
        f"{SEQ - 1:020d}.0123456789abcdef.blob",
        f"{SEQ:020d}.json",
        f"{SEQ:020d}.failed.0123456789abcdef",
        f"../{BLOB}",
        None,
    ],
)
def test_payload_must_be_this_snapshots_own_blob(blob: str | None) -> None:
    """A manifest whose payload is not a blob of its own sequence number is corrupt."""
    assert "points to a payload that is not its own" in corrupt(dumps(document(blob=blob)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "manifest is not valid JSON"),
        (b"[]", "manifest is not a JSON object"),
        (without("format"), "manifest has no format version"),
        (
            dumps(document(format=4)),
            "manifest format 4 is newer than this library reads (3): upgrade resumable to load it",
        ),
        (
            dumps(document(sha256=DIGEST)),
            "manifest has no valid digest: it needs exactly one of blake3, sha256",
        ),
        (without("seq"), "manifest field missing or malformed (KeyError('seq'))"),
        (dumps(document(writer=5)), "not text: int"),
        (dumps(document(attempt=-1)), "not a whole number >= 0: -1"),
        (dumps(document(created="nan")), "not a finite time: 'nan'"),
        (dumps(document(seq=8)), "manifest says seq 8 but is named 7"),
        (dumps(document(kind="tar")), "manifest has unknown kind 'tar'"),
        (dumps(document(compression="xz")), "manifest has unknown compression 'xz'"),
        (dumps(document(blake3="x")), "manifest has no valid blake3"),
    ],
)
def test_corrupt_manifest_says_what_is_wrong(data: bytes, message: str) -> None:
    """Each kind of corrupt manifest raises CorruptCheckpointError naming its problem."""
    assert message in corrupt(data)


# -- signatures -----------------------------------------------------------------------------


def v3_array(m: Manifest) -> list[Any]:
    """What signature version 3 covers, as docs/storage-format.md lists it."""
    return [
        "resumable-manifest",
        NAME,
        m.format,
        m.seq,
        m.kind,
        m.size,
        m.algorithm,
        m.digest,
        m.compression,
        m.blob or "",
        m.extra.get("raw_size"),
        m.extra.get("members"),
    ]


@pytest.mark.parametrize(
    "m",
    [
        manifest(),
        manifest(kind="state", compression="none", blob=None, inline=b"abc", extra={}),
        manifest(extra={"raw_size": 0, "members": 0}),
    ],
    ids=["folder", "inline", "empty-folder"],
)
def test_signature_3_is_the_documented_hmac(m: Manifest) -> None:
    """``sign`` puts the documented version 3 HMAC on a manifest, and it checks."""
    sign(m, KEY, NAME)
    assert m.extra["hmac_version"] == 3
    assert m.extra["hmac"] == mac(v3_array(m))
    assert check_signature(m, KEY, NAME) == 3


def test_no_key_no_signature() -> None:
    """Without a key ``sign`` adds nothing and ``check_signature`` checks nothing."""
    m = manifest()
    sign(m, None, NAME)
    assert "hmac" not in m.extra
    assert "hmac_version" not in m.extra
    assert check_signature(m, None, NAME) is None


@pytest.mark.parametrize(
    "change",
    [
        {"format": 1},
        {"seq": SEQ + 1},
        {"kind": "file"},
        {"size": 1235},
        {"algorithm": "sha256"},
        {"digest": "f" + DIGEST[1:]},
        {"compression": "none"},
        {"blob": f"{SEQ:020d}.fedcba9876543210.blob"},
        {"extra": {"raw_size": 10241, "members": 3}},
        {"extra": {"raw_size": 10240, "members": 4}},
        {"extra": {"raw_size": 10240}},
        {"extra": {"members": 3}},
        {"extra": {}},
    ],
    ids=lambda change: ",".join(f"{k}={v}" for k, v in change.items()),
)
def test_signature_3_covers_each_field_that_says_how_to_read(change: dict[str, Any]) -> None:
    """Changing any signed field (bounds included) of a signed manifest breaks its signature."""
    signed = manifest()
    sign(signed, KEY, NAME)
    extra = {**change.get("extra", signed.extra)}
    extra.update(hmac=signed.extra["hmac"], hmac_version=3)
    changed = manifest(**{**change, "extra": extra})
    with pytest.raises(SignatureError, match="signature is wrong"):
        check_signature(changed, KEY, NAME)


def test_signature_is_bound_to_its_checkpoint_and_key() -> None:
    """A signature made for one checkpoint or key is refused for another."""
    m = manifest()
    sign(m, KEY, NAME)
    with pytest.raises(SignatureError, match="signed for another checkpoint than 'task-8'"):
        check_signature(m, KEY, "task-8")
    with pytest.raises(SignatureError, match="signature is wrong"):
        check_signature(m, b"other", NAME)


def format_1(**changes: Any) -> Manifest:
    """A format 1 manifest (sha256 digest) as resumable wrote before blake3."""
    return manifest(format=1, algorithm="sha256", **changes)


def v2_array(m: Manifest, name: str = NAME) -> list[Any]:
    """What signature version 2 covered: version 3's array without the algorithm."""
    fields = [1, m.seq, m.kind, m.size, m.digest, m.compression, m.blob or ""]
    return ["resumable-manifest", name, *fields, m.extra.get("raw_size"), m.extra.get("members")]


def test_signature_2_on_a_format_1_manifest_checks() -> None:
    """A version 2 signature (documented array without the algorithm) checks on format 1."""
    m = format_1()
    m.extra.update(hmac=mac(v2_array(m)), hmac_version=2)
    assert check_signature(m, KEY, NAME) == 2
    m.extra["members"] = 4
    with pytest.raises(SignatureError, match="signature is wrong"):
        check_signature(m, KEY, NAME)


def test_signature_1_on_a_format_1_manifest_checks() -> None:
    """A version 1 signature (fields joined by newlines, no name) checks on format 1."""
    m = format_1(kind="bytes", compression="none", extra={})
    fields = [1, m.seq, m.kind, m.size, m.digest, m.compression, m.blob]
    text = "\n".join(str(f) for f in fields).encode()
    m.extra["hmac"] = hmac.new(KEY, text, hashlib.sha256).hexdigest()
    assert check_signature(m, KEY, NAME) == 1
    assert check_signature(m, KEY, "any other name") == 1


@pytest.mark.parametrize(("format", "algorithm"), [(2, "sha256"), (2, "blake3"), (1, "blake3")])
@pytest.mark.parametrize("version", [1, 2])
def test_old_signatures_vouch_for_format_1_sha256_only(
    format: int, algorithm: str, version: int
) -> None:
    """A version 1 or 2 signature on anything but a format 1 sha256 manifest is refused."""
    m = manifest(format=format, algorithm=algorithm)
    m.extra.update(hmac=mac(v2_array(m)), hmac_version=version)
    with pytest.raises(SignatureError, match=f"cannot sign a format {format} manifest"):
        check_signature(m, KEY, NAME)


@pytest.mark.parametrize("found", [None, "", "a" * 63, "A" * 64, "g" * 64, 12, ["a"] * 64])
def test_a_key_refuses_an_unsigned_manifest(found: Any) -> None:
    """With a key, a manifest without a 64-hex-digit hmac is refused as unsigned."""
    m = manifest()
    if found is not None:
        m.extra["hmac"] = found
    with pytest.raises(SignatureError, match="manifest is not signed, but a signing key is set"):
        check_signature(m, KEY, NAME)


@pytest.mark.parametrize("version", [0, 4, True, "3", 3.5])
def test_unknown_signature_versions_are_refused(version: Any) -> None:
    """A signature version other than 1, 2 or 3 is refused and named."""
    m = manifest()
    sign(m, KEY, NAME)
    m.extra["hmac_version"] = version
    with pytest.raises(SignatureError, match="unknown signature version"):
        check_signature(m, KEY, NAME)


def test_mark_signature_is_the_documented_hmac() -> None:
    """A failure mark's signature is the HMAC of ["resumable-mark", name, mark]; '' keyless."""
    mark = f"{SEQ:020d}.failed.0123456789abcdef"
    assert mark_signature(KEY, NAME, mark) == mac(["resumable-mark", NAME, mark])
    assert mark_signature(None, NAME, mark) == ""


@pytest.mark.parametrize(
    "blob", [[], {}, 5, [1, 2], {"a": 1}, "00000000000000000000.00000000aaaaaaaa.blob"]
)
def test_an_inline_manifests_blob_is_null(blob: Any) -> None:
    """A manifest with an inline payload and a blob other than null (or "") is corrupt."""
    doc = json.loads(_inline_manifest().to_json())
    doc["blob"] = blob
    with pytest.raises(CorruptCheckpointError):
        Manifest.from_json(json.dumps(doc).encode(), 0)


def test_seq_is_a_whole_number() -> None:
    """A manifest whose seq is the float 0.0 is corrupt (like size, it must be an int)."""
    doc = json.loads(_inline_manifest().to_json())
    doc["seq"] = 0.0
    with pytest.raises(CorruptCheckpointError):
        Manifest.from_json(json.dumps(doc).encode(), 0)


def _inline_manifest() -> Manifest:
    return Manifest(
        seq=0,
        kind="bytes",
        size=3,
        digest="a" * 64,
        compression="none",
        blob=None,
        inline=b"abc",
        created=1.0,
        attempt=0,
        writer="ab",
    )
