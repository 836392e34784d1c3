"""Build the docs site and look at it in a real browser (headless Chromium).

    python tools/check_site.py [--no-build]

Builds the site strictly (``mkdocs build --strict``, warnings are errors) into build/site,
serves it on 127.0.0.1, opens the home page and the ``Checkpoint`` reference page in
headless Chromium (Debian's ``chromium`` package), checks the rendered DOM for the expected
headings and the ``Checkpoint.save_sync`` signature, and saves a screenshot of each page
under build/screenshots/. Before that it reads every built page (``scan_site``): no Sphinx
role left as text (``:meth:``), no private name (``resumable._checkpoint``, ``_OMITTED``), no
page of the docs named in a docstring without a link, and a sitemap that lists the pages.
Exits non-zero, saying what is missing, when a check fails.
"""

from __future__ import annotations

import argparse
import functools
import html
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
SCREENSHOTS = ROOT / "build" / "screenshots"
BROWSER_TIMEOUT = 120  # seconds per Chromium run


class Headings(HTMLParser):
    """The text of every h1, h2 and h3 of a page, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: dict[str, list[str]] = {"h1": [], "h2": [], "h3": []}
        self._open: str | None = None
        self._text: list[str] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Start collecting a heading's text; skip scripts and styles."""
        if tag in self.headings:
            self._open, self._text = tag, []
        elif tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        """End a heading: keep its text without the permalink sign."""
        if tag == self._open:
            self.headings[tag].append(" ".join("".join(self._text).replace("¶", "").split()))
            self._open = None
        elif tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        """Collect text."""
        if self._skip:
            return
        self.text.append(data)
        if self._open:
            self._text.append(data)


def save_sync_signature() -> re.Pattern[str]:
    """``save_sync(data: SaveData) -> None``, from the code, as a whitespace-tolerant pattern."""
    from resumable import Checkpoint

    signature = inspect.signature(Checkpoint.save_sync)

    def annotation(value: object) -> str:
        return value if isinstance(value, str) else inspect.formatannotation(value)

    parts = [
        re.escape(name) + r"\s*:\s*" + re.escape(annotation(p.annotation))
        for name, p in signature.parameters.items()
        if name != "self"
    ]
    returns = re.escape(annotation(signature.return_annotation))
    return re.compile(r"save_sync\s*\(\s*" + r"\s*,\s*".join(parts) + r"\s*\)\s*->\s*" + returns)


