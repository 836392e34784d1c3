"""The manifest: one snapshot's commit record, its format, its checks and its signature.

Pure functions and values: nothing here reads or writes storage, so every rule can be tested
(and fuzzed) on bytes alone. :meth:`Manifest.from_json` either returns a manifest whose fields
all make sense or raises ``CorruptCheckpointError`` saying what is wrong; :func:`sign` and
:func:`check_signature` compute and check the HMAC a signing key puts on a manifest for one
checkpoint name, and :func:`mark_signature` the one a failure mark holds.

Example:
    >>> m = Manifest(
    ...     seq=3, kind="bytes", size=0, digest="0" * 64, compression="none", blob=None,
    ...     inline=b"", created=0.0, attempt=0, writer="ab",
    ... )
    >>> sign(m, b"secret", "task")
    >>> check_signature(Manifest.from_json(m.to_json(), 3), b"secret", "task")
    3
    >>> try:
    ...     Manifest.from_json(m.to_json(), 4)
    ... except CorruptCheckpointError as exc:
    ...     print(exc)
    manifest says seq 3 but is named 4

"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _version
from ._errors import CorruptCheckpointError, SignatureError
from ._names import parse
from ._stream import DIGESTS, NEW_DIGEST

__all__ = [
    "FORMAT",
    "MANIFEST_MAX",
    "PIECES_FORMAT",
    "SIGNATURE",
    "WRITTEN_FORMAT",
    "Kind",
    "Manifest",
    "check_signature",
    "checkpoint_name",
    "mark_signature",
    "sign",
]

#: The newest manifest format this library reads; it reads every older one too. 1: the
#: payload's digest is always ``sha256``; 2: it is named by its field (``blake3``); 3: a
#: folder may be stored by content (compression ``pieces``: the payload is its index).
FORMAT = 3
#: The format new snapshots are written in, but for folders by content: a reader of format 2
#: reads them.
WRITTEN_FORMAT = 2
#: The format of folder snapshots by content: older readers refuse them, saying to upgrade.
PIECES_FORMAT = 3
#: Version of the manifest signature this library writes (it reads 1 to 3). 3 names the
#: digest's algorithm; 1 and 2 are accepted on sha256 manifests only, which is all they signed.
SIGNATURE = 3
#: A manifest larger than this is corrupt, and is never read whole. The largest this library
#: writes holds a 64 KiB inlined payload in base64 (87,384 bytes) plus about 1 KB of fields:
#: twelve times that leaves room for fields to come, and a planted 40 GiB file costs nothing.
MANIFEST_MAX = 1 << 20

#: What a snapshot holds: bytes, a file, a folder (``dir``), pickled ``state``, or the record
#: a clear of a signed store leaves (``cleared``).
Kind = Literal["bytes", "file", "dir", "state", "cleared"]
_KINDS = ("bytes", "file", "dir", "state", "cleared")
_HEX64 = frozenset("0123456789abcdef")
#: Manifest fields beyond the core ones that a reader keeps (in ``Manifest.extra``).
_EXTRA = ("hmac", "hmac_version", "raw_size", "members", "added")


def checkpoint_name(url: str) -> str:
    """The name a checkpoint's signatures cover unless it is given one: its URL's last segment.

    It survives moving or copying the store as a whole (another folder, bucket or cloud), and
    differs between the tasks of one store, so one task's signed files do not load in another.

    Example:
        >>> checkpoint_name("s3://bucket/store/train-3f2a/")
        'train-3f2a'

    """
    return url.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one snapshot is: the commit record stored as ``<seq>.json``.

    Returned by :meth:`resumable.Checkpoint.commit` and :meth:`resumable.Checkpoint.restore_into`
    (and shown to their ``accept`` callbacks): the snapshot's sequence number, kind, stored
    size and digest, and when and by which attempt it was written.
    """

    #: The snapshot's sequence number: 0 for the first save, one more for each save after.
    seq: int
    #: What the snapshot holds (see :data:`Kind`).
    kind: Kind
    #: The stored payload's size in bytes.
    size: int
    #: Lowercase hex digest of the payload as stored, by :attr:`algorithm`.
    digest: str
    #: ``"gzip"`` (a folder's archive), ``"pieces"`` (a folder by content) or ``"none"``.
    compression: str
    #: The payload's object name; ``None`` when the payload is inlined.
    blob: str | None
    #: The payload itself when it is small enough to live in the manifest.
    inline: bytes | None
    #: When it was committed, in seconds since the epoch.
    created: float
    #: The attempt of the ``@resumable`` call that saved it (0 for a plain save).
    attempt: int
    #: The writer's random token (also in the payload's name).
    writer: str
    #: Further fields: the signature (``hmac``, ``hmac_version``), a folder's bounds.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The digest's algorithm, the manifest field holding the digest.
    algorithm: str = NEW_DIGEST
    #: The format version the manifest was written in.
    format: int = WRITTEN_FORMAT

    def to_json(self) -> bytes:
        """The manifest document."""
        doc: dict[str, Any] = {
            "format": self.format,
            "seq": self.seq,
            "kind": self.kind,
            "size": self.size,
            self.algorithm: self.digest,
            "compression": self.compression,
            "blob": self.blob,
            "created": self.created,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "attempt": self.attempt,
            "writer": self.writer,
            "library": f"resumable {_version.VERSION}",
            "python": "{}.{}.{}".format(*sys.version_info[:3]),
            **self.extra,
        }
        if self.inline is not None:
            doc["inline"] = base64.b64encode(self.inline).decode("ascii")
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, seq: int) -> Manifest:
        """Parse and check a manifest; ``CorruptCheckpointError`` says what is wrong."""
        if len(data) > MANIFEST_MAX:
            raise too_large()
        doc = _document(data)
        version = _format_of(doc)
        algorithm = _algorithm_of(doc)
        try:
            m = cls(
                seq=doc["seq"],
                kind=doc["kind"],
                size=doc["size"],
                digest=doc[algorithm],
                algorithm=algorithm,
                format=version,
                compression=doc["compression"],
                blob=doc["blob"],
                inline=_inline(doc.get("inline")),
                created=_finite(doc["created"]),
                attempt=_count(doc.get("attempt", 0)),
                writer=_text(doc.get("writer", "")),
                extra={k: v for k, v in doc.items() if k in _EXTRA},
            )
            problem = _problem(m, seq)
        except (TypeError, ValueError, LookupError, ArithmeticError, RecursionError) as exc:
            raise CorruptCheckpointError(
                f"manifest field missing or malformed ({exc!r:.200})"
            ) from exc
        if problem:
            raise CorruptCheckpointError(f"manifest {problem}")
        return m


