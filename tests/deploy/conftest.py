"""Fixtures of the deployment tests: everything offline, with the real parsers (Compose JSON schema,
pycep-parser, dockerfile-parse, checkov) and the apps' own settings classes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import apps, bicep
from tests.deploy.dockerfiles import DOCKERFILES

REPO = Path(__file__).resolve().parents[2]
CHECKOV = REPO / ".venv" / "tools" / "checkov" / "bin" / "checkov"
CHECKOV_CONFIG = REPO / "infra" / "checkov.yaml"


@pytest.fixture(scope="session")
def app_specs() -> dict[str, apps.App]:
    return apps.all_apps()


@pytest.fixture(scope="session")
def azure_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def checkov_report() -> list[dict[str, Any]]:
    """One checkov run over every Bicep file and Dockerfile, without the skip list (the test applies it)."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run scripts/bootstrap.sh"
    config = yaml.safe_load(CHECKOV_CONFIG.read_text(encoding="utf-8"))
    files = [*bicep.bicep_files(), *DOCKERFILES.values()]
    command = [str(CHECKOV), "--output", "json", "--quiet", "--compact", "--skip-download"]
    command += ["--framework", *config["framework"]]
    for path in files:
        command += ["--file", str(path.relative_to(REPO))]
    # BC_SKIP_MAPPING: don't fetch the guideline mapping from the network (there is none here).
    environment = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode in (0, 1), f"checkov failed to run:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    return report if isinstance(report, list) else [report]
