"""The installed version of resumable."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "VERSION"]

#: The name to install: ``resumable`` on the package index is another project; the import
#: name stays ``resumable``.
DISTRIBUTION = "resumable-tasks"

try:
    VERSION: str = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0+unknown"
