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
import contextlib
import contextvars
import hashlib
import hmac
import itertools
import json
import logging
import math
import os
import secrets
import sys
import tarfile
import threading
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

from . import _version
from ._backend import Backend, BlobWriter, Entry, iter_read
from ._codec import Limits, TarFacts, extract_tar, gunzip_members, write_file
from ._errors import ConcurrentWriterError, CorruptCheckpointError, SignatureError
from ._names import blob_name, manifest_name, manifest_seqs, mark_name, parse
from ._progress import Progress, transfer
from ._stream import DIGESTS, NEW_DIGEST, Chunk, Digest, Spool
from ._threads import EXIT_TIMEOUT, close_at_exit, run_on_io
from ._workspace import NEW, destination, discard, recover, stage, swap, sweep_beside

__all__ = [
    "FORMAT",
    "INLINE_MAX",
    "MANIFEST_MAX",
    "SIGNATURE",
    "Kind",
    "Manifest",
    "SnapshotStore",
    "checkpoint_name",
    "names_of",
]

T = TypeVar("T")

log = logging.getLogger("resumable")

#: Version of the manifest format this library writes; it reads this one and every older one.
#: 1: the payload's digest is always ``sha256``; 2: it is named by its field (``blake3``).
FORMAT = 2
#: Version of the manifest signature this library writes (it reads 1 to 3). 3 names the
#: digest's algorithm; 1 and 2 are accepted on sha256 manifests only, which is all they signed.
SIGNATURE = 3
#: Payloads up to this size live inside the manifest: one object, one fsync.
INLINE_MAX = 64 * 1024
#: A manifest larger than this is corrupt, and is never read whole. The largest this library
#: writes holds an INLINE_MAX payload in base64 (87,384 bytes) plus about 1 KB of fields:
#: twelve times that leaves room for fields to come, and a planted 40 GiB file costs nothing.
MANIFEST_MAX = 1 << 20
#: A failure mark holds at most a signature (64 hex digits); a larger one is not ours.
_MARK_MAX = 64
#: How many fresh listings a load tries when other writers delete what it listed.
_RELIST = 5
#: Saves and loads at least this large log their size and rate.
_LOG_SIZE = 16 << 20
#: Retention deletes at most one batch per this many seconds: saves that come faster share a
#: batch (one request), so a store holds at most the snapshots of this long beyond ``keep``.
_RETIRE_EVERY = 0.05
#: After this process saw a competing writer on a store, its saves there list first (and
#: retention works from that listing) for this many seconds: see ``SnapshotStore.commit``.
_CONTESTED_FOR = 60.0
#: Store URL -> until when (``time.monotonic()``) saves there list first.
_contested: dict[str, float] = {}

Kind = Literal["bytes", "file", "dir", "state", "cleared"]
_KINDS = ("bytes", "file", "dir", "state", "cleared")
_HEX64 = frozenset("0123456789abcdef")
#: Manifest fields beyond the core ones that a reader keeps (in ``Manifest.extra``).
_EXTRA = ("hmac", "hmac_version", "raw_size", "members")


