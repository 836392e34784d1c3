"""Every ```python block of the docs and the README runs, so the docs cannot drift from the code.

Each page's blocks run in order, as one program, in a fresh subprocess whose working folder is
a new temp folder (the default store ``./.resumable`` lands there): a block may use what an
earlier block of the same page defined. A failure names the page and the Markdown line of the
block (the blocks are compiled with that file name and line numbers).

The tutorial, the how-to guides and the migration guide are run as a reader types them: each
line at the interactive prompt of a fresh interpreter (``code.InteractiveConsole``), a block
ended by an empty line, so that a blank line inside a function body or a statement right after
an indented block, which a script accepts and the prompt does not, fails the page. Each section
of the tutorial also runs alone in a fresh interpreter: a reader may start at any of them.

A block that needs a server, a cluster or a package of the ``integrations`` group is preceded
by ``<!-- needs: ... -->`` naming them (``s3 gcs azure``, ``dask ray``, ``torch lightning
transformers``): the page's fast run leaves it out, and a second run of the whole page, marked
``remote`` for a server and ``slow`` for a cluster, and skipped where a package is missing,
points the cloud libraries at the test servers on loopback through their standard environment
variables (``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``,
``AZURE_STORAGE_CONNECTION_STRING``), so the block runs as written.

Setup a reader does not need to see (a file the block saves, a bucket) is a fenced block
inside an HTML comment that starts with ``<!-- setup``: it runs, in its place, and the site
does not render it. ``<!-- setup (needs: s3) ...`` ties it to the servers like a block.

There is no way to leave a block out: a ``<!-- not-run: reason -->`` marker, which earlier
versions honoured, now fails ``test_blocks_are_found``, naming the block.

The shell examples of the ``resumable`` command run too, in the same program, in order with
the Python blocks (so a Python block, hidden or not, makes the store they inspect). Each
command runs with bash in the page's folder, the ``resumable`` of this environment first on
``PATH`` and a temp folder of the block's own (``TMPDIR``: ``gc`` reports the workspaces other
processes abandoned there), and ``$?`` is the previous command's exit status:

- A ```console block is a transcript: a line starting with ``$ `` is a command, and the lines
  up to the next command are what it prints, stdout and stderr together. The documented and
  the actual output are compared after both are normalised: runs of whitespace become one
  space, each line is stripped and blank lines are dropped; ISO 8601 times
  (``2026-11-27T13:38:17Z``), Unix times in JSON (``"created": 1795786697.18``) and a number
  with a unit ``s``, ``m``, ``h`` or ``d`` ending a line (the ages of the ``gc`` table, ``3h``)
  become placeholders. A documented line ``...`` matches any number of lines. Everything else
  (messages, counts, sizes, exit codes printed by ``echo $?``) must be exactly as documented.
- A ```bash block whose every line (comments and blank lines aside) starts with
  ``resumable `` runs line by line. Its output is not compared; each command must exit 0, or
  with a status its comment names (``resumable verify store  # exit 1 if any is bad`` may
  exit 0 or 1), so a command the store refuses (exit 2) fails the page.

Other shell blocks (``pip install``, ``pytest`` invocations, ``export`` lines, ``jq`` on a
manifest) are not run: they install things, start the test suite or need files the page does
not have.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->")
_NEEDS = re.compile(r"needs:\s*(?P<what>[a-z0-9 ]+)")
_SETUP = re.compile(r"^\s*<!--\s*setup\b")
#: What a ``needs:`` marker may name: the servers and clusters a page's full run provides.
SERVERS = {"s3": "s3_session_server", "gcs": "gcs_session_server", "azure": "azure_session_server"}
CLUSTERS = {"dask", "ray"}
#: ``needs:`` names of packages the dependency group ``test`` lacks (``integrations`` has them):
#: a page's full run is skipped, with the reason, where one is not installed.
MODULES = {
    "torch": "torch",
    "lightning": "lightning",
    "transformers": "transformers",
    "dask": "distributed",
    "ray": "ray",
}


@dataclass(frozen=True)
class Block:
    """One fenced block that runs: where it is, its code, and why it is not run (if so)."""

    page: str  # relative to the repository root
    line: int  # the 1-based line of the block's first line of code
    code: str
    not_run: str | None
    needs: frozenset[str] = frozenset()
    hidden: bool = False  # setup inside an HTML comment: run, never rendered
    language: str = "python"  # or "console" (a transcript), "bash" (`resumable` commands)


def _language(info: str, body: list[str]) -> str | None:
    """What a fenced block with this info string and body runs as; None: it is not run."""
    language = info.strip().split(" ")[0].lower()
    if language in ("python", "py"):
        return "python"
    if language == "console":
        return "console"
    run = [line.strip() for line in body if line.strip() and not line.lstrip().startswith("#")]
    if language == "bash" and run and all(line.startswith("resumable ") for line in run):
        return "bash"
    return None


def blocks(page: Path, root: Path = ROOT) -> list[Block]:
    """The page's blocks that run, in order, their indentation (in a list item) removed."""
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
        end = index + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line
            for line in lines[index + 1 : end]
        ]
        language = _language(opening["info"], body)
        if language is not None:
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
                    language=language,
                )
            )
        index = end + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]
