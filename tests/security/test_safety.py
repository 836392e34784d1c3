"""Safe extraction: hand-crafted archives never write outside the workspace."""

from __future__ import annotations

import io as stdio
import tarfile
from pathlib import Path

import pytest

from resumable import Checkpoint, CorruptCheckpointError, Limits, Storage, testing

from ..conftest import IO


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


def outside_files(tmp_path: Path) -> list[Path]:
    return [*tmp_path.parent.rglob("resumable-evil-*"), *Path("/tmp").glob("resumable-evil-*")]


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
    assert outside_files(tmp_path) == []


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
    assert outside_files(tmp_path) == []


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
