"""Fail on any use of another module's private names inside the package.

A layer talks to the one below only through public names. Inside ``resumable/`` this refuses:

- ``from .module import _name`` (importing a private name of another module);
- ``something._name`` where ``something`` is not ``self`` or ``cls`` (reaching into another
  object's private members).

Dunder names (``__name__``, ``__enter__``) and the fork hook ``_after_fork`` are protocol, and
private *modules*
(``from ._store import SnapshotStore``) are how the package is laid out: both are fine.

Run: ``python tools/check_private.py [package folder]``; exit status 1 lists each offence.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

#: Hooks the package calls on objects by protocol, like ``logging``'s ``_at_fork_reinit``:
#: ``_forks`` resets every tracked object in a forked child through ``_after_fork()``.
_PROTOCOL_HOOKS = frozenset({"_after_fork"})


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in _PROTOCOL_HOOKS


def offences(path: Path) -> Iterator[str]:
    """``file:line: what`` for each private reach in one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level and not node.module:
                continue  # ``from . import _module``: a module of the package, not a name
            for alias in node.names:
                if _private(alias.name):
                    yield f"{path}:{node.lineno}: imports private name {alias.name!r}"
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            yield f"{path}:{node.lineno}: reaches into {ast.unparse(node)!r}"


def main(argv: list[str]) -> int:
    """Check every ``.py`` file under the package folder; 1 when anything reaches in."""
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "resumable"
    found = [line for path in sorted(root.rglob("*.py")) for line in offences(path)]
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} private reach(es) across modules", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
