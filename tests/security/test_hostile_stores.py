"""A corpus of broken and hostile stores, each with its documented outcome.

Every case damages the newest of two snapshots (or plants a hostile newest one). The
documented outcome for all of them is the same: the damaged snapshot is skipped with a
warning naming it, the previous valid snapshot is loaded, and nothing is written outside the
workspace. ``test_alone_raises`` pins the other half: with no valid snapshot to fall back to,
``load`` raises ``CorruptCheckpointError`` (or its subclasses) and the workspace stays empty.
The table is listed in docs/guarantees.md.
"""

from __future__ import annotations

import gzip
import io as stdio
import json
import logging
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resumable import Captured, Checkpoint, CorruptCheckpointError, Limits, Storage, testing

from ..conftest import IO, delete_object, read_object, store_files, write_object

SECRET = b"signing secret"


NEWEST = "00000000000000000001"


OLD = b"previous valid snapshot"


class Store:
    """A store with a valid snapshot 0 and tools to plant a damaged snapshot 1."""

    def __init__(self, url: str, signed: bool) -> None:
        self.url = url
        self.key = SECRET if signed else None
        self.cp = Checkpoint(
            url, storage=Storage(keep=5, signing_key=self.key, limits=Limits(max_entries=100))
        )
        self.cp.save_sync(OLD)

    def blob(self) -> str:
        return next(n for n in store_files(self.url) if n.startswith(NEWEST) and ".blob" in n)

    def doc(self) -> dict[str, Any]:
        return dict(json.loads(read_object(self.url, f"{NEWEST}.json")))

    def put_doc(self, doc: Any) -> None:
        write_object(self.url, f"{NEWEST}.json", json.dumps(doc).encode())

    def edit(self, **fields: Any) -> None:
        self.put_doc({**self.doc(), **fields})

    def file_snapshot(self) -> None:
        self.cp.save_sync(os.urandom(200_000))

    def dir_snapshot(self, data: bytes, compression: str = "none") -> None:
        testing.store(self.cp).commit("dir", [data], compression=compression)


def tar_of(*members: tuple[str, bytes, str]) -> bytes:
    """A tar holding (name, type, link) members; regular files get a byte of data."""
    buf = stdio.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, stdio.BytesIO(data) if data else None)
    return buf.getvalue()


def _flip(s: Store) -> None:
    s.file_snapshot()
    data = bytearray(read_object(s.url, s.blob()))
    data[1000] ^= 1
    write_object(s.url, s.blob(), bytes(data))


def _payload_edit(fn: Callable[[bytes], bytes]) -> Callable[[Store], None]:
    def case(s: Store) -> None:
        s.file_snapshot()
        write_object(s.url, s.blob(), fn(read_object(s.url, s.blob())))

    return case


def _missing(s: Store) -> None:
    s.file_snapshot()
    delete_object(s.url, s.blob())


def _manifest_bytes(data: bytes) -> Callable[[Store], None]:
    def case(s: Store) -> None:
        s.file_snapshot()
        write_object(s.url, f"{NEWEST}.json", data)

    return case


def _field(**fields: Any) -> Callable[[Store], None]:
    def case(s: Store) -> None:
        s.file_snapshot()
        s.edit(**fields)

    return case


def _raw_field(name: str, raw: str) -> Callable[[Store], None]:
    """Set a field to a JSON text that Python's json reads but no manifest holds."""

    def case(s: Store) -> None:
        s.file_snapshot()
        text = json.dumps({**s.doc(), name: "@RAW@"}).replace('"@RAW@"', raw)
        write_object(s.url, f"{NEWEST}.json", text.encode())

    return case


def _drop_field(name: str) -> Callable[[Store], None]:
    def case(s: Store) -> None:
        s.file_snapshot()
        doc = s.doc()
        del doc[name]
        s.put_doc(doc)

    return case


def _other_blob(s: Store) -> None:
    s.cp.save_sync(os.urandom(200_000))
    s.file_snapshot()  # snapshot 2 is valid; make snapshot 2 the newest damaged one below
    second = "00000000000000000002"
    doc = json.loads(read_object(s.url, f"{second}.json"))
    doc["blob"] = s.blob()  # the payload of snapshot 1
    write_object(s.url, f"{second}.json", json.dumps(doc).encode())
    delete_object(s.url, f"{NEWEST}.json")  # so that the fallback is snapshot 0


def _inline(value: Any) -> Callable[[Store], None]:
    def case(s: Store) -> None:
        s.cp.save_sync(b"small")
        s.edit(inline=value)

    return case


def _dir(*members: tuple[str, bytes, str]) -> Callable[[Store], None]:
    return lambda s: s.dir_snapshot(tar_of(*members))


