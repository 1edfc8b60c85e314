"""main.parameters.json, loaded the way azd >= 1.23.4 loads it (tests/deploy/azd_params.py): valid JSON before
any substitution, each parameter substituted on its own, arrays and objects parsed from their string."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy import azd_params, bicep
from tests.deploy.azd_params import ParametersFileError
from tests.deploy.bicep import MAIN, parse

PARAMETERS_FILE = bicep.BICEP_DIR / "main.parameters.json"
UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*")
# The first azd release that parses a quoted "${VAR}" of an array or object parameter as JSON (PR #6694).
AZD_ARRAY_PARAMETERS = (1, 23, 4)


def declared() -> dict[str, dict[str, Any]]:
    return parse(MAIN)["parameters"]


def types() -> dict[str, str]:
    return {name: param["type"] for name, param in declared().items()}


def text() -> str:
    return PARAMETERS_FILE.read_text(encoding="utf-8")


def azd_load(env: dict[str, str]) -> dict[str, Any]:
    """What azd passes to ARM: the file's values converted like azd, the template defaults for the rest."""
    loaded = azd_params.load(text(), types(), env)
    result = {}
    for name, param in declared().items():
        value = (
            azd_params.file_value(param["type"], loaded[name], param.get("default"))
            if name in loaded
            else None
        )
        result[name] = param.get("default") if value is None else value
    return result


def test_the_raw_file_is_json_before_any_substitution() -> None:
    # azd unmarshals the file first; a bare ${VAR=[]} stops `azd up` before any Azure call.
    json.loads(text())


