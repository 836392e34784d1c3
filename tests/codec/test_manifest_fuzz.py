"""Any manifest either parses or is a corrupt snapshot: never another exception.

Hypothesis generates arbitrary JSON documents, valid manifests with one field replaced by an
arbitrary JSON value, and arbitrary bytes. Parsing (and, with a signing key, checking the
signature) must succeed or raise ``CorruptCheckpointError``; anything else would crash a load
instead of skipping the snapshot and using the previous one. And a signed manifest with any
field its signature covers changed is corrupt or fails its signature check. ``_manifest`` is
pure: no store, no backend, only bytes in and a manifest or an error out.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from resumable import CorruptCheckpointError, SignatureError
from resumable._manifest import Manifest, check_signature, sign

SEQ = 1
KEY = b"k"
NAME = "task"
FIELDS = [
    "format",
    "seq",
    "kind",
    "size",
    "blake3",
    "sha256",
    "compression",
    "blob",
    "inline",
    "created",
    "attempt",
    "writer",
    "hmac",
    "hmac_version",
    "raw_size",
    "members",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
    | st.sampled_from(["dir", "gzip", "none", "state", "cleared", "0" * 64, "é" * 64]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def valid_doc() -> dict[str, Any]:
    m = Manifest(
        seq=SEQ,
        kind="dir",
        size=3,
        digest="a" * 64,
        compression="gzip",
        blob=None,
        inline=b"abc",
        created=1.0,
        attempt=0,
        writer="ab",
        extra={"raw_size": 1024, "members": 1},
    )
    sign(m, KEY, NAME)
    return dict(json.loads(m.to_json()))


KEYS = [None, KEY]


def check(data: bytes) -> None:
    for key in KEYS:
        try:
            m = Manifest.from_json(data, SEQ)
            check_signature(m, key, NAME)
        except CorruptCheckpointError:
            pass


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_the_valid_document_parses() -> None:
    """The base of the mutations is itself a valid, correctly signed manifest."""
    data = dumps(valid_doc())
    assert check_signature(Manifest.from_json(data, SEQ), KEY, NAME) == 3


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_one_field_replaced(field: str, value: Any) -> None:
    """A valid manifest with one field set to any JSON value parses or is corrupt."""
    check(dumps({**valid_doc(), field: value}))


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(FIELDS))
def test_one_field_missing(field: str) -> None:
    """A valid manifest missing any one field parses or is corrupt."""
    doc = valid_doc()
    doc.pop(field, None)  # "sha256" is not in a new manifest: the same document
    check(dumps(doc))


@settings(max_examples=300, deadline=None)
@given(doc=json_values)
def test_any_json_document(doc: Any) -> None:
    """Any JSON document at all parses or is corrupt."""
    check(dumps(doc))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    """Any bytes at all parse or are corrupt."""
    check(data)


def test_nesting_beyond_the_recursion_limit() -> None:
    """JSON nested deeper than Python's recursion limit is corrupt, not a RecursionError."""
    check(b"[" * 200_000 + b"]" * 200_000)
    check(b'{"format": 1, "seq": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")


#: The fields a version 3 signature covers (the digest under its algorithm's name).
SIGNED = ["format", "seq", "kind", "size", "blake3", "compression", "blob", "raw_size", "members"]

plausible_values = st.one_of(
    json_values,
    st.integers(min_value=0, max_value=2**64),
    st.sampled_from([0, 1, 2, 3, 1024, 1025, True, False, 1.0, 2.0, 3.0]),
    st.sampled_from(["bytes", "file", "dir", "state", "cleared", "gzip", "none", "sha256"]),
    st.text("0123456789abcdef", min_size=64, max_size=64),
    st.builds(
        "{:020d}.{}.blob".format,
        st.integers(0, 3),
        st.text("0123456789abcdef", min_size=8, max_size=64),
    ),
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(field=st.sampled_from(SIGNED), value=plausible_values)
def test_a_signed_field_changed_is_refused(field: str, value: Any) -> None:
    """A signed manifest with any signed field changed is corrupt or fails its signature."""
    doc = valid_doc()
    assume(json.dumps(value) != json.dumps(doc.get(field)))
    # The signature covers ``blob or ""``: beside an inline payload a falsy blob signs as none.
    assume(field != "blob" or bool(value))
    try:
        m = Manifest.from_json(dumps({**doc, field: value}), SEQ)
    except CorruptCheckpointError:
        return
    try:
        check_signature(m, KEY, NAME)
    except SignatureError:
        return
    raise AssertionError(f"{field}={value!r} kept a valid signature")