RUN = {
    page: [b for b in ALL if b.page == page and b.not_run is None] for page in {b.page for b in ALL}
}
NOT_RUN = [b for b in ALL if b.not_run is not None]

#: The pages a reader types into the interactive interpreter, block by block: the tutorial,
#: the how-to guides and the migration guide.
TYPED = sorted(
    p for p in RUN if p in ("docs/tutorial.md", "docs/migrating-from-flyte.md") or "/howto-" in p
)

# Runs the blocks of one page, given as JSON on stdin, in one namespace: as a script would, or
# typed line by line at the interactive prompt (``typed``), where a blank line ends a
# compound statement and a statement right after an indented block is a syntax error.
_RUNNER = """
import code, json, sys, threading
def failed_thread(args):  # an exception in a thread a block started fails the page too
    threading.__excepthook__(args)
    failures.append(args)
failures = []
threading.excepthook = failed_thread
payload = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
where = ""  # the Markdown line being typed


class Prompt(code.InteractiveConsole):
    def showsyntaxerror(self, *args, **kwargs):
        super().showsyntaxerror(*args, **kwargs)
        raise SystemExit(f"{where}: a syntax error when typed at the interactive prompt")

    def showtraceback(self, *args, **kwargs):
        super().showtraceback(*args, **kwargs)
        raise SystemExit(f"{where}: typed at the interactive prompt, this raised")


prompt = Prompt(namespace)
status = 0  # of the last shell command: what `$?` says
for block in payload["blocks"]:
    if block["language"] != "python":
        # The checks live with the test; the repository's root is on PYTHONPATH.
        from tests.project.test_docs import run_shell
        status = run_shell(block["page"], block["line"], block["language"], block["code"], status)
        continue
    if payload["typed"]:
        for offset, line in enumerate([*block["code"].splitlines(), ""]):
            where = f"{block['page']}:{block['line'] + offset}"
            prompt.push(line)
        continue
    # Blank lines up front make tracebacks give the block's line in the Markdown file.
    code = compile("\\n" * (block["line"] - 1) + block["code"], block["page"], "exec")
    exec(code, namespace)
sys.exit(1 if failures else 0)
"""


def _needs(page: str) -> frozenset[str]:
    return frozenset().union(*(b.needs for b in RUN[page]))


def _full_runs() -> list[Any]:
    """The pages with blocks that need servers, clusters or packages: all their blocks, marked."""
    params = []
    for page in sorted(p for p in RUN if _needs(p)):
        needs = _needs(page)
        unknown = needs - set(SERVERS) - set(MODULES)
        assert not unknown, f"{page}: unknown needs: {sorted(unknown)}"
        marks = [pytest.mark.remote] if needs & set(SERVERS) else []
        marks += [pytest.mark.slow] if needs & CLUSTERS else []
        params.append(pytest.param(page, marks=marks, id=page))
    return params


@pytest.mark.parametrize("page", sorted(p for p, b in RUN.items() if b))
def test_page_runs(page: str, tmp_path: Path) -> None:
    """The page's blocks that need no server run in order, in a fresh process, in a new folder.

    The tutorial and the guides are typed at the interactive prompt, as a reader would.
    """
    run_page(page, [b for b in RUN[page] if not b.needs], tmp_path, {}, typed=page in TYPED)