def checkpoint_name(url: str) -> str:
    """The name a checkpoint's signatures cover unless it is given one: its URL's last segment.

    It survives moving or copying the store as a whole (another folder, bucket or cloud), and
    differs between the tasks of one store, so one task's signed files do not load in another.

    Example:
        >>> checkpoint_name("s3://bucket/store/train-3f2a/")
        'train-3f2a'

    """
    return url.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def names_of(entries: Iterable[Entry]) -> list[str]:
    """The names of listed objects."""
    return [e.name for e in entries]


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one snapshot is: the commit record stored as ``<seq>.json``."""

    seq: int
    kind: Kind
    size: int
    #: Lowercase hex digest of the payload as stored, by :attr:`algorithm`.
    digest: str
    compression: str
    blob: str | None
    inline: bytes | None
    created: float
    attempt: int
    writer: str
    extra: dict[str, Any] = field(default_factory=dict)
    #: The digest's algorithm, a key of ``DIGESTS`` and the manifest field holding it.
    algorithm: str = NEW_DIGEST
    #: The format version the manifest was written in.
    format: int = FORMAT

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
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # also: nested too deep, huge numbers
            raise CorruptCheckpointError(f"manifest is not valid JSON ({exc!r:.200})") from exc
        if not isinstance(doc, dict):
            raise CorruptCheckpointError("manifest is not a JSON object")
        version = doc.get("format")
        if not isinstance(version, int) or isinstance(version, bool):
            raise CorruptCheckpointError("manifest has no format version")
        if version > FORMAT:
            raise CorruptCheckpointError(
                f"manifest format {version} is newer than this library reads ({FORMAT}): "
                "upgrade resumable to load it"
            )
        algorithms = [name for name in DIGESTS if name in doc]
        if len(algorithms) != 1:
            raise CorruptCheckpointError(
                f"manifest has no valid digest: it needs exactly one of {', '.join(DIGESTS)}"
            )
        try:
            inline_text = doc.get("inline")
            inline = None if inline_text is None else base64.b64decode(inline_text, validate=True)
            m = cls(
                seq=doc["seq"],
                kind=doc["kind"],
                size=doc["size"],
                digest=doc[algorithms[0]],
                algorithm=algorithms[0],
                format=version,
                compression=doc["compression"],
                blob=doc["blob"],
                inline=inline,
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


def _problem(m: Manifest, seq: int) -> str | None:
    """What is wrong with a parsed manifest named for ``seq``, if anything."""
    if m.seq != seq or isinstance(m.seq, bool):
        return f"says seq {m.seq!r} but is named {seq}"
    if m.kind not in _KINDS:
        return f"has unknown kind {m.kind!r}"
    if not isinstance(m.size, int) or isinstance(m.size, bool) or m.size < 0:
        return f"has invalid size {m.size!r}"
    if not isinstance(m.digest, str) or len(m.digest) != 64 or not _HEX64.issuperset(m.digest):
        return f"has no valid {m.algorithm}"
    if m.format < 1:
        return f"has invalid format {m.format}"
    if m.format < 2 and m.algorithm != "sha256":
        return f"is format {m.format}, which predates {m.algorithm}"
    if m.compression not in ("gzip", "none"):
        return f"has unknown compression {m.compression!r}"
    for name in ("raw_size", "members"):
        if name in m.extra:
            _count(m.extra[name])
    if m.kind == "dir" and ("raw_size" in m.extra) != ("members" in m.extra):
        return "records only one of raw_size and members"
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


class _Watched(Iterator[Chunk]):
    """A payload's chunks, remembering the ``CorruptCheckpointError`` they ended with, if any."""

    def __init__(self, chunks: Iterator[Chunk]) -> None:
        self._chunks = chunks
        self.corrupt: CorruptCheckpointError | None = None

    def __next__(self) -> Chunk:
        try:
            return next(self._chunks)
        except CorruptCheckpointError as exc:
            self.corrupt = exc
            raise


def _read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``: fewer only at its end."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text: {type(value).__name__}")
    return value


