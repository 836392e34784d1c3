"""Every test that docs/guarantees.md names beside a promise exists: no promise loses its proof."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guarantees.md"
_SPAN = re.compile(r"`([^`]+)`")
_FILE = re.compile(r"^(?:tests/)?((?:[a-z_]+/)?test_\w+\.py|stress/\w+\.py)(?:::(\w+))?")
_TEST = re.compile(r"^::(\w+)")


def references() -> list[tuple[str, str | None]]:
    """(test file, test name or None) for each reference on the page, in order."""
    found: list[tuple[str, str | None]] = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        current: str | None = None
        for span in _SPAN.findall(line):
            if match := _FILE.match(span):
                current = match.group(1)
                found.append((current, match.group(2)))
            elif (match := _TEST.match(span)) and current is not None:
                found.append((current, match.group(1)))
    return found


def defines(source: str, name: str) -> bool:
    """Whether a test module defines ``name``, or imports it (shared cases run per backend)."""
    defined = rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b"
    imported = rf"^\s*(?:from\s+\S+\s+import\s+.*\b{name}\b|{name},?)\s*$"
    return bool(re.search(defined, source, re.M) or re.search(imported, source, re.M))


def test_the_page_names_tests() -> None:
    """The reader finds the page's references (a broken pattern would check nothing)."""
    refs = references()
    assert len(refs) > 100
    assert ("store/test_commit.py", "test_manifest_is_written_after_payload") in refs


def test_every_named_test_exists() -> None:
    """Each file the page names exists under tests/, and defines each test named with it."""
    missing = []
    for file, name in references():
        path = ROOT / "tests" / file
        if not path.is_file():
            missing.append(file)
            continue
        if name is not None and not defines(path.read_text(encoding="utf-8"), name):
            missing.append(f"{file}::{name}")
    assert missing == []