def too_large() -> CorruptCheckpointError:
    """The error of a manifest over ``MANIFEST_MAX`` bytes (listed or read)."""
    return CorruptCheckpointError(
        f"manifest is larger than the {MANIFEST_MAX} bytes any manifest takes"
    )


def _document(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # also: nested too deep, huge numbers
        raise CorruptCheckpointError(f"manifest is not valid JSON ({exc!r:.200})") from exc
    if not isinstance(doc, dict):
        raise CorruptCheckpointError("manifest is not a JSON object")
    return doc


def _format_of(doc: dict[str, Any]) -> int:
    version = doc.get("format")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptCheckpointError("manifest has no format version")
    if version > FORMAT:
        raise CorruptCheckpointError(
            f"manifest format {version} is newer than this library reads ({FORMAT}): "
            "upgrade resumable to load it"
        )
    return version


def _algorithm_of(doc: dict[str, Any]) -> str:
    algorithms = [name for name in DIGESTS if name in doc]
    if len(algorithms) != 1:
        raise CorruptCheckpointError(
            f"manifest has no valid digest: it needs exactly one of {', '.join(DIGESTS)}"
        )
    return algorithms[0]


def _inline(text: object) -> bytes | None:
    if text is None:
        return None
    return base64.b64decode(text, validate=True)  # type: ignore[arg-type]


# -- the field checks: each returns what is wrong, or None ---------------------------------


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seq_problem(m: Manifest, seq: int) -> str | None:
    if not _whole(m.seq) or m.seq != seq:
        return f"says seq {m.seq!r} but is named {seq}"
    return None


def _kind_problem(m: Manifest, seq: int) -> str | None:
    return None if m.kind in _KINDS else f"has unknown kind {m.kind!r}"


def _size_problem(m: Manifest, seq: int) -> str | None:
    return None if _whole(m.size) else f"has invalid size {m.size!r}"


def _digest_problem(m: Manifest, seq: int) -> str | None:
    if isinstance(m.digest, str) and len(m.digest) == 64 and _HEX64.issuperset(m.digest):
        return None
    return f"has no valid {m.algorithm}"


def _format_problem(m: Manifest, seq: int) -> str | None:
    if m.format < 1:
        return f"has invalid format {m.format}"
    if m.format < 2 and m.algorithm != "sha256":
        return f"is format {m.format}, which predates {m.algorithm}"
    return None


def _compression_problem(m: Manifest, seq: int) -> str | None:
    if m.compression in ("gzip", "none"):
        return None
    if m.compression == "pieces":
        if m.format < PIECES_FORMAT or m.kind != "dir":
            return f"stores a {m.kind} by pieces in format {m.format}"
        if "raw_size" not in m.extra:
            return "stores a folder by pieces without its size and entries"
        return None
    return f"has unknown compression {m.compression!r}"


def _bounds_problem(m: Manifest, seq: int) -> str | None:
    for name in ("raw_size", "members", "added"):
        if name in m.extra:
            _count(m.extra[name])
    if m.kind == "dir" and ("raw_size" in m.extra) != ("members" in m.extra):
        return "records only one of raw_size and members"
    return None


def _blob_problem(m: Manifest, seq: int) -> str | None:
    if m.inline is not None:
        # Writers put null here; "" signs the same (the signature covers ``blob or ""``).
        # Anything else would reach code that takes it for a name (gc's set of names).
        return None if m.blob in (None, "") else f"has an inline payload and a blob {m.blob!r}"
    blob = parse(m.blob) if isinstance(m.blob, str) else None
    if blob is None or blob.kind != "blob" or blob.seq != seq:
        return f"points to a payload that is not its own ({m.blob!r})"
    return None


_CHECKS: tuple[Callable[[Manifest, int], str | None], ...] = (
    _seq_problem,
    _kind_problem,
    _size_problem,
    _digest_problem,
    _format_problem,
    _compression_problem,
    _bounds_problem,
    _blob_problem,
)


def _problem(m: Manifest, seq: int) -> str | None:
    """What is wrong with a parsed manifest named for ``seq``, if anything (the first found)."""
    return next((p for check in _CHECKS if (p := check(m, seq)) is not None), None)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text: {type(value).__name__}")
    return value


def _count(value: object) -> int:
    """A whole number >= 0 from a manifest field."""
    if not _whole(value):
        raise ValueError(f"not a whole number >= 0: {value!r:.40}")
    return value  # type: ignore[return-value]


def _finite(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"not a finite time: {value!r}")
    return number


# -- signatures -----------------------------------------------------------------------------


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _signature(m: Manifest, key: bytes, name: str, version: int = SIGNATURE) -> str:
    # The payload's digest plus everything that says how to read it, from version 2 the
    # checkpoint's name and the archive's recorded bounds, from 3 the digest's algorithm:
    # a valid signature cannot be moved to another payload, sequence number, kind or
    # checkpoint.
    bounds = [m.extra.get("raw_size"), m.extra.get("members")]
    if version >= 3:
        fields = [m.format, m.seq, m.kind, m.size, m.algorithm, m.digest, m.compression]
        doc = ["resumable-manifest", name, *fields, m.blob or "", *bounds]
        return _mac(key, json.dumps(doc).encode())
    # 1 and 2 were written when every manifest was format 1 with a sha256.
    fields = [1, m.seq, m.kind, m.size, m.digest, m.compression, m.blob or ""]
    if version == 1:  # written by resumable 0.x before signatures named the checkpoint
        return _mac(key, "\n".join(str(f) for f in fields).encode())
    return _mac(key, json.dumps(["resumable-manifest", name, *fields, *bounds]).encode())


def sign(m: Manifest, key: bytes | None, name: str) -> None:
    """Add the signature fields for checkpoint ``name`` to a new manifest (none without a key)."""
    if key is not None:
        m.extra["hmac_version"] = SIGNATURE
        m.extra["hmac"] = _signature(m, key, name)


def check_signature(m: Manifest, key: bytes | None, name: str) -> int | None:
    """Refuse (``SignatureError``) a manifest ``key`` did not sign for checkpoint ``name``.

    Returns the signature's version (1 does not name its checkpoint: the caller may warn),
    or None without a key: then there is nothing to check.
    """
    if key is None:
        return None
    found = m.extra.get("hmac")
    if not isinstance(found, str) or len(found) != 64 or not _HEX64.issuperset(found):
        raise SignatureError(
            "manifest is not signed, but a signing key is set: refusing it (an unsigned "
            "snapshot in a store others can write may run their code when unpickled)"
        )
    version = m.extra.get("hmac_version", 1)
    if version not in (1, 2, SIGNATURE) or isinstance(version, bool):
        raise SignatureError(f"manifest has an unknown signature version {version!r:.20}")
    if version < 3 and (m.format != 1 or m.algorithm != "sha256"):
        raise SignatureError(
            f"manifest signature version {version} cannot sign a format {m.format} "
            f"manifest with a {m.algorithm} digest: forged or rewritten"
        )
    if not hmac.compare_digest(found, _signature(m, key, name, version)):
        raise SignatureError(
            "manifest signature is wrong: another key, forged, or signed for another "
            f"checkpoint than {name!r} (copied from another task?)"
        )
    return int(version)


def mark_signature(key: bytes | None, name: str, mark: str) -> str:
    """What failure mark ``mark`` of checkpoint ``name`` holds: its HMAC ("" without a key)."""
    if key is None:
        return ""
    return _mac(key, json.dumps(["resumable-mark", name, mark]).encode())
