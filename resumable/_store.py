"""Snapshots as commits: sequence numbers, manifests, verification, fallback and retention.

Layout of one task's prefix::

    00000000000000000042.1f0c9a7e3b2d4c5a.blob   payload (absent when it is inlined)
    00000000000000000042.json                    manifest: the commit marker, written last

A snapshot exists once its manifest exists. The payload's name carries a random writer token,
so two writers never overwrite each other's payload; the manifest's name is the bare sequence
number and is created exclusively, so only one writer can commit a given number.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import shutil
import sys
import tarfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import _version
from ._backend import Backend, BlobWriter, Entry, iter_read
from ._codec import Limits, extract_tar, gunzip_members
from ._errors import ConcurrentWriterError, CorruptCheckpointError, SignatureError
from ._progress import Progress, transfer
from ._stream import Chunk, Digest

__all__ = ["FORMAT", "INLINE_MAX", "Kind", "Manifest", "SnapshotStore"]

log = logging.getLogger("resumable")

#: Version of the manifest format this library writes and reads.
FORMAT = 1
#: Payloads up to this size live inside the manifest: one object, one fsync.
INLINE_MAX = 64 * 1024
#: How many fresh listings a load tries when other writers delete what it listed.
_RELIST = 5
#: Saves and loads at least this large log their size and rate.
_LOG_SIZE = 16 << 20

Kind = Literal["bytes", "file", "dir", "state"]
_KINDS = ("bytes", "file", "dir", "state")
_MANIFEST = re.compile(r"^(\d{20})\.json$")
_BLOB = re.compile(r"^(\d{20})\.([0-9a-f]{8,64})\.blob$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MARK = re.compile(r"^(\d{20})\.failed\.[0-9a-f]{16}$")


def manifest_name(seq: int) -> str:
    """The manifest's object name for ``seq``."""
    return f"{seq:020d}.json"


def manifest_seqs(entries: Iterable[Entry]) -> list[int]:
    """Sequence numbers of the committed snapshots among ``entries``, newest first."""
    return sorted(
        (int(m.group(1)) for e in entries if (m := _MANIFEST.match(e.name))), reverse=True
    )


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one snapshot is: the commit record stored as ``<seq>.json``."""

    seq: int
    kind: Kind
    size: int
    sha256: str
    compression: str
    blob: str | None
    inline: bytes | None
    created: float
    attempt: int
    writer: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The manifest document."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "seq": self.seq,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
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
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptCheckpointError(f"manifest is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise CorruptCheckpointError("manifest is not a JSON object")
        version = doc.get("format")
        if not isinstance(version, int):
            raise CorruptCheckpointError("manifest has no format version")
        if version > FORMAT:
            raise CorruptCheckpointError(
                f"manifest format {version} is newer than this library reads ({FORMAT}): "
                "upgrade resumable to load it"
            )
        try:
            inline_text = doc.get("inline")
            inline = None if inline_text is None else base64.b64decode(inline_text, validate=True)
            m = cls(
                seq=doc["seq"],
                kind=doc["kind"],
                size=doc["size"],
                sha256=doc["sha256"],
                compression=doc["compression"],
                blob=doc["blob"],
                inline=inline,
                created=_finite(doc["created"]),
                attempt=int(doc.get("attempt", 0)),
                writer=str(doc.get("writer", "")),
                extra={k: v for k, v in doc.items() if k in ("hmac", "raw_size")},
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise CorruptCheckpointError(f"manifest field missing or malformed ({exc})") from exc
        problem = m._problem(seq)
        if problem:
            raise CorruptCheckpointError(f"manifest {problem}")
        return m

    def _problem(self, seq: int) -> str | None:
        if self.seq != seq or isinstance(self.seq, bool):
            return f"says seq {self.seq!r} but is named {seq}"
        if self.kind not in _KINDS:
            return f"has unknown kind {self.kind!r}"
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            return f"has invalid size {self.size!r}"
        if not isinstance(self.sha256, str) or not _HEX64.match(self.sha256):
            return "has no valid sha256"
        if self.compression not in ("gzip", "none"):
            return f"has unknown compression {self.compression!r}"
        if self.inline is None:
            blob = _BLOB.match(self.blob) if isinstance(self.blob, str) else None
            if blob is None or int(blob.group(1)) != seq:
                return f"points to a payload that is not its own ({self.blob!r})"
        return None


def _missing_as_corrupt(chunks: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Object stores report a payload deleted mid-read on a later ranged read."""
    try:
        yield from chunks
    except FileNotFoundError:
        raise CorruptCheckpointError(f"payload {name} disappeared while it was read") from None


