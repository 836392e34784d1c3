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
import itertools
import json
import logging
import math
import secrets
import shutil
import sys
import tarfile
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import _version
from ._backend import Backend, BlobWriter, Entry, iter_read
from ._codec import Limits, extract_tar, gunzip_members
from ._errors import ConcurrentWriterError, CorruptCheckpointError, SignatureError
from ._names import blob_name, manifest_name, manifest_seqs, mark_name, parse
from ._progress import Progress, transfer
from ._stream import Chunk, Digest

__all__ = ["FORMAT", "INLINE_MAX", "Kind", "Manifest", "SnapshotStore", "names_of"]

T = TypeVar("T")

log = logging.getLogger("resumable")

#: Version of the manifest format this library writes and reads.
FORMAT = 1
#: Payloads up to this size live inside the manifest: one object, one fsync.
INLINE_MAX = 64 * 1024
#: How many fresh listings a load tries when other writers delete what it listed.
_RELIST = 5
#: Saves and loads at least this large log their size and rate.
_LOG_SIZE = 16 << 20
#: After this process saw a competing writer on a store, its saves there list first (and
#: retention works from that listing) for this many seconds: see ``SnapshotStore.commit``.
_CONTESTED_FOR = 60.0
#: Store URL -> until when (``time.monotonic()``) saves there list first.
_contested: dict[str, float] = {}

Kind = Literal["bytes", "file", "dir", "state"]
_KINDS = ("bytes", "file", "dir", "state")
_HEX64 = frozenset("0123456789abcdef")


def names_of(entries: Iterable[Entry]) -> list[str]:
    """The names of listed objects."""
    return [e.name for e in entries]


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
        problem = _problem(m, seq)
        if problem:
            raise CorruptCheckpointError(f"manifest {problem}")
        return m