def _sections(page: str) -> dict[str, list[Block]]:
    """The page's blocks that need nothing, by the ``## `` section they are in."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    found: dict[str, list[Block]] = {}
    for block in RUN[page]:
        if not block.needs:
            heading = next(h for h in reversed(lines[: block.line]) if h.startswith("## "))
            found.setdefault(heading.removeprefix("## "), []).append(block)
    return found


@pytest.mark.parametrize("section", sorted(_sections("docs/tutorial.md")))
def test_tutorial_section_runs_alone(section: str, tmp_path: Path) -> None:
    """Each section of the tutorial, typed on its own in a fresh interpreter, runs."""
    blocks = _sections("docs/tutorial.md")[section]
    run_page("docs/tutorial.md", blocks, tmp_path, {}, typed=True)


@pytest.mark.parametrize("page", _full_runs())
def test_page_runs_with_servers(page: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """All of the page's blocks run in order, with the servers, clusters and packages they need."""
    for need in sorted(_needs(page) & set(MODULES)):
        pytest.importorskip(
            MODULES[need], reason=f"{page} needs {need} (dependency group integrations)"
        )
    env: dict[str, str] = {}
    for need in sorted(_needs(page) & set(SERVERS)):
        env.update(request.getfixturevalue(SERVERS[need]).env)
    run_page(page, RUN[page], tmp_path, env)


def run_page(
    page: str, run: list[Block], tmp_path: Path, extra_env: dict[str, str], *, typed: bool = False
) -> None:
    """Run ``run`` as one program in a fresh process in ``tmp_path``; fail with its traceback.

    ``typed``: each line is typed at the interactive prompt instead, each block ended by an
    empty line.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])  # modules a block writes
    # The `resumable` command of this environment, for blocks that run it.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra_env)
    blocks = [{"page": b.page, "line": b.line, "code": b.code, "language": b.language} for b in run]
    payload = {"typed": typed, "blocks": blocks}
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
        f"a code block of {page} failed (the traceback, or the last line, names its line):\n"
        f"{result.stderr[-6000:]}"
    )


# -- shell blocks -------------------------------------------------------------------------

_EXIT = re.compile(r"\bexit (\d+)\b")
_ISO_TIME = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\b")
_UNIX_TIME = re.compile(r'("(?:newest_)?created": )-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')
_AGE = re.compile(r"(?<= )\d+[smhd]$")  # the AGE column, last in `gc`'s table


@dataclass(frozen=True)
class Command:
    """One command of a shell block, and what it must do."""

    line: int  # its line in the Markdown file
    text: str
    output: str | None  # a transcript's documented output; None: not compared
    statuses: frozenset[int] = frozenset({0})  # the exit statuses allowed, if not compared


def commands(language: str, code: str, line: int) -> list[Command]:
    """The commands of a ```console transcript or of a ```bash block starting at ``line``."""
    found: list[Command] = []
    if language == "bash":
        for offset, text in enumerate(code.splitlines()):
            if text.strip() and not text.lstrip().startswith("#"):
                comment = text.partition("#")[2]
                allowed = frozenset({0, *(int(n) for n in _EXIT.findall(comment))})
                found.append(Command(line + offset, text.strip(), None, allowed))
        return found
    outputs: list[list[str]] = []
    for offset, text in enumerate(code.splitlines()):
        if text.startswith("$ "):
            found.append(Command(line + offset, text[2:].strip(), ""))
            outputs.append([])
        elif outputs:
            outputs[-1].append(text)
        elif text.strip():
            raise AssertionError(f"line {line + offset}: a transcript starts with a `$ ` line")
    return [Command(c.line, c.text, "\n".join(out)) for c, out in zip(found, outputs, strict=True)]


def normalise(text: str) -> list[str]:
    """The lines of a command's output as they are compared: what may differ run to run goes."""
    lines = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if line:
            line = _ISO_TIME.sub("<time>", line)
            line = _UNIX_TIME.sub(r"\1<unix time>", line)
            lines.append(_AGE.sub("<age>", line))
    return lines


def matches(documented: list[str], actual: list[str]) -> bool:
    """Whether normalised output is as documented, a line ``...`` standing for any lines."""
    pattern = "".join(
        r"(?:.*\n)*" if line == "..." else re.escape(line) + "\n" for line in documented
    )
    return re.fullmatch(pattern, "".join(f"{line}\n" for line in actual)) is not None


