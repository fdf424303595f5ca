"""The typed API is typed: mypy --strict and pyright accept correct calls and reject wrong ones.

Run by ``nox -s typecheck`` (it needs both checkers installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
BAD_LINES = {
    i
    for i, line in enumerate((HERE / "usage_bad.py").read_text().splitlines(), 1)
    if "# error" in line
}


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path))


def _pyright(path: Path) -> subprocess.CompletedProcess[str]:
    pyright = shutil.which("pyright") or str(Path(sys.executable).with_name("pyright"))
    return _run(pyright, "--pythonpath", sys.executable, str(path))


def _error_lines(output: str, name: str) -> set[int]:
    return {int(m) for m in re.findall(rf"{name}:(\d+):(?:\d+)?.*error", output)}


@pytest.mark.parametrize("checker", [_mypy, _pyright], ids=["mypy", "pyright"])
def test_correct_calls_pass(checker: object) -> None:
    result = checker(HERE / "usage_ok.py")  # type: ignore[operator]
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("checker", [_mypy, _pyright], ids=["mypy", "pyright"])
def test_wrong_calls_fail_on_exactly_the_marked_lines(checker: object) -> None:
    result = checker(HERE / "usage_bad.py")  # type: ignore[operator]
    assert result.returncode != 0
    assert _error_lines(result.stdout, "usage_bad.py") == BAD_LINES, result.stdout
