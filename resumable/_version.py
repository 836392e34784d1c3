"""The installed version of resumable."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION: str = version("resumable")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0+unknown"