def _entries_bomb(s: Store) -> None:
    s.dir_snapshot(tar_of(*[(f"f{i}", tarfile.REGTYPE, "") for i in range(150)]))


def _size_bomb(s: Store) -> None:
    info = tarfile.TarInfo("huge")
    info.size = 1 << 45
    s.dir_snapshot(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + bytes(1024))


def _gzip_garbage(s: Store) -> None:
    s.dir_snapshot(os.urandom(5000), compression="gzip")


def _gzip_truncated(s: Store) -> None:
    s.dir_snapshot(gzip.compress(tar_of(("a", tarfile.REGTYPE, "")) * 50)[:-40], "gzip")


def _tar_garbage(s: Store) -> None:
    s.dir_snapshot(os.urandom(5000))


def _deflate_not_gzip(s: Store) -> None:
    s.dir_snapshot(zlib.compress(tar_of(("a", tarfile.REGTYPE, ""))), "gzip")


def _unsigned(s: Store) -> None:
    with Checkpoint(s.url) as plain:
        plain.save_sync(b"planted")


def _wrong_key(s: Store) -> None:
    with Checkpoint(s.url, storage=Storage(signing_key=b"another key")) as other:
        other.save_sync(b"planted")


def _moved_signature(s: Store) -> None:
    s.cp.save_sync(b"newer")
    first = json.loads(read_object(s.url, "00000000000000000000.json"))
    s.edit(hmac=first["hmac"], inline="cGxhbnRlZA==")


def _other_checkpoint(s: Store) -> None:
    with Checkpoint(s.url, name="another-task", storage=Storage(signing_key=SECRET)) as other:
        other.save_sync(b"planted")


