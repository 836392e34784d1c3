"""A griffe extension for the docs site: the reference speaks of public names only.

The package defines its objects in private modules (``resumable._checkpoint``) and exports
them from public ones (``resumable``). Rendered as they are, the reference pages would show:

- the docstrings' Sphinx roles as literal text (``Async twin of :meth:`save_sync```): griffe
  reads Markdown, not reStructuredText;
- the private paths of types and defaults, in link tooltips and plain names
  (``resumable._checkpoint.Checkpoint``, a ``state`` defaulting to ``resumable._options.OMITTED``);
- a page of the docs named in a docstring (``See docs/guarantees.md``) as plain text.

When the package is loaded this rewrites, in every docstring and signature, without touching the
package:

- ``:meth:`save_sync``` (and ``:class:``, ``:func:``, ``:attr:``, ``:data:``, ``:exc:``,
  ``:mod:``, ``:obj:``; ``~`` shows the last part only) into an autorefs cross-reference to the
  public name, ``[`save_sync`][resumable.Checkpoint.save_sync]``, resolved as Python would in
  the docstring's scope; a target that has no public name becomes plain code;
- a name in an annotation, a default or a base class that resolves to an object of a private
  module: into its public name when it has one (``Checkpoint``, linked to
  ``resumable.Checkpoint``), else into unlinked text without the private path (the sentinel
  default ``OMITTED``, whose meaning the parameter's description gives);
- ``docs/<page>.md`` into a link to that page (the reference pages live in ``docs/reference/``).

``tests/project/test_docs_render.py`` builds the site and fails on any role or private path
left in the HTML.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

#: ``:meth:`~resumable.Checkpoint.save_sync``` and friends.
_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|attr|data|exc|mod|obj):`(?P<target>[^`]+)`")
#: A page of the docs named in prose, not already inside a link or code.
_PAGE = re.compile(r"(?<![\w/`(\[])docs/(?P<page>[a-z0-9-]+)\.md\b(?!`|\))")


def _is_private(path: str) -> bool:
    return any(part.startswith("_") for part in path.split("."))


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined under it (aliases, which point elsewhere, left out)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


def _public_names(pkg: griffe.Module) -> dict[str, str]:
    """Where each object is defined -> the public path it is documented under."""
    public: dict[str, str] = {}

    def add(target: griffe.Object, path: str) -> None:
        public.setdefault(target.path, path)
        for name, member in target.members.items():
            if not name.startswith("_") and not member.is_alias:
                add(member, f"{path}.{name}")  # type: ignore[arg-type]

    modules = [pkg, *(m for m in _objects(pkg) if m.is_module and not _is_private(m.path))]
    for module in modules:
        exported = module.exports if module.exports is not None else list(module.members)
        for name in exported:
            if not isinstance(name, str) or name.startswith("_") or name not in module.members:
                continue
            member = module.members[name]
            try:
                target = member.final_target if isinstance(member, griffe.Alias) else member
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue  # defined outside the package
            add(target, f"{module.path}.{name}")
    return public


def _resolve(target: str, scope: griffe.Object, public: dict[str, str]) -> str | None:
    """The public path ``target`` names in ``scope``'s docstring, or None if it has none."""
    documented = set(public.values())
    if target in documented:
        return target
    first, _, rest = target.partition(".")
    here: griffe.Object | None = scope
    while here is not None:
        candidates = [f"{here.path}.{target}"]
        if first in here.members:
            try:
                found = here.resolve(first)
            except griffe.NameResolutionError:
                found = None
            if found is not None:
                candidates.append(f"{found}.{rest}" if rest else found)
        for candidate in candidates:
            if candidate in public:
                return public[candidate]
        here = here.parent
    absolute = f"{scope.package.path}.{target}"
    return absolute if absolute in documented else public.get(target)


def _rewrite_docstring(obj: griffe.Object, public: dict[str, str]) -> None:
    docstring = obj.docstring
    if docstring is None:
        return
    scope = obj if obj.is_class or obj.is_module else (obj.parent or obj)

    def role(match: re.Match[str]) -> str:
        written = match["target"].strip()
        target = written.lstrip("~.")
        shown = target.rsplit(".", 1)[-1] if written.startswith("~") else target
        path = _resolve(target, scope, public)
        return f"`{shown}`" if path is None else f"[`{shown}`][{path}]"

    text = _ROLE.sub(role, docstring.value)
    docstring.value = _PAGE.sub(r"[docs/\g<page>.md](../\g<page>.md)", text)


def _expressions(obj: griffe.Object) -> Iterator[Any]:
    """The expressions the reference renders for ``obj``: annotations, defaults, bases."""
    if isinstance(obj, griffe.Function):
        yield obj.returns
        for parameter in obj.parameters:
            yield parameter.annotation
            yield parameter.default
    elif isinstance(obj, griffe.Attribute):
        yield obj.annotation
        yield obj.value
    elif isinstance(obj, griffe.Class):
        yield from obj.bases


def _rewrite_names(obj: griffe.Object, public: dict[str, str]) -> None:
    for expression in _expressions(obj):
        if not isinstance(expression, griffe.Expr):
            continue
        for name in expression.iterate(flat=True):
            if not isinstance(name, griffe.ExprName) or not isinstance(name.parent, griffe.Object):
                continue  # a builtin, or the tail of a dotted name its head resolves
            path = name.canonical_path
            if path in public:
                name.parent, _, name.name = public[path].rpartition(".")
            elif _is_private(path) and path.startswith(f"{obj.package.path}."):
                # No public name: its own name, unlinked (a bare name links to nothing).
                name.parent, name.name = None, path.rsplit(".", 1)[-1]


class PublicNames(griffe.Extension):
    """Rewrite roles, private paths and page names once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Every object of the package, private modules included (public objects live there)."""
        public = _public_names(pkg)
        for obj in _objects(pkg):
            _rewrite_docstring(obj, public)
            _rewrite_names(obj, public)
