"""The test run's own rules, checked on throwaway suites run by pytest in a subprocess.

A failing test fails alone: the rest of the run goes on and the summary counts it. In CI a skip fails the
run (exit status 1, each skip listed) without turning any report into something it is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SUITE = '''
import asyncio
import pytest

def test_passes_before():
    pass

def test_fails():
    assert {"a": [1, 2, 3]} == {"a": [1, 2, 4]}

async def test_fails_in_an_event_loop():
    await asyncio.sleep(0)
    assert "left" == "right"

def test_fails_deep_in_a_call_stack():
    def down(n):
        if n == 0:
            raise ValueError("deep")
        return down(n - 1)
    down(400)

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_passes_after():
    pass
'''


def run_pytest(tmp_path: Path, source: str, *, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.no_skips_in_ci", "-p", "no:cacheprovider", "-q", "-rs"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_failing_tests_fail_alone_and_the_rest_still_runs(tmp_path: Path, ci: bool) -> None:
    result = run_pytest(tmp_path, SUITE, ci=ci)

    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert "3 failed, 2 passed, 1 xfailed" in result.stdout, result.stdout
    assert result.returncode == pytest.ExitCode.TESTS_FAILED


def test_in_ci_a_skip_fails_the_run_and_is_listed(tmp_path: Path) -> None:
    source = "import pytest\n\ndef test_ok():\n    pass\n\ndef test_skipped():\n    pytest.skip('no llama')\n"

    result = run_pytest(tmp_path, source, ci=True)

    assert result.returncode == pytest.ExitCode.TESTS_FAILED
    assert "skipped in CI, which must run everything" in result.stdout
    assert "test_suite.py::test_skipped: Skipped: no llama" in result.stdout, result.stdout


def test_outside_ci_a_skip_is_only_a_skip(tmp_path: Path) -> None:
    source = "import pytest\n\ndef test_skipped():\n    pytest.skip('no llama')\n"

    result = run_pytest(tmp_path, source, ci=False)

    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "1 skipped" in result.stdout