def run_shell(page: str, line: int, language: str, code: str, status: int) -> int:
    """Run a shell block's commands in the working folder, checking each; the last status."""
    with tempfile.TemporaryDirectory(prefix="docs-shell-") as temp:
        # `gc` also reports the abandoned workspaces of the temp folder: only the page's own.
        # Unbuffered, a command's stdout and stderr interleave as it wrote them.
        env = {**os.environ, "TMPDIR": temp, "PYTHONUNBUFFERED": "1"}
        for command in commands(language, code, line):
            result = subprocess.run(
                ["bash", "-c", f"(exit {status}); {command.text}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                timeout=600,
                check=False,
            )
            status = result.returncode
            if command.output is None:
                if status not in command.statuses:
                    raise AssertionError(
                        f"{page}:{command.line}: `{command.text}` exited {status} (allowed: "
                        f"{sorted(command.statuses)}; a comment `exit N` allows N):\n"
                        f"{result.stdout}"
                    )
            elif not matches(normalise(command.output), normalise(result.stdout)):
                raise AssertionError(
                    f"{page}:{command.line}: `{command.text}` (exit {status}) printed:\n"
                    f"{result.stdout}\ninstead of what the page documents:\n{command.output}"
                )
    return status


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
    """The extraction finds the blocks, hidden setup and shell included, and every one runs."""
    assert len(ALL) >= 40
    assert sum(b.hidden for b in ALL) >= 10
    assert sum(b.language == "console" for b in ALL) >= 9
    assert sum(b.language == "bash" for b in ALL) >= 3
    empty = [
        f"{b.page}:{b.line}"
        for b in ALL
        if b.language != "python" and not commands(b.language, b.code, b.line)
    ]
    assert not empty, f"shell blocks without a command: {empty}"
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


def test_shell_blocks_are_parsed(tmp_path: Path) -> None:
    """Transcripts and `resumable` bash blocks run, a comment's `exit N` allowing N; others not."""
    page = tmp_path / "page.md"
    page.write_text(
        "```console\n$ resumable ls store\nKEY  SIZE\n\n$ echo $?\n0\n```\n\n"
        "```bash\n# check\nresumable verify store   # exit 1 if any is bad\n\n"
        "resumable ls s\n```\n\n"
        "```bash\npip install resumable\n```\n\n```bash\nexport A=1\nresumable ls s\n```\n"
    )
    console, bash = blocks(page, root=tmp_path)
    assert (console.language, console.line, bash.language, bash.line) == ("console", 2, "bash", 10)
    assert commands(console.language, console.code, console.line) == [
        Command(2, "resumable ls store", "KEY  SIZE\n"),
        Command(5, "echo $?", "0"),
    ]
    assert commands(bash.language, bash.code, bash.line) == [
        Command(11, "resumable verify store   # exit 1 if any is bad", None, frozenset({0, 1})),
        Command(13, "resumable ls s", None, frozenset({0})),
    ]


def test_transcript_output_is_normalised() -> None:
    """Whitespace, ISO and Unix times and `gc` ages may differ; `...` matches any lines."""
    documented = normalise(
        'KEY      SIZE  AGE\nnightly   7 B   3h\n  "created": 1795786697.18,\n'
        "...\nat 2026-11-27T13:38:17Z\n"
    )
    actual = normalise(
        'KEY  SIZE AGE  \n\nnightly  7 B  12s\n"created": 1796149736.1579497,\n'
        "x\ny\nat 2027-01-02T03:04:05Z\n"
    )
    assert documented[:3] == ["KEY SIZE AGE", "nightly 7 B <age>", '"created": <unix time>,']
    assert matches(documented, actual)
    assert matches(documented, [*actual[:3], actual[-1]])  # `...` may stand for no line
    assert not matches(documented, [line.replace("7 B", "8 B") for line in actual])
    assert not matches(normalise("removed 2 objects"), normalise("removed 3 objects"))
    assert not matches(normalise("exit 1"), normalise("exit 1\nmore"))


def test_shell_blocks_run_in_order_and_fail_on_drift(tmp_path: Path) -> None:
    """Commands see what earlier blocks made, `$?` is the last status, and a drift fails."""
    docs, work = tmp_path / "docs", tmp_path / "work"
    docs.mkdir()
    work.mkdir()

    def run(markdown: str) -> None:
        (docs / "page.md").write_text(markdown)
        run_page("page.md", blocks(docs / "page.md", root=docs), work, {})

    run(
        '```python\nopen("f", "w").write("made  by   python\\n")\n'
        'from resumable import Checkpoint\nCheckpoint("store/k").save_sync(b"x")\n```\n\n'
        "```console\n$ cat f\nmade by python\n$ resumable ls nosuch\n...\n$ echo $?\n2\n```\n\n"
        "```bash\nresumable ls store\n```\n"
    )
    with pytest.raises(AssertionError, match=r"page\.md:3: `cat f` \(exit 0\) printed"):
        run("```console\n\n$ cat f\nmade by bash\n```\n")
    with pytest.raises(AssertionError, match=r"page\.md:2: `resumable ls nosuch .*` exited 2"):
        run("```bash\nresumable ls nosuch   # exit 1 if bad\n```\n")