def build(site: Path = SITE) -> None:
    """``mkdocs build --strict`` into ``site``: any warning fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        check=True,
    )


#: A Sphinx role left as text: griffe renders ``:meth:`x``` as ``:meth:<code>x</code>``.
_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|attr|data|exc|mod|obj):")
#: A private name of the package, in text or in an attribute (a link's tooltip).
_PRIVATE = re.compile(r"\bresumable(?:\.\w+)*\._[a-z]\w*|\b_OMITTED\b")
#: Any private module path (``package._module``): on the API reference pages.
_PRIVATE_PATH = re.compile(r"\b[A-Za-z]\w*\._[a-z]\w*")
#: A page of the docs named as a path.
_PAGE = re.compile(r"\bdocs/[a-z0-9-]+\.md\b")


class PlainText(HTMLParser):
    """The text of a page outside links, code, scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self._inside = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Enter a link, code or a script: its text is not plain."""
        if tag in ("a", "code", "pre", "script", "style"):
            self._inside += 1

    def handle_endtag(self, tag: str) -> None:
        """Leave it."""
        if tag in ("a", "code", "pre", "script", "style"):
            self._inside -= 1

    def handle_data(self, data: str) -> None:
        """Collect plain text."""
        if not self._inside:
            self.text.append(data)


def _around(text: str, match: re.Match[str]) -> str:
    return " ".join(text[max(0, match.start() - 60) : match.end() + 40].split())


def scan_site(site: Path) -> list[str]:
    """What the built site must not show: roles, private names, unlinked pages; the sitemap."""
    problems = []
    for page in sorted(site.rglob("*.html")):
        name = page.relative_to(site).as_posix()
        markup = page.read_text(encoding="utf-8")
        reference = name.startswith("reference/")
        checks = [("a Sphinx role left as text", _ROLE), ("a private name", _PRIVATE)]
        if reference:
            checks.append(("a private module path", _PRIVATE_PATH))
        for what, pattern in checks:
            problems += [
                f"{name}: {what}: ...{_around(markup, m)}..." for m in pattern.finditer(markup)
            ]
        if reference:
            parser = PlainText()
            parser.feed(markup)
            text = "".join(parser.text)
            problems += [
                f"{name}: a page named without a link: ...{_around(text, m)}..."
                for m in _PAGE.finditer(text)
            ]
    sitemap = site / "sitemap.xml"
    pages = {p.parent for p in site.rglob("index.html")}
    listed = (
        re.findall(r"<loc>([^<]+)</loc>", sitemap.read_text(encoding="utf-8"))
        if sitemap.is_file()
        else []
    )
    if len(listed) < len(pages):  # every page; empty without site_url in mkdocs.yml
        problems.append(f"sitemap.xml lists {len(listed)} pages of {len(pages)}: is site_url set?")
    return problems


def chromium(*args: str) -> str:
    """Run headless Chromium with a new profile; return what it printed on stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        sys.exit("no chromium: apt-get install -y chromium (Debian's package)")
    with tempfile.TemporaryDirectory(prefix="check-site-profile-") as profile:
        result = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        sys.exit(
            f"chromium {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout


def check_page(url: str, name: str, headings: dict[str, list[str]], text: list[str]) -> list[str]:
    """Open ``url``: its DOM must have these headings and texts; save a screenshot as ``name``."""
    dom = chromium("--dump-dom", url)
    parser = Headings()
    parser.feed(dom)
    page_text = " ".join(html.unescape("".join(parser.text)).split())
    problems = []
    for level, expected in headings.items():
        for heading in expected:
            if not any(heading in found for found in parser.headings[level]):
                problems.append(f"{url}: no <{level}> with {heading!r} in {parser.headings[level]}")
    for wanted in text:
        if wanted not in page_text:
            problems.append(f"{url}: the page does not say {wanted!r}")
    signature = save_sync_signature()
    if name == "checkpoint" and not signature.search(page_text):
        problems.append(f"{url}: no Checkpoint.save_sync signature ({signature.pattern})")
    shot = SCREENSHOTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars", url)
    if not shot.is_file() or shot.stat().st_size < 10_000:
        problems.append(f"{url}: no screenshot (or an empty one) at {shot}")
    print(f"{url}: {len(dom)} characters of DOM, h1 {parser.headings['h1']}, screenshot {shot}")
    return problems


def main() -> int:
    """Build, serve, look; 0 when every check passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help="check the site already built")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if not args.no_build:
        build()
    if not (SITE / "index.html").is_file():
        sys.exit(f"no site at {SITE.relative_to(ROOT)}: build it first")
    scanned = scan_site(SITE)
    for problem in scanned:
        print(f"FAIL {problem}", file=sys.stderr)
    if scanned:
        return 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        problems = check_page(
            f"{base}/",
            "home",
            {"h1": ["resumable"], "h2": ["A task that resumes", "Where to go next"]},
            ["Long Python tasks that resume from their last snapshot", "How-to guides"],
        )
        problems += check_page(
            f"{base}/reference/checkpoint/",
            "checkpoint",
            {
                "h1": ["Checkpoint"],
                "h2": ["resumable.Checkpoint"],
                "h3": ["save_sync", "load_sync"],
            },
            ["Atomic, checksummed snapshots of bytes, a file or a folder under one URL."],
        )
    finally:
        server.shutdown()
        server.server_close()
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        print(f"site check passed: screenshots in {SCREENSHOTS.relative_to(ROOT)}/")
    return 1 if problems else 0


class QuietServer(ThreadingHTTPServer):
    """Says nothing when the browser drops a connection it no longer needs."""

    def handle_error(self, request: object, client_address: object) -> None:
        """Report errors other than a dropped connection."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the site without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        """Say nothing."""


if __name__ == "__main__":
    sys.exit(main())