def _problem(m: Manifest, seq: int) -> str | None:
    """What is wrong with a parsed manifest named for ``seq``, if anything."""
    if m.seq != seq or isinstance(m.seq, bool):
        return f"says seq {m.seq!r} but is named {seq}"
    if m.kind not in _KINDS:
        return f"has unknown kind {m.kind!r}"
    if not isinstance(m.size, int) or isinstance(m.size, bool) or m.size < 0:
        return f"has invalid size {m.size!r}"
    if not isinstance(m.sha256, str) or len(m.sha256) != 64 or not _HEX64.issuperset(m.sha256):
        return "has no valid sha256"
    if m.compression not in ("gzip", "none"):
        return f"has unknown compression {m.compression!r}"
    if m.inline is None:
        blob = parse(m.blob) if isinstance(m.blob, str) else None
        if blob is None or blob.kind != "blob" or blob.seq != seq:
            return f"points to a payload that is not its own ({m.blob!r})"
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
        # What this writer knows without asking the store: the number to commit next, and
        # the objects of each snapshot it committed or listed, oldest first. ``None``: not
        # known (first save, or after a failure that may or may not have committed), so the
        # next commit lists first.
        self._next: int | None = None
        self._known: OrderedDict[int, list[str]] = OrderedDict()

    def _learn(self, entries: list[Entry]) -> list[int]:
        """Take a listing as the truth; its manifests' sequence numbers, newest first."""
        seqs = manifest_seqs(names_of(entries))
        owned: dict[int, list[str]] = {seq: [manifest_name(seq)] for seq in reversed(seqs)}
        for e in entries:
            name = parse(e.name)
            if name is not None and name.kind != "manifest" and name.seq in owned:
                owned[name.seq].append(e.name)
        self._known = OrderedDict(owned)
        self._next = seqs[0] + 1 if seqs else 0
        return seqs

    def _forget(self) -> None:
        self._next = None
        self._known.clear()

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
        """Store ``chunks`` as a new snapshot, commit it, then apply retention.

        In steady state this is one request (the manifest, payload inlined) plus, when
        retention drops a snapshot, one batched delete: the number to commit is the last
        one committed plus one, with no listing, and the exclusive create of the manifest
        detects a competing writer. Only the first commit of this store lists.

        A refused create means another writer committed that number: the store lists, and
        raises ``ConcurrentWriterError``. A writer that fell more than ``keep`` snapshots
        behind another one can find its next number pruned, and commit below the newest
        (nothing is overwritten; that snapshot is never the newest); it meets the other
        writer's numbers soon after and is refused then. So that what is left stays within
        ``keep``, saves to a store where a competing writer was seen list first for a while.
        """
        started = time.perf_counter()
        if self._next is None or _contested.get(self.backend.url, 0.0) > time.monotonic():
            self._learn(self.backend.entries())
        assert self._next is not None
        seq = self._next
        writer_token = secrets.token_hex(8)
        blob = blob_name(seq, writer_token)
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
            self._forget()  # a failed save lists again: another writer may be why it failed
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
            self._forget()
            _contested[self.backend.url] = time.monotonic() + _CONTESTED_FOR
            if manifest.blob is not None:
                self.backend.delete(manifest.blob)
            with contextlib.suppress(Exception):  # else the next commit lists
                self._learn(self.backend.entries())  # what the other writer committed
            raise ConcurrentWriterError(
                17,
                f"another writer committed snapshot {seq} of {self.backend.url} first; this "
                "snapshot was discarded. Is the same task running twice with the same key?",
            ) from None
        except BaseException:
            self._forget()  # the manifest may or may not exist now: the next commit lists
            raise
        self._known[seq] = [manifest_name(seq), *([manifest.blob] if manifest.blob else [])]
        self._next = seq + 1
        try:
            self._retire()
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

    def _retire(self) -> None:
        """Retention by name: drop the known snapshots beyond the newest ``keep``."""
        excess = len(self._known) - self.keep
        if excess > 0:
            self._drop(list(itertools.islice(self._known, excess)))

    def _drop(self, seqs: list[int]) -> None:
        """Delete known snapshots ``seqs`` in one batch, in that order: each manifest first.

        Oldest first: a load racing us never falls back past a snapshot we keep. The names
        come from what this store committed or listed, not from a new listing. They are
        forgotten only once deleted, so a failed batch is retried by the next commit.
        """
        names = [name for seq in seqs for name in self._known.get(seq, [manifest_name(seq)])]
        self.backend.delete_many(names)
        for seq in seqs:
            self._known.pop(seq, None)

    def clear(self) -> None:
        """Delete every snapshot, oldest first, so that an interrupted clear keeps the newest."""
        self._forget()
        entries = self.backend.entries()
        seqs = self._learn(entries)
        self._drop(seqs[::-1])
        dropped = set(seqs)
        orphans = []  # payloads and marks of snapshots without a manifest
        for e in entries:
            kind = parse(e.name)
            if kind is not None and kind.kind != "manifest" and kind.seq not in dropped:
                orphans.append(e.name)
        self.backend.delete_many(orphans)
        self._forget()  # the next commit starts over at 0, as on an empty store

    # -- poison snapshots ---------------------------------------------------------------

    def mark_failed(self, seq: int) -> None:
        """Record that a task started from snapshot ``seq`` failed before saving a newer one."""
        self.backend.create_exclusive(mark_name(seq), b"")

    def clear_marks(self) -> None:
        """Forget failure records: the task got past its snapshots."""
        for e in self.backend.entries():
            kind = parse(e.name)
            if kind is not None and kind.kind == "mark":
                self.backend.delete(e.name)

    # -- reading ------------------------------------------------------------------------

    def manifest(self, seq: int) -> Manifest:
        """The parsed manifest of snapshot ``seq``."""
        return Manifest.from_json(self.backend.read(manifest_name(seq)), seq)

    def payload(self, m: Manifest) -> Iterator[Chunk]:
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

    def _skip(self, seq: int, exc: CorruptCheckpointError) -> str:
        log.warning(
            "skipping snapshot %d of %s: %s; trying the previous one", seq, self.backend.url, exc
        )
        return f"snapshot {seq}: {exc}"

    def restore_into(
        self,
        folder: Path,
        limits: Limits,
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> Manifest | None:
        """Make ``folder`` hold the newest valid snapshot; its manifest, or None if none.

        A folder snapshot is extracted at ``folder``; bytes and files become
        ``folder/payload``. Whatever ``folder`` held before is removed first.
        """

        def unpack(m: Manifest, chunks: Iterator[Chunk]) -> None:
            _clear(folder)
            try:
                _unpack(m, chunks, folder, limits)
            except BaseException:
                _clear(folder)
                raise

        found = self._load(unpack, accept, poison_after)
        return None if found is None else found[0]

    def read_newest(
        self,
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> tuple[Manifest, bytes] | None:
        """The newest valid snapshot's manifest and payload, verified, in memory."""
        return self._load(lambda _, chunks: b"".join(chunks), accept, poison_after)

    def _load(
        self,
        consume: Callable[[Manifest, Iterator[Chunk]], T],
        accept: Callable[[Manifest], None] | None,
        poison_after: int | None,
    ) -> tuple[Manifest, T] | None:
        """Hand the newest valid snapshot's verified payload to ``consume``.

        Returns the manifest and what ``consume`` made, ``None`` when there is no snapshot,
        and raises ``CorruptCheckpointError`` when snapshots exist but none verifies.
        ``consume`` reads the stream to its end (the digest is checked there) and raises
        ``CorruptCheckpointError`` to refuse a snapshot, undoing what it did. ``accept``
        sees each manifest before ``consume`` does and may refuse it by raising. With
        ``poison_after``, a snapshot from which tasks failed that many times without
        committing a newer one is skipped (see :meth:`mark_failed`).
        """
        started = time.perf_counter()
        # Another writer's retention may delete every snapshot we listed before we read it;
        # newer ones exist then, and a fresh listing finds them.
        for _ in range(_RELIST):
            attempt = _Load(self.backend.entries())
            found = self._load_listed(attempt, consume, accept, poison_after)
            if found is not None:
                m = found[0]
                if m.size >= _LOG_SIZE:
                    log.info(
                        "loaded snapshot %d from %s: %s",
                        m.seq,
                        self.backend.url,
                        _rate(m.size, time.perf_counter() - started),
                    )
                return found
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

    def _load_listed(
        self,
        attempt: _Load,
        consume: Callable[[Manifest, Iterator[Chunk]], T],
        accept: Callable[[Manifest], None] | None,
        poison_after: int | None,
    ) -> tuple[Manifest, T] | None:
        """Try the listed snapshots newest first; the first that verifies is consumed."""
        names = [parse(e.name) for e in attempt.entries]
        marks = Counter(n.seq for n in names if n is not None and n.kind == "mark")
        for seq in manifest_seqs(names_of(attempt.entries)):
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
            payload = self.payload(m)
            try:
                with contextlib.closing(payload):  # type: ignore[type-var]
                    made = consume(m, payload)
            except CorruptCheckpointError as exc:
                if not self._exists(manifest_name(seq)):  # pruned while we read its payload
                    attempt.deleted(seq)
                    return None
                attempt.refused.append(self._skip(seq, exc))
                continue
            return m, made
        return None

    def _exists(self, name: str) -> bool:
        try:
            self.backend.read(name)
        except FileNotFoundError:
            return False
        return True

    def newest_seq(self) -> int | None:
        """The newest committed sequence number, if any (one listing, no manifest read)."""
        seqs = self._learn(self.backend.entries())  # a fresher view for the next commit too
        return seqs[0] if seqs else None


def _unpack(m: Manifest, chunks: Iterator[Chunk], folder: Path, limits: Limits) -> None:
    """Write a verified-as-it-streams payload into ``folder``: a tree, or ``payload``."""
    if m.kind == "dir":
        data = gunzip_members(chunks) if m.compression == "gzip" else chunks
        try:
            extract_tar(data, folder, limits)
        except (tarfile.TarError, zlib.error, EOFError) as exc:
            raise CorruptCheckpointError(f"payload is not a readable archive ({exc})") from exc
    else:
        with (folder / "payload").open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
