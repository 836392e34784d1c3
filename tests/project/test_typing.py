"""The types users see: mypy's (and pyright's) output on tests/typing_golden is pinned.

Each checker's whole output for ``decorated.py`` -- every revealed type and every error of
the negative cases -- must equal the checked-in ``decorated.<checker>.out``. After a change
that is meant to alter them, rewrite the expected files and review the diff::

    RESUMABLE_UPDATE_GOLDEN=1 python -m pytest tests/project/test_typing.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "typing_golden"
CASES = GOLDEN / "decorated.py"
RELATIVE = CASES.relative_to(ROOT).as_posix()


def _normalise(text: str) -> str:
    """Output that compares equal across machines: relative paths, Unix line ends."""
    text = text.replace("\r\n", "\n").replace("\\", "/")
    text = text.replace(ROOT.as_posix() + "/", "")
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


def _compare(name: str, output: str) -> None:
    expected_file = GOLDEN / name
    if os.environ.get("RESUMABLE_UPDATE_GOLDEN"):
        expected_file.write_text(output, encoding="utf-8", newline="\n")
    expected = _normalise(expected_file.read_text(encoding="utf-8"))
    assert output == expected, f"{name} differs; see the module docstring to update it"


def test_mypy_output_is_pinned(tmp_path: Path) -> None:
    """A mypy --strict run with the project's config reveals exactly the pinned output."""
    pytest.importorskip("mypy", reason="mypy is not installed (the lint tools)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            "pyproject.toml",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--no-color-output",
            "--hide-error-context",
            RELATIVE,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # the negative cases are errors
    _compare("decorated.mypy.out", _normalise(result.stdout))


def _pyright() -> list[str]:
    if importlib.util.find_spec("pyright") is None:
        pytest.skip("pyright is not installed (pip install pyright)")
    return [sys.executable, "-m", "pyright"]


def test_pyright_output_is_pinned() -> None:
    """Pyright reveals the same kinds of types and rejects the same negative cases."""
    result = subprocess.run(
        [*_pyright(), "--outputjson", "--pythonpath", sys.executable, RELATIVE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"},
    )
    report = json.loads(result.stdout)
    lines = []
    for d in report["generalDiagnostics"]:
        start = d["range"]["start"]
        rule = f" ({d['rule']})" if "rule" in d else ""
        message = d["message"].replace("\n", "\n    ")
        lines.append(
            f"{RELATIVE}:{start['line'] + 1}:{start['character'] + 1} - "
            f"{d['severity']}: {message}{rule}"
        )
    summary = report["summary"]
    lines.append(
        f"{summary['errorCount']} errors, {summary['warningCount']} warnings, "
        f"{summary['informationCount']} informations"
    )
    _compare("decorated.pyright.out", _normalise("\n".join(lines)))
