"""The docs site renders what a reader should see: links, public names, formatted signatures.

The site is built once (``mkdocs build --strict``, as ``tools/check_site.py`` builds it, into a
temp folder) and every page is read by ``check_site.scan_site``: a Sphinx role the docstrings
use (``:meth:`save_sync```) left as text, a private name (``resumable._checkpoint``, the
``_OMITTED`` sentinel), a page named in a docstring without a link, or an empty sitemap fails.
The griffe extension that makes this so (``tools/griffe_public.py``) is also tested alone, on a
small package of its own. Needs the ``docs`` dependency group; skipped without it.
"""

from __future__ import annotations

import html
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> ModuleType:
    """A module of tools/, which is not a package."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built strictly into a temp folder."""
    for module in ("mkdocs", "mkdocstrings_handlers.python", "material"):
        pytest.importorskip(module, reason="the docs dependency group is not installed")
    folder = tmp_path_factory.mktemp("site")
    _tool("check_site").build(folder)
    return folder


def test_site_shows_no_role_no_private_name_and_has_a_sitemap(site: Path) -> None:
    """No page shows a literal role, a private path or an unlinked page; the sitemap is full."""
    assert _tool("check_site").scan_site(site) == []


def test_roles_become_links_to_the_public_names(site: Path) -> None:
    """``:meth:`save_sync``` in Checkpoint.save links to resumable.Checkpoint.save_sync."""
    page = (site / "reference" / "checkpoint" / "index.html").read_text("utf-8")
    assert re.search(r'Async twin of <a [^>]*href="#resumable\.Checkpoint\.save_sync"', page)
    assert re.search(r'<a [^>]*href="\.\./\.\./guarantees/"[^>]*>docs/guarantees\.md</a>', page)
    testing = (site / "reference" / "testing" / "index.html").read_text("utf-8")
    assert 'href="#resumable.testing.store"' in testing


def test_signatures_are_formatted_and_name_public_types(site: Path) -> None:
    """A long signature is wrapped one parameter a line; its types link to their public names."""
    markup = (site / "reference" / "decorator" / "index.html").read_text("utf-8")
    assert "\n    state: Any = OMITTED,\n" in html.unescape(re.sub(r"<[^>]+>", "", markup))
    assert 'href="../helpers/#resumable.RetryPolicy"' in markup


def _package(tmp_path: Path, files: dict[str, str]) -> Any:
    """``files`` as a package ``pkg`` under tmp_path, loaded by griffe with the extension."""
    import griffe

    for name, source in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    extension = _tool("griffe_public").PublicNames()
    return griffe.load("pkg", search_paths=[tmp_path], extensions=griffe.load_extensions(extension))


PACKAGE = {
    "__init__.py": (
        "from ._impl import OMITTED, Store, make\n"
        "from ._hidden import Hidden\n"
        '__all__ = ["Store", "make"]\n'
    ),
    "_hidden.py": "class Hidden:\n    pass\n",
    "_impl.py": (
        "from typing import Any\n"
        "from ._hidden import Hidden\n"
        "OMITTED: Any = object()\n"
        "class Store:\n"
        '    """A store. See docs/guarantees.md."""\n'
        "    def save(self, data: Hidden) -> 'Store':\n"
        '        """Twin of :meth:`save_sync`; see :class:`~pkg.Store`, :func:`make`, '
        ':func:`x.y`."""\n'
        "    def save_sync(self) -> None: ...\n"
        "def make(state: Any = OMITTED) -> Store:\n"
        '    """Make one: :class:`Store`, :class:`Hidden`."""\n'
    ),
}


def test_extension_rewrites_roles_in_scope(tmp_path: Path) -> None:
    """Roles resolve as Python would in the docstring's scope, to the public path; else code."""
    pkg = _package(tmp_path, PACKAGE)
    save = pkg["_impl.Store.save"].docstring.value
    assert save == (
        "Twin of [`save_sync`][pkg.Store.save_sync]; see [`Store`][pkg.Store], "
        "[`make`][pkg.make], `x.y`."
    )
    make = pkg["_impl.make"].docstring.value
    assert make == "Make one: [`Store`][pkg.Store], `Hidden`."
    assert pkg["_impl.Store"].docstring.value == (
        "A store. See [docs/guarantees.md](../guarantees.md)."
    )


def test_extension_rewrites_private_names_in_signatures(tmp_path: Path) -> None:
    """Types resolve to public paths; a private name with none is shown unlinked, no path."""
    pkg = _package(tmp_path, PACKAGE)
    make = pkg["_impl.make"]
    default = make.parameters["state"].default
    assert (str(default), default.reference_path) == ("OMITTED", None)
    assert (str(make.returns), make.returns.reference_path) == ("Store", "pkg.Store")
    data = pkg["_impl.Store.save"].parameters["data"].annotation
    assert (str(data), data.reference_path, data.canonical_path) == ("Hidden", None, "Hidden")


def test_scan_reports_each_kind_of_problem(tmp_path: Path) -> None:
    """The scan fails on a role, a private path, ``_OMITTED``, an unlinked page, no sitemap."""
    page = tmp_path / "reference" / "checkpoint" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        "<p>Async twin of :meth:<code>save_sync</code>.</p>"
        '<span title="resumable._snapshot.SaveData">SaveData</span>'
        "<code>state: Any = _OMITTED</code> <code>tenacity._utils</code>"
        '<p>See docs/guarantees.md, or <a href="../../guarantees/">docs/guarantees.md</a>.</p>'
    )
    problems = _tool("check_site").scan_site(tmp_path)
    found = sorted(re.sub(r": \.\.\..*", "", problem) for problem in problems)
    assert found == [
        "reference/checkpoint/index.html: a Sphinx role left as text",
        "reference/checkpoint/index.html: a page named without a link",
        "reference/checkpoint/index.html: a private module path",
        "reference/checkpoint/index.html: a private module path",
        "reference/checkpoint/index.html: a private name",
        "reference/checkpoint/index.html: a private name",
        "sitemap.xml lists 0 pages of 1: is site_url set?",
    ]