def _count(value: object) -> int:
    """A whole number >= 0 from a manifest field."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a whole number >= 0: {value!r:.40}")
    return value


def _finite(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"not a finite time: {value!r}")
    return number


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
        name: str | None = None,
    ) -> None:
        self.backend = backend
        self.keep = keep
        self.signing_key = signing_key
        self.progress = progress
        #: The checkpoint's identity that signatures cover (see :func:`checkpoint_name`).
        self.name = checkpoint_name(backend.url) if name is None else name
        # What this writer knows without asking the store: the number to commit next, and
        # the objects of each snapshot it committed or listed, oldest first. ``None``: not
        # known (first save, or after a failure that may or may not have committed), so the
        # next commit lists first.
        self._next: int | None = None
        self._known: OrderedDict[int, list[str]] = OrderedDict()
        # Retention runs behind the caller, on an IO thread, one batch at a time and at most
        # one batch per _RETIRE_EVERY: when saves come faster, the next batch takes every
        # snapshot that fell out of ``keep`` meanwhile, in one request; a request per save
        # would cost as much as the save. The lock guards ``_known`` and ``_retiring``
        # between the caller and that thread; ``settle`` sets ``_hurry`` to skip the pause.
        self._lock = threading.Lock()
        self._retiring: Future[None] | None = None
        self._hurry = threading.Event()
        self._pid = os.getpid()
        # At exit, a store whose Checkpoint is gone still finishes its retention: the thread
        # running it holds the store, so it is alive in the exit hook's weak set meanwhile.
        close_at_exit(self)

    def _fork_check(self) -> None:
        """In a child forked while retention ran, its thread is gone: start afresh."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()  # the parent's may have been held at the fork
            self._retiring = None
            self._hurry = threading.Event()
            self._next = None  # what the parent knew may be stale: the next commit lists
            self._known = OrderedDict()

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the retention that runs behind the last commit, if any; it never raises.

        After ``timeout`` seconds it stops waiting with a warning: the retention goes on
        behind, and the snapshots it has not deleted yet stay until it is done.

        Example:
            >>> from resumable._backend import open_backend
            >>> store = SnapshotStore(open_backend("memory://doc/settle", None), keep=1)
            >>> for step in range(3):
            ...     _ = store.commit("bytes", [b"step %d" % step])
            >>> store.settle()
            >>> sorted(e.name for e in store.backend.entries())
            ['00000000000000000002.json']

        """
        self._fork_check()
        with self._lock:
            pending = self._retiring
        if pending is None:
            return
        self._hurry.set()
        try:
            pending.result(timeout)
        except TimeoutError:
            log.warning(
                "retention of %s still runs after %.0f s; the snapshots it has not deleted "
                "yet stay until it is done",
                self.backend.url,
                timeout,
            )

    def close(self) -> None:
        """Let the retention still running finish (at interpreter exit, at most EXIT_TIMEOUT)."""
        self.settle(EXIT_TIMEOUT)

    def _learn(self, entries: list[Entry]) -> list[int]:
        """Take a listing as the truth; its manifests' sequence numbers, newest first."""
        self.settle()
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
        self.settle()
        self._next = None
        self._known.clear()

    def _mac(self, message: bytes) -> str:
        assert self.signing_key is not None
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    def _signature(self, m: Manifest, version: int = SIGNATURE) -> str:
        # The payload's digest plus everything that says how to read it, from version 2 the
        # checkpoint's name and the archive's recorded bounds, from 3 the digest's algorithm:
        # a valid signature cannot be moved to another payload, sequence number, kind or
        # checkpoint.
        bounds = [m.extra.get("raw_size"), m.extra.get("members")]
        if version >= 3:
            fields = [m.format, m.seq, m.kind, m.size, m.algorithm, m.digest, m.compression]
            return self._mac(
                json.dumps(
                    ["resumable-manifest", self.name, *fields, m.blob or "", *bounds]
                ).encode()
            )
        # 1 and 2 were written when every manifest was format 1 with a sha256.
        fields = [1, m.seq, m.kind, m.size, m.digest, m.compression, m.blob or ""]
        if version == 1:  # written by resumable 0.x before signatures named the checkpoint
            return self._mac("\n".join(str(f) for f in fields).encode())
        return self._mac(json.dumps(["resumable-manifest", self.name, *fields, *bounds]).encode())

    def sign(self, m: Manifest) -> None:
        """Add the signature fields to a new manifest (nothing without a signing key)."""
        if self.signing_key is not None:
            m.extra["hmac_version"] = SIGNATURE
            m.extra["hmac"] = self._signature(m)

    def check_signature(self, m: Manifest) -> None:
        """Refuse (``SignatureError``) a manifest this store's key did not sign for its name.

        Nothing to check without a signing key.
        """
        self._check_signature(m)

    def _check_signature(self, m: Manifest) -> None:
        if self.signing_key is None:
            return
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
        if not hmac.compare_digest(found, self._signature(m, version)):
            raise SignatureError(
                "manifest signature is wrong: another key, forged, or signed for another "
                f"checkpoint than {self.name!r} (copied from another task?)"
            )
        if version == 1:
            log.warning(
                "snapshot %d of %s carries an old signature that does not name its checkpoint: "
                "it is loaded, but a copy of another task's old files would be too; the next "
                "save signs anew",
                m.seq,
                self.backend.url,
            )

    # -- writing ------------------------------------------------------------------------

    def commit(
        self,
        kind: Kind,
        chunks: Iterable[Chunk] | Callable[[Callable[[Chunk], None]], None],
        *,
        compression: str = "none",
        attempt: int = 0,
        facts: Callable[[], dict[str, Any]] | None = None,
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

        ``chunks`` may also be a producer: a callable that is handed a ``write`` function and
        calls it with the payload's chunks in order (a pickler streaming into the payload).
        """
        started = time.perf_counter()
        self._fork_check()
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

        def put(chunk: Chunk) -> None:
            nonlocal spool, spooled, out
            if not chunk:
                return
            digest.update(chunk)
            callback.relative_update(len(chunk))
            if spool is not None and spooled + len(chunk) <= INLINE_MAX:
                spool.append(chunk)
                spooled += len(chunk)
                return
            if out is None:
                out = self.backend.writer(blob)
                for held in spool or ():
                    out.write(held)
                spool = None
            out.write(chunk)

        try:
            if callable(chunks):
                chunks(put)
            else:
                for chunk in chunks:
                    put(chunk)
            hexdigest = digest.hexdigest()
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
            digest=hexdigest,
            compression=compression,
            blob=None if spool is not None else blob,
            inline=b"".join(spool) if spool is not None else None,
            created=time.time(),
            attempt=attempt,
            writer=writer_token,
        )
        if facts is not None:  # what the stream held, known once it is written
            manifest.extra.update(facts())
        self.sign(manifest)
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
        self._next = seq + 1
        with self._lock:
            self._known[seq] = [manifest_name(seq), *([manifest.blob] if manifest.blob else [])]
            if self._retiring is None and len(self._known) > self.keep:
                # A fresh context: retention's storage calls get tries of their own, not
                # what is left of this save's.
                self._hurry.clear()
                self._retiring = run_on_io(lambda: contextvars.Context().run(self._retire_behind))
        if manifest.size >= _LOG_SIZE:
            log.info(
                "saved snapshot %d to %s: %s",
                seq,
                self.backend.url,
                _rate(manifest.size, time.perf_counter() - started),
            )
        return manifest

    def _retire_behind(self) -> None:
        """Retention until nothing is beyond ``keep``, batch after batch; failures are logged."""
        while True:
            with self._lock:
                excess = len(self._known) - self.keep
                if excess <= 0:
                    self._retiring = None
                    self._hurry.clear()
                    return
                seqs = list(itertools.islice(self._known, excess))
            batch_started = time.monotonic()
            try:
                self._drop(seqs)
            except BaseException as exc:  # housekeeping: the next commit tries it again
                log.warning(
                    "retention failed on %s (snapshots %s stay until the next save): %r",
                    self.backend.url,
                    ", ".join(map(str, seqs)),
                    exc,
                )
                with self._lock:
                    self._retiring = None
                    self._hurry.clear()
                return
            self._hurry.wait(batch_started + _RETIRE_EVERY - time.monotonic())

    def _drop(self, seqs: list[int]) -> None:
        """Delete known snapshots ``seqs`` in one batch, in that order: each manifest first.

        Oldest first: a load racing us never falls back past a snapshot we keep. The names
        come from what this store committed or listed, not from a new listing. They are
        forgotten only once deleted, so a failed batch is retried by the next commit.
        """
        try:
            self._delete(seqs)
        except Exception:
            if len(seqs) == 1:
                raise
            # A batch that failed may be mostly gone, and a large one may keep failing on
            # some name: one snapshot at a time instead, so each success is kept.
            for seq in seqs:
                self._delete([seq])

    def _delete(self, seqs: list[int]) -> None:
        with self._lock:
            names = [n for seq in seqs for n in self._known.get(seq, [manifest_name(seq)])]
        self.backend.delete_many(names)
        with self._lock:
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

    def remove_folder_if_empty(self) -> None:
        """Remove the task's folder once nothing of it is left (a tidy store after a clear)."""
        self.backend.remove_root_if_empty()

    # -- poison snapshots ---------------------------------------------------------------

    def mark_failed(self, seq: int) -> None:
        """Record that a task started from snapshot ``seq`` failed before saving a newer one.

        In a signed store the mark holds its signature; unsigned marks are not counted there.
        """
        name = mark_name(seq)
        self.backend.create_exclusive(name, self._mark_signature(name).encode())

    def _mark_signature(self, name: str) -> str:
        if self.signing_key is None:
            return ""
        return self._mac(json.dumps(["resumable-mark", self.name, name]).encode())

    def failures(self, entries: list[Entry]) -> Counter[int]:
        """How many failure marks each snapshot has among ``entries``.

        With a signing key only signed marks count: a mark anyone can plant must not roll a
        signed task back.
        """
        marks: Counter[int] = Counter()
        for e in entries:
            kind = parse(e.name)
            if kind is None or kind.kind != "mark":
                continue
            if self.signing_key is not None:
                if e.size > _MARK_MAX:
                    log.warning("ignoring failure mark %s: larger than any mark", e.name)
                    continue
                try:
                    found = self.backend.read(e.name)
                except FileNotFoundError:
                    continue
                if not hmac.compare_digest(found, self._mark_signature(e.name).encode()):
                    log.warning("ignoring unsigned or forged failure mark %s", e.name)
                    continue
            marks[kind.seq] += 1
        return marks

    def mark_cleared(self, seq: int) -> None:
        """Commit a signed "cleared" record as snapshot ``seq``, above every one cleared.

        A load stops at it, as at an empty store: snapshots at or below it (old files copied
        back after a clear) are never loaded. Newer snapshots supersede it as usual.
        """
        m = Manifest(
            seq=seq,
            kind="cleared",
            size=0,
            digest=Digest().hexdigest(),
            compression="none",
            blob=None,
            inline=b"",
            created=time.time(),
            attempt=0,
            writer=secrets.token_hex(8),
        )
        self.sign(m)
        with contextlib.suppress(FileExistsError):  # a newer snapshot took the number: fine
            self.backend.create_exclusive(manifest_name(seq), m.to_json())

    def clear_marks(self) -> None:
        """Forget failure records: the task got past its snapshots."""
        for e in self.backend.entries():
            kind = parse(e.name)
            if kind is not None and kind.kind == "mark":
                self.backend.delete(e.name)

    # -- reading ------------------------------------------------------------------------

    def manifest(self, seq: int, size: int | None = None) -> Manifest:
        """The parsed manifest of snapshot ``seq``; ``size``: its size, if a listing told.

        A manifest larger than ``MANIFEST_MAX`` is corrupt. With the listed size that costs
        no read; without, at most ``MANIFEST_MAX + 1`` bytes are read.
        """
        name = manifest_name(seq)
        too_large = CorruptCheckpointError(
            f"manifest is larger than the {MANIFEST_MAX} bytes any manifest takes"
        )
        if size is not None and size > MANIFEST_MAX:
            raise too_large
        if size is None:
            with self.backend.open_read(name) as stream:
                data = _read_at_most(stream, MANIFEST_MAX + 1)
        else:
            data = self.backend.read(name)  # one request (it may have grown since listed)
        if len(data) > MANIFEST_MAX:
            raise too_large
        return Manifest.from_json(data, seq)

    def payload(self, m: Manifest) -> Iterator[Chunk]:
        """The payload's bytes, checked against the manifest's size and digest on the way."""
        digest = Digest(m.algorithm)
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
        if digest.hexdigest() != m.digest:
            raise CorruptCheckpointError(f"payload does not match its {m.algorithm}")

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
        ``folder/payload``. The snapshot is unpacked into a staging folder beside ``folder``
        and verified there; only then does it replace ``folder`` (whatever that held is
        removed). A snapshot that fails leaves ``folder`` as it was. In a signed store the
        payload is verified (digest, hence signature) before a single byte is unpacked;
        elsewhere the unpacking stops as soon as the archive exceeds what its manifest records.

        A ``folder`` that is a symbolic link stays one: the folder it points to is restored.
        A link to nothing or to a non-folder raises ``ConfigurationError`` before anything
        is read. A swap that a killed process left halfway is put back first (see
        ``_workspace``), and the stagings of gone processes beside the folder are removed
        only once this restore has succeeded.
        """
        target = destination(folder)
        recover(target)

        def unpack(m: Manifest, chunks: Iterator[Chunk]) -> None:
            staging = stage(target)
            try:
                if self.signing_key is None:
                    _unpack(m, chunks, staging / NEW, limits)
                else:
                    spool = Spool(chunks)  # read to its end: the digest is checked there
                    try:
                        _unpack(m, iter(spool()), staging / NEW, limits)
                    finally:
                        spool.close()
                swap(staging, target)
            finally:
                discard(staging, target)  # the failed or the replaced tree

        found = self._load(unpack, accept, poison_after)
        if found is None:
            return None
        sweep_beside(target)
        return found[0]

    def read_newest(
        self,
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> tuple[Manifest, bytes] | None:
        """The newest valid snapshot's manifest and payload, verified, in memory."""
        return self._load(lambda _, chunks: b"".join(chunks), accept, poison_after)

    def read_newest_with(
        self,
        decode: Callable[[Iterator[Chunk]], T],
        accept: Callable[[Manifest], None] | None = None,
        poison_after: int | None = None,
    ) -> tuple[Manifest, T] | None:
        """The newest valid snapshot's manifest and ``decode(payload chunks)``, streamed.

        Unsigned stores: ``decode`` reads the payload as it arrives, verified as it reads;
        the digest is checked at its end, and a mismatch (or a failure of ``decode`` on a
        payload that turns out corrupt) falls back to the previous snapshot like any corrupt
        one. Signed stores verify the whole payload (held in memory or a temp file) before
        ``decode`` sees a byte of it.
        """

        def consume(m: Manifest, chunks: Iterator[Chunk]) -> T:
            if self.signing_key is not None:
                if m.size <= _LOG_SIZE:
                    return decode(iter((b"".join(chunks),)))  # verified: read to its end
                spool = Spool(chunks)
                try:
                    return decode(iter(spool()))
                finally:
                    spool.close()
            watched = _Watched(chunks)
            try:
                made = decode(watched)
            except CorruptCheckpointError:
                raise
            except Exception:
                # A corrupt payload may be why it failed, however decode reported it: the
                # payload's own verdict, met inside decode or at the end, wins.
                if watched.corrupt is not None:
                    raise watched.corrupt from None
                for _ in chunks:
                    pass
                raise
            for _ in chunks:  # the digest is checked at the end
                pass
            return made

        return self._load(consume, accept, poison_after)

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
        marks = self.failures(attempt.entries) if poison_after is not None else Counter[int]()
        sizes = {e.name: e.size for e in attempt.entries}
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
                m = self.manifest(seq, sizes.get(manifest_name(seq)))
                self._check_signature(m)
            except FileNotFoundError:
                attempt.deleted(seq)
                return None  # pruned by another writer: newer ones exist, list again
            except CorruptCheckpointError as exc:
                attempt.refused.append(self._skip(seq, exc))
                continue
            if m.kind == "cleared":
                return None  # the task was cleared: nothing older counts
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
        self.settle()  # a listing taken while our own retention deletes would be stale
        seqs = self._learn(self.backend.entries())  # a fresher view for the next commit too
        return seqs[0] if seqs else None


def _unpack(m: Manifest, chunks: Iterator[Chunk], folder: Path, limits: Limits) -> None:
    """Write a verified-as-it-streams payload into ``folder``: a tree, or ``payload``."""
    if m.kind == "dir":
        data = gunzip_members(chunks) if m.compression == "gzip" else chunks
        expected = None
        if "raw_size" in m.extra:  # recorded since 0.x; older manifests are bounded by Limits
            expected = TarFacts(m.extra["raw_size"], m.extra["members"])
        try:
            extract_tar(data, folder, limits, expected)
        except (tarfile.TarError, zlib.error, EOFError) as exc:
            raise CorruptCheckpointError(f"payload is not a readable archive ({exc})") from exc
    else:
        write_file(folder / "payload", chunks)