def test_every_parameter_maps_to_a_declared_one_and_every_required_one_is_mapped() -> None:
    mapped = json.loads(text())["parameters"]
    params = declared()
    assert set(mapped) <= set(params), f"not parameters of main.bicep: {sorted(set(mapped) - set(params))}"
    for name, param in params.items():
        generated = (bicep.decorators(param).get("metadata") or {}).get("azd", {}).get("type") == "generate"
        if generated:
            assert "secure" in bicep.decorators(param), f"{name}: a generated value must be @secure()"
            assert name not in mapped, f"{name}: azd generates it; the parameters file must not set it"
        elif param.get("default") is None:
            assert name in mapped, f"{name} has no default and no mapping in main.parameters.json"
    references = azd_params.references(text())
    assert all(UPPER_SNAKE.fullmatch(name) for name in references)
    assert {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID"} <= set(references)


def test_each_value_is_one_quoted_reference() -> None:
    """A string holding exactly one ${…}: what azd substitutes per parameter without surprises."""
    for name, entry in json.loads(text())["parameters"].items():
        assert set(entry) == {"value"}, name
        assert isinstance(entry["value"], str) and re.fullmatch(r"\$\{[^}]*\}", entry["value"]), name


def test_with_an_empty_environment_azd_passes_the_template_defaults() -> None:
    env = {"AZURE_ENV_NAME": "dev", "AZURE_LOCATION": "eastus", "AZURE_PRINCIPAL_ID": ""}
    values = azd_load(env)
    for name, param in declared().items():
        if name in {"environmentName", "location"} or param.get("default") is None:
            continue
        assert values[name] == param["default"], f"{name}: {values[name]!r} != {param['default']!r}"
    assert values["environmentName"] == "dev" and values["location"] == "eastus"


def test_the_defaults_in_the_file_are_the_template_defaults_and_valid() -> None:
    """`${VAR=default}` with VAR set to "" gives the file's default: it must be the template's."""
    references = azd_params.references(text())
    blank = {name: "" for name in references}
    loaded = azd_params.load(text(), types(), blank)
    for name, param in declared().items():
        if name not in loaded:
            continue
        value = azd_params.file_value(param["type"], loaded[name], param.get("default"))
        if value is None:
            continue  # "" for a string: the template default applies
        if param.get("default") is not None:
            assert value == param["default"], f"{name}: file default {value!r} != {param['default']!r}"
        rules = bicep.decorators(param)
        if "allowed" in rules:
            assert value in rules["allowed"], name
        if "min_value" in rules:
            assert value >= rules["min_value"], name
        if "max_value" in rules:
            assert value <= rules["max_value"], name


def test_values_from_the_environment_reach_the_template_with_its_types() -> None:
    instances = [{"name": "eastus", "location": "eastus"}, {"name": "sweden", "location": "swedencentral"}]
    env = {
        "AZURE_ENV_NAME": "dev",
        "AZURE_LOCATION": "eastus",
        "AZURE_OPENAI_INSTANCES": json.dumps(instances),
        "AZURE_OPENAI_CAPACITY": "50",
        "AZURE_GATEWAY_EXTERNAL_INGRESS": "true",
        "SERVICE_GATEWAY_IMAGE_NAME": "cr.example/gw:1",
    }
    values = azd_load(env)
    assert values["openAiInstances"] == instances
    assert values["openAiCapacity"] == 50
    assert values["gatewayExternalIngress"] is True
    assert values["gatewayImageName"] == "cr.example/gw:1"


@pytest.mark.parametrize("name", [n for n, t in types().items() if t in ("array", "object")])
def test_array_and_object_parameters_are_quoted_references_with_a_json_default(name: str) -> None:
    value = json.loads(text())["parameters"][name]["value"]
    default = azd_params.references(value)
    ((variable, fallback),) = default.items()
    assert fallback is not None, f"{name}: ${{{variable}}} without a default"
    assert isinstance(json.loads(fallback), list if types()[name] == "array" else dict)


def test_an_azd_that_parses_quoted_arrays_is_required(azure_yaml: dict[str, Any]) -> None:
    quoted_complex = any(
        t in ("array", "object") for n, t in types().items() if n in json.loads(text())["parameters"]
    )
    required = azure_yaml["requiredVersions"]["azd"]
    match = re.fullmatch(r">= ?(\d+)\.(\d+)\.(\d+)", required)
    assert match, required
    if quoted_complex:
        assert tuple(int(part) for part in match.groups()) >= AZD_ARRAY_PARAMETERS


# ---- the emulation itself: what it must reject, as azd does ----------------------------------------------


def test_emulation_rejects_an_unquoted_reference() -> None:
    broken = '{"parameters": {"openAiInstances": {"value": ${AZURE_OPENAI_INSTANCES=[]}}}}'
    with pytest.raises(ParametersFileError, match="unmarshalling"):
        azd_params.load(broken, {"openAiInstances": "array"}, {})


def test_emulation_rejects_an_array_that_is_not_json() -> None:
    quoted = '{"parameters": {"openAiInstances": {"value": "${AZURE_OPENAI_INSTANCES=[]}"}}}'
    with pytest.raises(ParametersFileError, match="not valid JSON"):
        azd_params.load(quoted, {"openAiInstances": "array"}, {"AZURE_OPENAI_INSTANCES": "eastus"})
    assert azd_params.load(quoted, {"openAiInstances": "array"}, {}) == {"openAiInstances": []}


def test_emulation_applies_a_default_to_an_empty_value_like_drone_envsubst() -> None:
    assert azd_params.envsubst("${A=x}", {"A": ""}).text == "x"
    assert azd_params.envsubst("${A=x}", {}).text == "x"
    assert azd_params.envsubst("${A=x}", {}).has_unset
    assert azd_params.envsubst("${A=x}", {"A": "y"}).text == "y"
    assert azd_params.envsubst("${A}", {}).text == ""


def test_emulation_leaves_out_an_unset_empty_string() -> None:
    entry = '{"parameters": {"image": {"value": "${SERVICE_X_IMAGE_NAME=}"}}}'
    assert azd_params.load(entry, {"image": "string"}, {}) == {}
    assert azd_params.load(entry, {"image": "string"}, {"SERVICE_X_IMAGE_NAME": "a/b:1"}) == {
        "image": "a/b:1"
    }


def test_the_readme_walkthrough_names_every_setting_an_azd_user_can_change() -> None:
    readme = (bicep.REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### On Azure Container Apps with azd") :]
    section = section[: section.index("\n## ")]
    internal = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID"}
    for variable in set(azd_params.references(text())) - internal:
        if variable.startswith("SERVICE_"):
            continue  # azd's own, written by azd
        assert f"`{variable}`" in section or variable in section, (
            f"{variable} is not in the README's azd walkthrough"
        )
    assert "1.23.4" in section and "remoteBuild" in section
