"""The container apps as ARM would create them, evaluated from main.bicep through container-app.bicep, in the
cases azd runs into:

- first provision: no image yet (SERVICE_<NAME>_IMAGE_NAME empty, SERVICE_<NAME>_RESOURCE_EXISTS false): the
  public placeholder, which listens on port 80 and has no health endpoint, so the ingress must target 80 and
  no custom probe may be set, or the revision never becomes healthy and the provision hangs;
- a provision after a deploy, from any machine: the app exists, and keeps the image it runs (llama-2..N take
  llama-1's), with its real port and probes;
- an app created anew while azd knows an image for it: that image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy import bicep, dockerfiles
from tests.deploy.apps import App
from tests.deploy.bicep import MAIN, evaluate, ns, parse, scope_of

CONTAINER_APP = (bicep.BICEP_DIR / "modules" / "container-app.bicep").resolve()
APPS = {"gateway": "gateway", "chat": "chat", "llama": "llama"}  # main.bicep symbol -> image
TOKEN = "abc123"


def placeholder() -> tuple[str, int]:
    variables = parse(CONTAINER_APP)["variables"]
    return variables["placeholderImage"]["value"], variables["placeholderPort"]["value"]


def running(image: str) -> Any:
    """An existing app as `existing` reads it: properties.template.containers[0].image."""
    return ns(properties=ns(template=ns(containers=[ns(image=image)])))


def app_resource(
    symbol: str, index: int = 0, running_image: str | None = None, **main: Any
) -> dict[str, Any]:
    """(properties of the container app, its imageName output) for main.bicep's call `symbol` (item `index`)."""
    call = bicep.module_calls(MAIN)[symbol]
    assert call["path"] == CONTAINER_APP
    scope = bicep.main_scope(resourceToken=TOKEN, **main)
    params = {name: evaluate(value, {**scope, "i": index}) for name, value in call["params"].items()}
    module_scope = scope_of(
        CONTAINER_APP,
        **params,
        identity=ns(id="/identities/apps"),
        running=running(running_image) if running_image is not None else None,
    )
    app = parse(CONTAINER_APP)["resources"]["app"]["config"]
    output = parse(CONTAINER_APP)["outputs"]["imageName"]["value"]
    return {
        "properties": evaluate(app["properties"], module_scope),
        "imageName": evaluate(output, module_scope),
    }


def container(properties: dict[str, Any]) -> dict[str, Any]:
    (only,) = properties["template"]["containers"]
    return only


def exposed_port(image: str) -> int:
    stage = dockerfiles.final_stage(dockerfiles.DOCKERFILES[image])
    (port,) = {int(p.split("/")[0]) for value in dockerfiles.values(stage, "EXPOSE") for p in value.split()}
    return port


@pytest.mark.parametrize("symbol", sorted(APPS))
def test_first_provision_runs_the_placeholder_on_its_port_without_probes(symbol: str) -> None:
    image, port = placeholder()
    created = app_resource(symbol)
    assert container(created["properties"])["image"] == image
    assert created["properties"]["configuration"]["ingress"]["targetPort"] == port
    assert container(created["properties"])["probes"] == []
    assert container(created["properties"])["args"] is None, "the placeholder knows none of our arguments"
    assert created["imageName"] == image


@pytest.mark.parametrize("symbol", sorted(APPS))
def test_a_deployed_app_keeps_its_image_port_and_probes(symbol: str, app_specs: dict[str, App]) -> None:
    exists = {
        f"{symbol}Exists": True,
        f"{symbol}ImageName": "",
    }  # provision from a machine that never deployed
    deployed = app_resource(symbol, running_image=f"cr{TOKEN}.azurecr.io/{symbol}:azd-deploy-1", **exists)
    properties = deployed["properties"]
    port = properties["configuration"]["ingress"]["targetPort"]
    assert (
        container(properties)["image"]
        == deployed["imageName"]
        == f"cr{TOKEN}.azurecr.io/{symbol}:azd-deploy-1"
    )
    assert port == exposed_port(APPS[symbol]) == app_specs[APPS[symbol]].port
    probes = container(properties)["probes"]
    assert probes
    for probe in probes:
        action = probe.get("httpGet") or probe.get("tcpSocket")
        assert action["port"] == port, (
            f"{symbol}: {probe['type']} probe on {action['port']}, ingress on {port}"
        )


