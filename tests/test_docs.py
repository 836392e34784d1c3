"""Every ```python block of the docs and the README runs, so the docs cannot drift from the code.

Each page's blocks run in order, as one program, in a fresh subprocess whose working folder is
a new temp folder (the default store ``./.resumable`` lands there): a block may use what an
earlier block of the same page defined. A failure names the page and the Markdown line of the
block (the blocks are compiled with that file name and line numbers).

A block that needs a server is preceded by ``<!-- needs: s3 gcs azure dask ray -->`` (any
of them): the page's fast run leaves it out, and a second run of the whole page, marked
``remote`` (and ``slow`` for a cluster), points the cloud libraries at the test servers on
loopback through their standard environment variables (``AWS_ENDPOINT_URL``,
``STORAGE_EMULATOR_HOST``, ``AZURE_STORAGE_CONNECTION_STRING``), so the block runs as written.

Setup a reader does not need to see (a file the block saves, a bucket) is a fenced block
inside an HTML comment that starts with ``<!-- setup``: it runs, in its place, and the site
does not render it. ``<!-- setup (needs: s3) ...`` ties it to the servers like a block.

There is no way to leave a block out: a ``<!-- not-run: reason -->`` marker, which earlier
versions honoured, now fails ``test_blocks_are_found``, naming the block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->")
_NEEDS = re.compile(r"needs:\s*(?P<what>[a-z0-9 ]+)")
_SETUP = re.compile(r"^\s*<!--\s*setup\b")
#: What a ``needs:`` marker may name: the servers and clusters a page's full run provides.
SERVERS = {"s3": "s3_session_server", "gcs": "gcs_session_server", "azure": "azure_session_server"}
CLUSTERS = {"dask", "ray"}


@dataclass(frozen=True)
class Block:
    """One fenced ```python block: where it is, its code, and why it is not run (if so)."""

    page: str  # relative to the repository root
    line: int  # the 1-based line of the block's first line of code
    code: str
    not_run: str | None
    needs: frozenset[str] = frozenset()
    hidden: bool = False  # setup inside an HTML comment: run, never rendered


def blocks(page: Path, root: Path = ROOT) -> list[Block]:
    """The page's ```python blocks, in order, their indentation (in a list item) removed."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    setup: frozenset[str] | None = None  # inside a setup comment: what it needs
    while index < len(lines):
        if setup is None and _SETUP.match(lines[index]):
            needs = _NEEDS.search(lines[index])
            setup = frozenset(needs["what"].split()) if needs else frozenset()
        if setup is not None and "-->" in lines[index]:
            setup = None
            index += 1
            continue
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
            before = lines[previous] if previous >= 0 else ""
            marker = _NOT_RUN.search(before)
            needs = _NEEDS.search(before) if before.lstrip().startswith("<!--") else None
            found.append(
                Block(
                    page=page.relative_to(root).as_posix(),
                    line=index + 2,
                    code="\n".join(body) + "\n",
                    not_run=marker["reason"] if marker else None,
                    needs=setup
                    if setup is not None
                    else (frozenset(needs["what"].split()) if needs else frozenset()),
                    hidden=setup is not None,
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


def _needs(page: str) -> frozenset[str]:
    return frozenset().union(*(b.needs for b in RUN[page]))


def _full_runs() -> list[Any]:
    """The pages with blocks that need servers or clusters: all their blocks, marked."""
    params = []
    for page in sorted(p for p in RUN if _needs(p)):
        needs = _needs(page)
        unknown = needs - set(SERVERS) - CLUSTERS
        assert not unknown, f"{page}: unknown needs: {sorted(unknown)}"
        marks = [pytest.mark.remote] + ([pytest.mark.slow] if needs & CLUSTERS else [])
        params.append(pytest.param(page, marks=marks, id=page))
    return params


@pytest.mark.parametrize("page", sorted(p for p, b in RUN.items() if b))
def test_page_runs(page: str, tmp_path: Path) -> None:
    """The page's blocks that need no server run in order, in a fresh process, in a new folder."""
    run_page(page, [b for b in RUN[page] if not b.needs], tmp_path, {})


@pytest.mark.parametrize("page", _full_runs())
def test_page_runs_with_servers(page: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """All of the page's blocks run in order, cloud libraries pointed at the loopback servers."""
    env: dict[str, str] = {}
    for need in sorted(_needs(page) & set(SERVERS)):
        env.update(request.getfixturevalue(SERVERS[need]).env)
    run_page(page, RUN[page], tmp_path, env)


def run_page(page: str, run: list[Block], tmp_path: Path, extra_env: dict[str, str]) -> None:
    """Run ``run`` as one program in a fresh process in ``tmp_path``; fail with its traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])  # modules a block writes
    # The `resumable` command of this environment, for blocks that run it.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra_env)
    payload = [{"page": b.page, "line": b.line, "code": b.code} for b in run]
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(payload),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (
        f"a code block of {page} failed (the traceback names its line):\n{result.stderr[-6000:]}"
    )


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
    """The extraction finds the blocks, hidden setup included, and every one of them runs."""
    assert len(ALL) >= 40
    assert sum(b.hidden for b in ALL) >= 10
    assert not NOT_RUN, [f"{b.page}:{b.line}: {b.not_run}" for b in NOT_RUN]


def test_hidden_blocks_are_not_rendered(tmp_path: Path) -> None:
    """A setup block inside an HTML comment is parsed as hidden, a marked one as needing servers."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- setup (needs: s3): a bucket\n```python\nx = 1\n```\n-->\n\n"
        "<!-- needs: dask -->\n```python\ny = x\n```\n\n```python\nz = 2\n```\n"
    )
    hidden, shown, plain = blocks(page, root=tmp_path)
    assert (hidden.hidden, hidden.needs, hidden.code) == (True, frozenset({"s3"}), "x = 1\n")
    assert (shown.hidden, shown.needs) == (False, frozenset({"dask"}))
    assert (plain.hidden, plain.needs) == (False, frozenset())
