"""The package's layers talk through public names only (tools/check_private.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from check_private import offences  # noqa: E402


def test_no_module_reaches_into_another_modules_private_names() -> None:
    """No module of resumable/ uses another module's or object's _private names."""
    found = [line for path in sorted((ROOT / "resumable").rglob("*.py")) for line in offences(path)]
    assert found == []


def test_the_checker_catches_a_private_reach(tmp_path: Path) -> None:
    """The checker flags obj._x and `from .m import _x`, and allows self._x and cls._x."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from ._store import _MARK\n"
        "from . import _version\n"
        "class A:\n"
        "    def f(self, cp):\n"
        "        self._ok = cp._store\n"
        "        return type(self)._x, cls._y\n"
    )
    found = list(offences(bad))
    assert len(found) == 3, found
    assert "_MARK" in found[0]
    assert "cp._store" in found[1]
    assert "type(self)._x" in found[2]


def test_the_checker_runs_as_a_script() -> None:
    """`python tools/check_private.py` exits 0 on the package."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_private.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
