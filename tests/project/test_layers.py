"""The package's layers, as the import-linter contracts of pyproject.toml state them.

`lint-imports` (run by CI) checks the contracts; these tests run it, prove that a contract
can fail, and keep every module of the package inside some contract. `tools/check_private.py`
adds what import-linter cannot see: no module uses another module's (or object's) private
names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from check_private import offences  # noqa: E402

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
]


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        LINT,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_contracts_are_kept() -> None:
    """`lint-imports` keeps every contract of pyproject.toml on the package."""
    done = _lint(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_layer_that_imports_a_higher_one_breaks_the_contract(tmp_path: Path) -> None:
    """A copy of the package whose store imports Checkpoint fails `lint-imports`."""
    shutil.copytree(ROOT / "resumable", tmp_path / "resumable")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    store = tmp_path / "resumable" / "_store.py"
    store.write_text(store.read_text(encoding="utf-8") + "\nfrom . import _checkpoint\n")
    done = _lint(tmp_path, tmp_path)
    assert done.returncode != 0
    assert "_store -> resumable._checkpoint" in done.stdout


def test_every_module_is_in_a_contract() -> None:
    """Each module of the package is a layer of the stack or one of the utilities below it."""
    named: set[str] = set()
    for contract in CONFIG["contracts"]:
        for layer in contract.get("layers", []):
            named.update(f"resumable.{m.strip()}" for m in layer.split("|"))
    utilities = next(c for c in CONFIG["contracts"] if c["name"].startswith("Codecs"))
    named.update(utilities["source_modules"])
    named.add("resumable._faults")  # the test filesystem: fsspec's, outside the stack
    modules = {
        f"resumable.{p.stem}" for p in (ROOT / "resumable").glob("*.py") if p.stem != "__init__"
    }
    assert modules - named == set()


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
