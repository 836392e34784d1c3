"""Every ```python block of the docs and the README runs, so the docs cannot drift from the code.

Each page's blocks run in order, as one program, in a fresh subprocess whose working folder is
a new temp folder (the default store ``./.resumable`` lands there): a block may use what an
earlier block of the same page defined. A failure names the page and the Markdown line of the
block (the blocks are compiled with that file name and line numbers).

A block that cannot run here (it needs real cloud credentials, say) is preceded in the
Markdown by ``<!-- not-run: the reason -->``; each one is a skipped test whose reason ``-ra``
prints, so the list stays visible, and short.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced ```python block: where it is, its code, and why it is not run (if so)."""

    page: str  # relative to the repository root
    line: int  # the 1-based line of the block's first line of code
    code: str
    not_run: str | None


def blocks(page: Path) -> list[Block]:
    """The page's ```python blocks, in order, their indentation (in a list item) removed."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower()
        end = index + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        if language in ("python", "py"):
            body = [
                line[len(indent) :] if line.startswith(indent) else line
                for line in lines[index + 1 : end]
            ]
            previous = index - 1
            while previous >= 0 and not lines[previous].strip():
                previous -= 1
            marker = _NOT_RUN.search(lines[previous]) if previous >= 0 else None
            found.append(
                Block(
                    page=page.relative_to(ROOT).as_posix(),
                    line=index + 2,
                    code="\n".join(body) + "\n",
                    not_run=marker["reason"] if marker else None,
                )
            )
        index = end + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]
RUN = {
    page: [b for b in ALL if b.page == page and b.not_run is None] for page in {b.page for b in ALL}
}
NOT_RUN = [b for b in ALL if b.not_run is not None]

# Runs the blocks of one page, given as JSON on stdin, in one namespace, as a script would.
_RUNNER = """
import json, sys, threading
def failed_thread(args):  # an exception in a thread a block started fails the page too
    threading.__excepthook__(args)
    failures.append(args)
failures = []
threading.excepthook = failed_thread
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for block in blocks:
    # Blank lines up front make tracebacks give the block's line in the Markdown file.
    code = compile("\\n" * (block["line"] - 1) + block["code"], block["page"], "exec")
    exec(code, namespace)
sys.exit(1 if failures else 0)
"""


@pytest.mark.parametrize("page", sorted(p for p, b in RUN.items() if b))
def test_page_runs(page: str, tmp_path: Path) -> None:
    """The page's blocks run in order, in a fresh process, in an empty folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    env["PYTHONPATH"] = str(ROOT)
    # The `resumable` command of this environment, for blocks that run it.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    payload = [{"page": b.page, "line": b.line, "code": b.code} for b in RUN[page]]
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(payload),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, (
        f"a code block of {page} failed (the traceback names its line):\n{result.stderr[-6000:]}"
    )


@pytest.mark.parametrize("block", NOT_RUN, ids=[f"{b.page}:{b.line}" for b in NOT_RUN])
def test_block_marked_not_run(block: Block) -> None:
    """A block marked ``<!-- not-run: reason -->`` is reported as skipped, with its reason."""
    assert block.not_run, f"{block.page}:{block.line}: say why the block cannot run"
    compile(block.code, block.page, "exec")  # still valid Python
    pytest.skip(f"{block.page}:{block.line} not run: {block.not_run}")


def test_every_public_name_has_a_reference_entry() -> None:
    """Each name of ``resumable.__all__`` is rendered from its docstring by a ``:::`` line."""
    import resumable

    entries = {
        line.removeprefix("::: ").strip()
        for page in PAGES
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("::: ")
    }
    missing = [
        n for n in resumable.__all__ if n != "__version__" and f"resumable.{n}" not in entries
    ]
    assert not missing, f"add `::: resumable.<name>` to a page of docs/reference/: {missing}"


def test_blocks_are_found() -> None:
    """The extraction finds the blocks, and most of them run.

    Blocks that start clusters or need cloud credentials are not run here; the tests they name
    run the same code.
    """
    assert len(ALL) >= 20
    assert len(NOT_RUN) <= len(ALL) // 3, [f"{b.page}:{b.line}: {b.not_run}" for b in NOT_RUN]
