"""ruff and mypy, as part of the test run: `make test` (and so CI) fails on a lint or type error.

Both run from the virtualenv running the tests, with the configuration in pyproject.toml: ruff over the
paths below, mypy --strict over its ``files`` (gateway/). A path joins the list once it is clean.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUFF_PATHS = ["gateway", "tests/gateway", "tests/project/test_lint.py"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_finds_nothing() -> None:
    result = run(str(BIN / "ruff"), "check", "--no-cache", *RUFF_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = run(str(BIN / "mypy"), "--config-file", "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
