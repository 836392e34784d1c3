"""A griffe extension for the docs site: the package's ``Example:`` sections are doctests.

Griffe's Google-style parser renders an ``Examples:`` section as code but treats a singular
``Example:`` as an admonition of plain Markdown, where ``>>>`` lines lose their layout and a
result such as ``['last.ckpt']`` reads as a link. The docstrings say ``Example:``; this reads
it as ``Examples:`` when the site is built, without touching the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Read ``Example:`` as ``Examples:`` in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the section title before the docstring is parsed."""
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