class Exploit:
    """Unpickling this would create a file: the attack signing defends against."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path("pwned").touch, ())


def _pickle_exploit(s: Store) -> None:
    with Checkpoint(s.url) as plain:
        plain.commit(Captured("state", lambda: [pickle.dumps(Exploit())]))


# name -> (damage, needs a signing key)
CORPUS: dict[str, tuple[Callable[[Store], None], bool]] = {
    "payload: flipped byte": (_flip, False),
    "payload: truncated": (_payload_edit(lambda b: b[:100]), False),
    "payload: longer than recorded": (_payload_edit(lambda b: b + b"x"), False),
    "payload: zero bytes": (_payload_edit(lambda b: b""), False),
    "payload: missing": (_missing, False),
    "payload: another snapshot's": (_other_blob, False),
    "manifest: garbage JSON": (_manifest_bytes(b"{nope"), False),
    "manifest: zero bytes": (_manifest_bytes(b""), False),
    "manifest: not UTF-8": (_manifest_bytes(b"\xff\xfe\x00garbage"), False),
    "manifest: a JSON array": (_manifest_bytes(b"[1, 2]"), False),
    "manifest: future format": (_field(format=4), False),
    "manifest: format 1 with a blake3": (_field(format=1), False),
    "manifest: format 0": (_field(format=0), False),
    "manifest: negative format": (_field(format=-3), False),
    "manifest: no format": (_drop_field("format"), False),
    "manifest: no digest": (_drop_field("blake3"), False),
    "manifest: two digests": (_field(sha256="a" * 64), False),
    "manifest: seq mismatch": (_field(seq=7), False),
    "manifest: seq is a boolean": (_field(seq=True), False),
    "manifest: unknown kind": (_field(kind="exe"), False),
    "manifest: negative size": (_field(size=-1), False),
    "manifest: size as text": (_field(size="200000"), False),
    "manifest: digest not hex": (_field(blake3="z" * 64), False),
    "manifest: unknown compression": (_field(compression="zstd"), False),
    "manifest: payload outside": (_field(blob="../../etc/passwd"), False),
    "manifest: created is NaN": (_manifest_bytes(b'{"format": 1, "created": NaN}'), False),
    "manifest: attempt is 1e999": (_raw_field("attempt", "1e999"), False),
    "manifest: created is 10**400": (_raw_field("created", "1" + "0" * 400), False),
    "manifest: size is 10**400": (_raw_field("size", "1" + "0" * 400), False),
    "manifest: a 5000-digit number": (_raw_field("attempt", "7" * 5000), False),
    "manifest: deeply nested JSON": (_raw_field("writer", "[" * 100_000 + "]" * 100_000), False),
    "manifest: nested JSON, not too deep to parse": (
        _raw_field("kind", "[" * 900 + "]" * 900),
        False,
    ),
    "manifest: attempt is negative": (_field(attempt=-1), False),
    "manifest: writer is not text": (_field(writer={"a": 1}), False),
    "manifest: raw_size is 1e999": (_raw_field("raw_size", "1e999"), False),
    "inline: invalid base64": (_inline("!!!not base64"), False),
    "inline: altered bytes": (_inline("YWx0ZXJlZA=="), False),
    "archive: absolute path": (_dir(("/tmp/resumable-evil", tarfile.REGTYPE, "")), False),
    "archive: dot-dot": (_dir(("../resumable-evil", tarfile.REGTYPE, "")), False),
    "archive: symlink out": (_dir(("out", tarfile.SYMTYPE, "../../..")), False),
    "archive: absolute symlink": (_dir(("abs", tarfile.SYMTYPE, "/etc")), False),
    "archive: write through symlink": (
        _dir(("hop", tarfile.SYMTYPE, ".."), ("hop/resumable-evil", tarfile.REGTYPE, "")),
        False,
    ),
    "archive: hard link out": (_dir(("h", tarfile.LNKTYPE, "../../etc/passwd")), False),
    "archive: character device": (_dir(("dev", tarfile.CHRTYPE, "")), False),
    "archive: block device": (_dir(("blk", tarfile.BLKTYPE, "")), False),
    "archive: fifo": (_dir(("fifo", tarfile.FIFOTYPE, "")), False),
    "archive: too many entries": (_entries_bomb, False),
    "archive: huge declared size": (_size_bomb, False),
    "archive: not gzip": (_gzip_garbage, False),
    "archive: truncated gzip": (_gzip_truncated, False),
    "archive: zlib, not gzip": (_deflate_not_gzip, False),
    "archive: not a tar": (_tar_garbage, False),
    "signed store: unsigned snapshot": (_unsigned, True),
    "signed store: another key": (_wrong_key, True),
    "signed store: moved signature": (_moved_signature, True),
    "signed store: pickle that runs code": (_pickle_exploit, True),
    "signed store: non-ASCII hmac": (_field(hmac="é" * 64), True),
    "signed store: hmac is a number": (_field(hmac=10**30), True),
    "signed store: unknown signature version": (_field(hmac_version=99), True),
    "signed store: signature version before digests were named": (_field(hmac_version=2), True),
    "signed store: another checkpoint's snapshot": (_other_checkpoint, True),
}


def escaped(tmp_path: Path) -> list[Path]:
    """Files a hostile archive may have written outside the workspace."""
    return [
        *tmp_path.parent.rglob("resumable-evil*"),
        *Path("/tmp").glob("resumable-evil*"),
        *tmp_path.rglob("pwned"),
    ]


def test_corpus_is_large_enough() -> None:
    """The corpus holds at least 30 distinct bad stores."""
    assert len(CORPUS) >= 30


@pytest.mark.parametrize(("damage", "signed"), CORPUS.values(), ids=CORPUS.keys())
def test_damaged_newest_falls_back(
    store_url: str,
    io: IO,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Store], None],
    signed: bool,
) -> None:
    """The damaged snapshot is skipped with a warning; the previous valid one loads."""
    monkeypatch.chdir(tmp_path)
    store = Store(store_url, signed)
    damage(store)
    with caplog.at_level(logging.WARNING, logger="resumable"):
        root = io.load(store.cp)
    assert root is not None
    assert sorted(p.name for p in root.iterdir()) == ["payload"]
    assert (root / "payload").read_bytes() == OLD
    assert any("skipping snapshot" in r.getMessage() for r in caplog.records)
    assert escaped(tmp_path) == []
    store.cp.close()


@pytest.mark.parametrize(("damage", "signed"), CORPUS.values(), ids=CORPUS.keys())
def test_alone_raises(
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Store], None],
    signed: bool,
) -> None:
    """With nothing valid to fall back to, load raises CorruptCheckpointError; nothing leaks."""
    monkeypatch.chdir(tmp_path)
    store = Store(store_url, signed)
    damage(store)
    testing.backend(store.cp).delete("00000000000000000000.json")
    with pytest.raises(CorruptCheckpointError, match="no valid snapshot"):
        store.cp.load_sync()
    assert list(store.cp.path.iterdir()) == []
    assert escaped(tmp_path) == []
    store.cp.close()


# -- hand-made archives, each refused with nothing written outside --------------------------------


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """An uncompressed tar archive holding exactly ``members``."""
    buf = stdio.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, stdio.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def cve_2025_4517(depth: int = 16) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The archive of CVE-2025-4517: a chain of links whose resolved path passes PATH_MAX.

    Each step is a folder with a 247-character name and a one-letter link to it; a link at
    the end of the chain of letters climbs back up, so that ``escape`` resolves outside the
    root while CPython's ``data`` filter (unfixed releases) finds it inside.
    """
    comp = "d" * 247
    steps = "abcdefghijklmnop"[:depth]
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = ""
    for step in steps:
        out.append(member(f"{path}{comp}", tarfile.DIRTYPE))
        out.append(member(f"{path}{step}", tarfile.SYMTYPE, link=comp))
        path = f"{path}{comp}/"
    long_link = "/".join(steps) + "/" + "l" * 254
    out.append(member(long_link, tarfile.SYMTYPE, link="../" * depth))
    out.append(member("escape", tarfile.SYMTYPE, link=long_link + "/.."))
    out.append(member("escape/resumable-evil-cve", data=b"x"))
    return out


