"""azure.yaml, checked against azd's published JSON schema (vendored: tests/deploy/schemas/azure.yaml.json) and
against the files it points to."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from tests.deploy import dockerfiles
from tests.deploy.compose import load_compose

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "schemas" / "azure.yaml.json"
AZD_COMMANDS = {"provision", "deploy", "package", "publish", "restore", "build"}


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_azure_yaml_is_valid_against_azds_schema(azure_yaml: dict[str, Any]) -> None:
    assert schema_errors(azure_yaml) == []


def test_the_schema_is_the_one_azure_yaml_names_and_it_catches_mistakes(azure_yaml: dict[str, Any]) -> None:
    first_line = (REPO / "azure.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first_line.endswith("/schemas/v1.0/azure.yaml.json")
    misspelled = json.loads(json.dumps(azure_yaml))
    misspelled["services"]["gateway"]["docker"]["remotebuild"] = True
    assert schema_errors(misspelled)
    mistyped = json.loads(json.dumps(azure_yaml))
    mistyped["services"]["gateway"]["docker"]["remoteBuild"] = "yes"
    assert schema_errors(mistyped)


def test_project_name_and_infra(azure_yaml: dict[str, Any]) -> None:
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", azure_yaml["name"])
    infra = azure_yaml["infra"]
    assert infra["provider"] == "bicep" and infra["path"] == "infra/bicep"
    module = infra.get("module", "main")
    assert (REPO / infra["path"] / f"{module}.bicep").is_file()
    assert (REPO / infra["path"] / f"{module}.parameters.json").is_file()


def test_services_are_container_apps_built_from_the_repository_root(azure_yaml: dict[str, Any]) -> None:
    services = azure_yaml["services"]
    assert set(services) == {"gateway", "chat", "llama"}
    for name, service in services.items():
        assert service["host"] == "containerapp", name
        assert "image" not in service, f"{name}: built from source, not a prebuilt image"
        project = REPO / service["project"]
        docker = service["docker"]
        # azd resolves both relative to the service's project folder.
        assert (project / docker["context"]).resolve() == REPO, f"{name}: context is not the repository root"
        assert (project / docker["path"]).resolve() == dockerfiles.DOCKERFILES[name], name


def test_compose_builds_the_same_images(azure_yaml: dict[str, Any]) -> None:
    compose_dockerfiles = {
        (REPO / service["build"]["dockerfile"]).resolve()
        for service in load_compose()["services"].values()
        if "build" in service
    }
    azd_dockerfiles = {
        (REPO / service["project"] / service["docker"]["path"]).resolve()
        for service in azure_yaml["services"].values()
    }
    assert compose_dockerfiles == azd_dockerfiles


def test_up_provisions_again_after_deploying(azure_yaml: dict[str, Any]) -> None:
    steps = [step["azd"] for step in azure_yaml["workflows"]["up"]["steps"]]
    assert all(isinstance(step, str) and step.split()[0] in AZD_COMMANDS for step in steps)
    # The second provision hands the llama image azd just pushed to every llama.cpp app.
    assert [step.split()[0] for step in steps] == ["provision", "deploy", "provision"]
    assert "--all" in steps[1]
