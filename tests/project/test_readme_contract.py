"""The README is part of the product: its commands and its configuration table must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.settings import BackendConfig, GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_gateway_setting_is_documented():
    for name in GatewaySettings.model_fields:
        assert f"`GATEWAY_{name.upper()}`" in README, f"GATEWAY_{name.upper()} is missing from the README"
    assert "`GATEWAY_CONFIG_FILE`" in README


def test_every_backend_field_is_documented():
    table = README.split("A backend:", 1)[1]
    for name in BackendConfig.model_fields:
        assert f"| `{name}` |" in table, name


def test_no_documented_gateway_setting_is_fictional():
    documented = set(re.findall(r"`GATEWAY_([A-Z_]+)`", README))
    real = {name.upper() for name in GatewaySettings.model_fields} | {"CONFIG_FILE"}
    assert documented <= real, documented - real


def test_ci_runs_exactly_the_readme_test_command():
    assert "make test" in README and "make up" in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in ci.splitlines() if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export "))]
    assert commands == ["make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test:", makefile, re.MULTILINE) and re.search(r"^up:", makefile, re.MULTILINE)


def test_every_chat_app_setting_is_documented():
    from chat_client.settings import ChatSettings

    table = README.split("## The chat app", 1)[1]
    for field in ChatSettings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            assert f"| `{alias}` |" in table, f"{alias} is missing from the README's chat app table"
