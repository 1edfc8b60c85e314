"""A pytest plugin: in CI (CI set and not false) a skipped test fails the run.

A skip in CI means a missing install step (llama.cpp, the embedded model, Chromium, ...), which must fail
loudly rather than pass quietly. The rule only observes: it notes skips as their reports go by, lists them
at the end and sets the exit status when the session finishes. It never rewrites a report and has no
hookwrapper: a wrapper around report making is on the stack while pytest formats a failure, which is where
CPython 3.11.7's "AST constructor recursion depth mismatch" took a whole run down with one failing test.

Loaded by tests/conftest.py; `python -m pytest -p tests.no_skips_in_ci` loads it anywhere.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class NoSkipsInCI:
    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped.append(f"{report.nodeid}: {reason}")

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.skipped:
            terminalreporter.write_sep("=", "skipped in CI, which must run everything: failing the run", red=True)
            for line in self.skipped:
                terminalreporter.write_line(line)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.skipped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    if in_ci():
        config.pluginmanager.register(NoSkipsInCI(), "no-skips-in-ci")