def _finite(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"not a finite time: {value!r}")
    return number


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _rate(size: int, seconds: float) -> str:
    mib = size / 2**20
    return f"{mib:.1f} MiB in {seconds:.2f} s ({mib / max(seconds, 1e-9):.0f} MiB/s)"


@dataclass
class _Load:
    """One pass of a load over one listing."""

    entries: list[Entry]
    refused: list[str] = field(default_factory=list)
    raced: bool = False

    def deleted(self, seq: int) -> None:
        self.refused.append(f"snapshot {seq}: deleted while loading")
        self.raced = True


class SnapshotStore:
    """Commits, restores and prunes the snapshots under one backend root."""

    def __init__(
        self,
        backend: Backend,
        *,
        keep: int,
        signing_key: bytes | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.backend = backend
        self.keep = keep
        self.signing_key = signing_key
        self.progress = progress

    def _signature(self, m: Manifest) -> str:
        assert self.signing_key is not None
        # The payload's digest plus everything that says how to read it: a valid signature
        # cannot be moved to another payload, sequence number or kind.
        fields = [FORMAT, m.seq, m.kind, m.size, m.sha256, m.compression, m.blob or ""]
        message = "\n".join(str(f) for f in fields).encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    def _check_signature(self, m: Manifest) -> None:
        if self.signing_key is None:
            return
        found = m.extra.get("hmac")
        if not isinstance(found, str):
            raise SignatureError(
                "manifest is not signed, but a signing key is set: refusing it (an unsigned "
                "snapshot in a store others can write may run their code when unpickled)"
            )
        if not hmac.compare_digest(found, self._signature(m)):
            raise SignatureError("manifest signature is wrong: another key, or forged")

    # -- writing ------------------------------------------------------------------------

    def commit(
        self,
        kind: Kind,
        chunks: Iterable[Chunk],
        *,
        compression: str = "none",
        attempt: int = 0,
    ) -> Manifest:
        """Store ``chunks`` as a new snapshot, commit it, then apply retention."""
        started = time.perf_counter()
        entries = self.backend.entries()
        seqs = manifest_seqs(entries)
        seq = seqs[0] + 1 if seqs else 0
        writer_token = secrets.token_hex(8)
        blob = f"{seq:020d}.{writer_token}.blob"
        digest = Digest()
        spool: list[Chunk] | None = []
        spooled = 0
        out: BlobWriter | None = None
        callback = transfer(self.progress, f"snapshot {seq}", self.backend.url)
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                digest.update(chunk)
                callback.relative_update(len(chunk))
                if spool is not None and spooled + len(chunk) <= INLINE_MAX:
                    spool.append(chunk)
                    spooled += len(chunk)
                    continue
                if out is None:
                    out = self.backend.writer(blob)
                    for held in spool or ():
                        out.write(held)
                    spool = None
                out.write(chunk)
            sha = digest.hexdigest()
            if out is not None:
                out.commit()
            callback.set_size(digest.size)  # a save knows its size once it is written
            callback.close()
        except BaseException:
            if out is not None:
                out.abort()
            callback.close()
            raise
        manifest = Manifest(
            seq=seq,
            kind=kind,
            size=digest.size,
            sha256=sha,
            compression=compression,
            blob=None if spool is not None else blob,
            inline=b"".join(spool) if spool is not None else None,
            created=time.time(),
            attempt=attempt,
            writer=writer_token,
        )
        if self.signing_key is not None:
            manifest.extra["hmac"] = self._signature(manifest)
        try:
            self.backend.create_exclusive(manifest_name(seq), manifest.to_json())
        except FileExistsError:
            if manifest.blob is not None:
                self.backend.delete(manifest.blob)
            raise ConcurrentWriterError(
                17,
                f"another writer committed snapshot {seq} of {self.backend.url} first; this "
                "snapshot was discarded. Is the same task running twice with the same key?",
            ) from None
        try:
            # Oldest first: a load racing us never falls back past a snapshot we keep.
            self._drop([seq, *seqs][self.keep :][::-1], entries)
        except Exception as exc:  # housekeeping: the next commit retries it
            log.warning("snapshot %d is committed, but retention failed: %r", seq, exc)
        if manifest.size >= _LOG_SIZE:
            log.info(
                "saved snapshot %d to %s: %s",
                seq,
                self.backend.url,
                _rate(manifest.size, time.perf_counter() - started),
            )
        return manifest

    def _drop(self, seqs: list[int], entries: list[Entry]) -> None:
        """Delete snapshots ``seqs`` in that order: each manifest first, then its payload."""
        for old in seqs:
            self.backend.delete(manifest_name(old))
            prefix = f"{old:020d}."
            for e in entries:
                if e.name.startswith(prefix) and (e.name.endswith(".blob") or _MARK.match(e.name)):
                    self.backend.delete(e.name)

    def clear(self) -> None:
        """Delete every snapshot, oldest first, so that an interrupted clear keeps the newest."""
        entries = self.backend.entries()
        seqs = manifest_seqs(entries)
        self._drop(seqs[::-1], entries)
        dropped = {f"{seq:020d}." for seq in seqs}
        for e in entries:  # orphans: payloads and marks of snapshots without a manifest
            if (_BLOB.match(e.name) or _MARK.match(e.name)) and e.name[:21] not in dropped:
                self.backend.delete(e.name)

    # -- poison snapshots ---------------------------------------------------------------

    def mark_failed(self, seq: int) -> None:
        """Record that a task started from snapshot ``seq`` failed before saving a newer one."""
        self.backend.create_exclusive(f"{seq:020d}.failed.{secrets.token_hex(8)}", b"")

    def clear_marks(self) -> None:
        """Forget failure records: the task got past its snapshots."""
        for e in self.backend.entries():
            if _MARK.match(e.name):
                self.backend.delete(e.name)

    # -- reading ------------------------------------------------------------------------

    def manifest(self, seq: int) -> Manifest:
        """The parsed manifest of snapshot ``seq``."""
        return Manifest.from_json(self.backend.read(manifest_name(seq)), seq)

    def _payload(self, m: Manifest) -> Iterator[Chunk]:
        """The payload's bytes, checked against the manifest's size and sha256 on the way."""
        digest = Digest()
        with contextlib.ExitStack() as stack:
            callback = transfer(self.progress, self.backend.url, f"snapshot {m.seq}", m.size)
            stack.enter_context(callback)  # closed when the transfer ends, however it ends
            if m.inline is not None:
                source: Iterable[Chunk] = (m.inline,)
            else:
                assert m.blob is not None
                try:
                    stream = stack.enter_context(self.backend.open_read(m.blob))
                except FileNotFoundError:
                    raise CorruptCheckpointError(f"payload {m.blob} is missing") from None
                source = _missing_as_corrupt(iter_read(stream), m.blob)
            for chunk in source:
                digest.update(chunk)
                callback.relative_update(len(chunk))
                if digest.size > m.size:
                    raise CorruptCheckpointError(
                        f"payload is larger than the {m.size} bytes its manifest records"
                    )
                yield chunk
        if digest.size != m.size:
            raise CorruptCheckpointError(f"payload is truncated: {digest.size} of {m.size} bytes")
        if digest.hexdigest() != m.sha256:
            raise CorruptCheckpointError("payload does not match its sha256")

    def _restore_one(self, m: Manifest, workspace: Path, limits: Limits) -> None:
        payload = self._payload(m)
        with contextlib.closing(payload):  # type: ignore[type-var]
            if m.kind == "dir":
                data = gunzip_members(payload) if m.compression == "gzip" else payload
                try:
                    extract_tar(data, workspace, limits)
                except (tarfile.TarError, zlib.error, EOFError) as exc:
                    raise CorruptCheckpointError(
                        f"payload is not a readable archive ({exc})"
                    ) from exc
            else:
                with (workspace / "payload").open("wb") as f:
                    for chunk in payload:
                        f.write(chunk)

    def _skip(self, seq: int, exc: CorruptCheckpointError) -> str:
        log.warning(
            "skipping snapshot %d of %s: %s; trying the previous one", seq, self.backend.url, exc
        )
        return f"snapshot {seq}: {exc}"

    def restore(
        self,
        workspace: Path,
        limits: Limits,
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> Manifest | None:
        """Restore the newest valid snapshot into ``workspace`` (emptied first).

        Returns its manifest, ``None`` when there is no snapshot, and raises
        ``CorruptCheckpointError`` when snapshots exist but none verifies. ``accept`` sees each
        manifest before anything is written and may refuse it by raising. With
        ``poison_after``, a snapshot from which tasks failed that many times without
        committing a newer one is skipped (see :meth:`mark_failed`).
        """
        started = time.perf_counter()
        # Another writer's retention may delete every snapshot we listed before we read it;
        # newer ones exist then, and a fresh listing finds them.
        for _ in range(_RELIST):
            attempt = _Load(self.backend.entries())
            m = self._restore_listed(attempt, workspace, limits, accept, poison_after)
            if m is not None:
                if m.size >= _LOG_SIZE:
                    log.info(
                        "loaded snapshot %d from %s: %s",
                        m.seq,
                        self.backend.url,
                        _rate(m.size, time.perf_counter() - started),
                    )
                return m
            if not attempt.raced:
                break
        if attempt.refused:
            raise CorruptCheckpointError(
                f"no valid snapshot in {self.backend.url}: "
                + "; ".join(attempt.refused)
                + ". Inspect it with `resumable show`, or delete it with `resumable rm` to "
                "start over."
            )
        return None

    def _restore_listed(
        self,
        attempt: _Load,
        workspace: Path,
        limits: Limits,
        accept: Callable[[Manifest], None] | None,
        poison_after: int | None,
    ) -> Manifest | None:
        """Try the listed snapshots newest first; the first that verifies is restored."""
        marks = Counter(int(k.group(1)) for e in attempt.entries if (k := _MARK.match(e.name)))
        for seq in manifest_seqs(attempt.entries):
            if poison_after is not None and marks[seq] >= poison_after:
                attempt.refused.append(f"snapshot {seq}: poison ({marks[seq]} failures from it)")
                log.warning(
                    "the task failed %d times from snapshot %d of %s before saving a newer one; "
                    "treating it as poison and falling back to the previous snapshot",
                    marks[seq],
                    seq,
                    self.backend.url,
                )
                continue
            try:
                m = self.manifest(seq)
                self._check_signature(m)
            except FileNotFoundError:
                attempt.deleted(seq)
                return None  # pruned by another writer: newer ones exist, list again
            except CorruptCheckpointError as exc:
                attempt.refused.append(self._skip(seq, exc))
                continue
            if accept is not None:
                accept(m)
            _clear(workspace)
            try:
                self._restore_one(m, workspace, limits)
            except CorruptCheckpointError as exc:
                _clear(workspace)
                if not self._exists(manifest_name(seq)):  # pruned while we read its payload
                    attempt.deleted(seq)
                    return None
                attempt.refused.append(self._skip(seq, exc))
                continue
            except BaseException:
                _clear(workspace)
                raise
            return m
        return None

    def _exists(self, name: str) -> bool:
        try:
            self.backend.read(name)
        except FileNotFoundError:
            return False
        return True

    def latest(self) -> int | None:
        """The newest committed sequence number, if any."""
        seqs = manifest_seqs(self.backend.entries())
        return seqs[0] if seqs else None
