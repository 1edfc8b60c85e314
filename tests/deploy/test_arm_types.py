"""Resource bodies against the Bicep type definitions of their API versions (arm_types.py, vendored
schemas/bicep-types.json), and role assignments against Azure's built-in role table (schemas/builtin-roles.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import arm_types, bicep
from tests.deploy.bicep import parse

ROLES_FILE = Path(__file__).resolve().parent / "schemas" / "builtin-roles.json"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: str(p.relative_to(bicep.BICEP_DIR)))
def test_resource_bodies_fit_their_types(path: Path) -> None:
    assert arm_types.check_file(path) == []


def test_every_resource_type_we_declare_is_vendored_and_nothing_more() -> None:
    used = {
        f"{resource['type']}@{resource['api_version']}"
        for path in bicep.bicep_files()
        for resource in parse(path).get("resources", {}).values()
    }
    assert used == arm_types.known_resource_types(), "run tests/deploy/schemas/vendor_bicep_types.py"


BROKEN = """
param location string
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv'
  location: location
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorisation: true
    vaultUri: 'https://kv.vault.azure.net/'
    softDeleteRetentionInDays: '7'
  }
}
resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  name: 'cr'
  location: location
  properties: {
    adminUserEnabled: false
  }
}
"""


def test_the_checker_catches_what_arm_would_reject_or_ignore(tmp_path: Path) -> None:
    path = tmp_path / "broken.bicep"
    path.write_text(BROKEN, encoding="utf-8")
    errors = "\n".join(arm_types.check_file(path))
    assert "properties.enableRbacAuthorisation: no such property" in errors  # misspelt: ARM would ignore it
    assert "properties.vaultUri: read-only" not in errors  # vaultUri may be set on a vault
    assert "properties.softDeleteRetentionInDays: '7' is not a IntegerType" in errors
    assert "registry (Microsoft.ContainerRegistry/registries@2025-04-01): sku: required, missing" in errors


# ---- role assignments -----------------------------------------------------------------------------------


def roles() -> dict[str, dict[str, Any]]:
    return json.loads(ROLES_FILE.read_text(encoding="utf-8"))["roles"]


def role_variables() -> list[tuple[Path, str, str]]:
    """(file, variable, GUID) for every `var <something>RoleId = '<guid>'`."""
    found = []
    for path in bicep.bicep_files():
        for name, variable in parse(path).get("variables", {}).items():
            value = variable["value"]
            if isinstance(value, str) and GUID.fullmatch(value):
                found.append((path, name, value))
    return found


def role_assignment_ids(path: Path) -> list[Any]:
    return [
        arm_types.resource_body(resource)["properties"]["roleDefinitionId"]
        for resource in parse(path).get("resources", {}).values()
        if resource["type"] == "Microsoft.Authorization/roleAssignments"
    ]


def test_every_role_is_a_narrow_built_in_role_named_as_its_variable_says() -> None:
    table = roles()
    assert role_variables(), "no role ids found"
    for path, name, guid in role_variables():
        assert guid in table, f"{path.name}: {name} = {guid} is not a built-in role"
        role = table[guid]
        assert not role["broad"], f"{path.name}: {role['name']} grants {role['grants']}"
        spoken = re.sub(r"RoleId$", "", name).lower()
        assert role["name"].replace(" ", "").lower().endswith(spoken), (
            f"{path.name}: {name} is {role['name']}"
        )


def test_every_role_assignment_uses_a_role_variable() -> None:
    for path in bicep.bicep_files():
        variables = {name for file, name, _ in role_variables() if file == path}
        for role_id in role_assignment_ids(path):
            call = role_id["function"]
            assert call["type"] == "subscription_resource_id", f"{path.name}: {call}"
            assert call["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            assert call["parameters"]["resource_name_1"] in variables, f"{path.name}: {call}"


def test_the_llama_apps_hold_no_identity_but_the_pull_one() -> None:
    params = bicep.module_calls(bicep.MAIN)["llama"]["params"]
    assert "additionalIdentityName" not in params
    assert params["identityName"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {
                "operand_1": "appsIdentity",
                "operand_2": {
                    "operator": {
                        "type": "property_accessor",
                        "operands": {"operand_1": "outputs", "operand_2": "name"},
                    }
                },
            },
        }
    }
    registry = bicep.module_calls(bicep.MAIN)["registry"]["params"]
    assert bicep.evaluate(registry["pullPrincipalId"], bicep.main_scope()) == "<appsIdentity.principalId>"
    # The pull identity appears in no other role assignment.
    scope = bicep.main_scope()
    for symbol, call in bicep.module_calls(bicep.MAIN).items():
        if symbol == "registry":
            continue
        for name, value in call["params"].items():
            if "rincipal" in name:
                evaluated = bicep.evaluate(value, {**scope, "i": 0, "instance": {}, "account": {}})
                assert "<appsIdentity" not in json.dumps(evaluated), f"{symbol}.{name}"


def test_diagnostic_settings_cover_the_data_services() -> None:
    covered = set()
    for path in bicep.bicep_files():
        tree = parse(path)
        resources = tree.get("resources", {})
        for resource in resources.values():
            if resource["type"] == "Microsoft.Insights/diagnosticSettings":
                target = arm_types.resource_body(resource)["scope"]
                covered.add(resources[target]["type"])
    assert {
        "Microsoft.KeyVault/vaults",
        "Microsoft.DBforPostgreSQL/flexibleServers",
        "Microsoft.ContainerRegistry/registries",
        "Microsoft.CognitiveServices/accounts",
        "Microsoft.Cache/redisEnterprise",
    } <= covered