@pytest.mark.parametrize("symbol", sorted(APPS))
def test_an_existing_app_is_not_rolled_back_to_an_older_image_name(symbol: str) -> None:
    stale = {f"{symbol}Exists": True, f"{symbol}ImageName": f"cr{TOKEN}.azurecr.io/{symbol}:azd-deploy-0"}
    deployed = app_resource(symbol, running_image=f"cr{TOKEN}.azurecr.io/{symbol}:azd-deploy-1", **stale)
    assert container(deployed["properties"])["image"].endswith(":azd-deploy-1")


@pytest.mark.parametrize("symbol", sorted(APPS))
def test_an_app_created_anew_takes_the_image_azd_knows(symbol: str) -> None:
    created = app_resource(symbol, **{f"{symbol}ImageName": f"cr{TOKEN}.azurecr.io/{symbol}:azd-deploy-3"})
    assert container(created["properties"])["image"].endswith(":azd-deploy-3")
    assert created["properties"]["configuration"]["ingress"]["targetPort"] == exposed_port(APPS[symbol])


def test_an_existing_placeholder_still_gets_port_80() -> None:
    """Provisioned, never deployed (say `azd provision` twice): still the placeholder, still its port."""
    image, port = placeholder()
    again = app_resource("gateway", running_image=image, gatewayExists=True)
    assert again["properties"]["configuration"]["ingress"]["targetPort"] == port
    assert container(again["properties"])["probes"] == []


def test_every_llama_app_runs_llama_1s_image() -> None:
    params = bicep.module_calls(MAIN)["llama"]["params"]
    scope = bicep.main_scope(resourceToken=TOKEN)
    first = evaluate(params["name"], {**scope, "i": 0})
    for index in range(1, 4):
        assert evaluate(params["imageSourceAppName"], {**scope, "i": index}) == first
        assert evaluate(params["exists"], {**scope, "i": index, "llamaExists": True}) is True
        assert evaluate(params["serviceName"], {**scope, "i": index}) == ""
    assert evaluate(params["imageSourceAppName"], {**scope, "i": 0}) == ""
    deployed = app_resource("llama", index=2, running_image="cr/llama:azd-deploy-7", llamaExists=True)
    assert container(deployed["properties"])["image"] == "cr/llama:azd-deploy-7"


def test_each_llama_app_is_one_replica_with_no_scale_rule() -> None:
    """One replica, one KV cache: the gateway's affinity to llama-N reaches the cache it means."""
    properties = app_resource("llama", running_image="cr/llama:1", llamaExists=True)["properties"]
    scale = properties["template"]["scale"]
    assert scale["minReplicas"] == scale["maxReplicas"] == 1
    assert scale["rules"] == []


@pytest.mark.parametrize("symbol", ["gateway", "chat"])
def test_scalable_apps_keep_their_http_rule(symbol: str) -> None:
    scale = app_resource(symbol)["properties"]["template"]["scale"]
    assert scale["minReplicas"] < scale["maxReplicas"]
    assert [rule["name"] for rule in scale["rules"]] == ["http-concurrency"]


def test_image_outputs_reach_azd_for_every_service(azure_yaml: dict[str, Any]) -> None:
    outputs = parse(MAIN)["outputs"]
    for service in azure_yaml["services"]:
        assert f"SERVICE_{service.upper()}_IMAGE_NAME" in outputs


def test_parameters_file_maps_the_resource_exists_flags(azure_yaml: dict[str, Any]) -> None:
    text = (bicep.BICEP_DIR / "main.parameters.json").read_text(encoding="utf-8")
    for service in azure_yaml["services"]:
        assert f"${{SERVICE_{service.upper()}_RESOURCE_EXISTS=false}}" in text
        assert f"${{SERVICE_{service.upper()}_IMAGE_NAME=}}" in text


def test_the_placeholder_is_what_the_module_says() -> None:
    image, port = placeholder()
    assert image.startswith("mcr.microsoft.com/") and port == 80
    assert Path(CONTAINER_APP).read_text(encoding="utf-8").count(image) == 1