def cve_without_writing_through() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The CVE's chain, then only a link that leaves: no member path goes through a link."""
    return [m for m in cve_2025_4517() if not m[0].name.startswith("escape/")]


HOSTILE = {
    "cve-2025-4517 link chain": cve_2025_4517(),
    "cve-2025-4517 link chain, links only": cve_without_writing_through(),
    "link to the root, then up through it": [
        member("root", tarfile.SYMTYPE, link="."),
        member("up", tarfile.SYMTYPE, link="root/../resumable-evil-up"),
    ],
    "link to a link that climbs": [
        member("sub", tarfile.DIRTYPE),
        member("sub/in", tarfile.SYMTYPE, link="."),
        member("two", tarfile.SYMTYPE, link="sub/in/../../../resumable-evil-two"),
    ],
    "link made where an earlier link's target passed": [
        member("early", tarfile.SYMTYPE, link="later/../resumable-evil-later"),
        member("later", tarfile.SYMTYPE, link="."),
    ],
    "file written through a link inside the folder": [
        member("sub", tarfile.DIRTYPE),
        member("hop", tarfile.SYMTYPE, link="sub"),
        member("hop/resumable-evil-through", data=b"x"),
    ],
    "member replaces a link": [
        member("sub", tarfile.DIRTYPE),
        member("l", tarfile.SYMTYPE, link="sub"),
        member("l", data=b"x"),
    ],
    "absolute path": [member("/tmp/resumable-evil-abs", data=b"x")],
    "dot-dot": [member("../resumable-evil-dotdot", data=b"x")],
    "nested dot-dot": [member("a/../../resumable-evil-nested", data=b"x")],
    "symlink out": [member("out", tarfile.SYMTYPE, link="../..")],
    "absolute symlink": [member("abs", tarfile.SYMTYPE, link="/etc")],
    "write through symlink": [
        member("hop", tarfile.SYMTYPE, link=".."),
        member("hop/resumable-evil-hop", data=b"x"),
    ],
    "hardlink out": [member("hard", tarfile.LNKTYPE, link="../../etc/passwd")],
    "hardlink absolute": [member("hard", tarfile.LNKTYPE, link="/etc/passwd")],
    "character device": [member("dev", tarfile.CHRTYPE)],
    "block device": [member("blk", tarfile.BLKTYPE)],
    "fifo": [member("fifo", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("members", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archive_refused_falls_back(
    store_url: str, io: IO, tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    """A hostile folder snapshot is refused: the previous snapshot is loaded instead."""
    with Checkpoint(store_url) as cp:
        io.save(cp, b"previous")
        testing.store(cp).commit("dir", [tar_bytes(*members)], compression="none")
        root = io.load(cp)
        assert sorted(p.name for p in root.iterdir()) == ["payload"]
        assert (root / "payload").read_bytes() == b"previous"
    assert escaped(tmp_path) == []


@pytest.mark.parametrize("members", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archive_alone_raises(
    store_url: str, io: IO, tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    """A hostile snapshot with nothing to fall back to raises, naming the refusal."""
    with Checkpoint(store_url) as cp:
        testing.store(cp).commit("dir", [tar_bytes(*members)], compression="none")
        with pytest.raises(CorruptCheckpointError, match="snapshot 0"):
            io.load(cp)
        assert list(cp.path.iterdir()) == []
    assert escaped(tmp_path) == []


def test_entry_count_bomb_is_stopped(store_url: str, io: IO) -> None:
    """An archive with more entries than Limits.max_entries is refused."""
    many = [member(f"f{i}", data=b"") for i in range(50)]
    with Checkpoint(store_url, storage=Storage(limits=Limits(max_entries=20))) as cp:
        testing.store(cp).commit("dir", [tar_bytes(*many)], compression="none")
        with pytest.raises(CorruptCheckpointError, match="max_entries"):
            io.load(cp)
        assert list(cp.path.iterdir()) == []


def test_declared_size_bomb_is_stopped_before_writing(store_url: str, io: IO) -> None:
    """A member declaring more bytes than Limits.max_bytes is refused before it is written."""
    info = tarfile.TarInfo("huge")
    info.size = 1 << 41
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    with Checkpoint(store_url) as cp:
        testing.store(cp).commit("dir", [header + bytes(4096)], compression="none")
        with pytest.raises(CorruptCheckpointError, match="max_bytes"):
            io.load(cp)
        assert list(cp.path.iterdir()) == []
