"""Shared test set-up: no configuration leaks in from the environment of whoever runs the tests."""

from __future__ import annotations

import os

import pytest

from gateway.logs import configure_logging

configure_logging("debug")

# In CI a skipped test fails the run; see that module for why it is a plugin and not a hook here.
pytest_plugins = ["tests.no_skips_in_ci"]


@pytest.fixture(autouse=True)
def _clean_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
