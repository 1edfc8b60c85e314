"""infra/bicep: parses, modules wired to their declared parameters, main.parameters.json in step with
main.bicep, azd's conventions (tags, outputs), and every app configured with exactly what it reads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import azd_params, bicep, dockerfiles, llama_server_cli
from tests.deploy.apps import App
from tests.deploy.bicep import MAIN, evaluate, ns, parse, scope_of
from tests.deploy.llama_server_cli import ServerCommand

REPO = Path(__file__).resolve().parents[2]
PARAMETERS_FILE = bicep.BICEP_DIR / "main.parameters.json"
CONTAINER_APP = (bicep.BICEP_DIR / "modules" / "container-app.bicep").resolve()
APP_MODULES = {"gateway": "gateway", "chat": "chat", "llama": "llama"}  # main.bicep symbol -> app
# Types whose newest API version is a preview or older than 2022 (every Azure template uses these).
NEWEST_IS_OLD_OR_PREVIEW = {
    "Microsoft.Insights/diagnosticSettings@2021-05-01-preview",  # categoryGroup needs it; the GA is 2016
    "Microsoft.Insights/components@2020-02-02",  # Application Insights' newest GA version
}
UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*")


# ---- parsing and wiring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: str(p.relative_to(bicep.BICEP_DIR)))
def test_parses(path: Path) -> None:
    tree = parse(path)
    assert tree.get("resources") or tree.get("modules") or tree.get("outputs")


def declared_params(path: Path) -> dict[str, dict[str, Any]]:
    return parse(path).get("parameters", {})


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: str(p.relative_to(bicep.BICEP_DIR)))
def test_modules_get_exactly_their_parameters(path: Path) -> None:
    for symbol, call in bicep.module_calls(path).items():
        assert call["path"].exists(), f"{symbol}: {call['path']} does not exist"
        declared = declared_params(call["path"])
        passed = set(call["params"])
        assert passed <= set(declared), f"{symbol}: unknown parameters {sorted(passed - set(declared))}"
        required = {name for name, param in declared.items() if param.get("default") is None}
        assert required <= passed, f"{symbol}: required parameters missing {sorted(required - passed)}"


def test_main_is_subscription_scoped_with_a_tagged_resource_group() -> None:
    tree = parse(MAIN)
    assert tree["globals"]["scope"]["value"] == "subscription"
    groups = [r for r in tree["resources"].values() if r["type"] == "Microsoft.Resources/resourceGroups"]
    assert len(groups) == 1
    scope = scope_of(MAIN, environmentName="dev", location="eastus")
    assert evaluate(groups[0]["config"]["tags"], scope) == {"azd-env-name": "dev"}
    assert (
        "uniqueString" in (MAIN.read_text(encoding="utf-8").split("var resourceToken", 1)[1].splitlines()[0])
    )


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: str(p.relative_to(bicep.BICEP_DIR)))
def test_resource_api_versions_are_stable(path: Path) -> None:
    for symbol, resource in parse(path).get("resources", {}).items():
        version = resource["api_version"]
        if f"{resource['type']}@{version}" in NEWEST_IS_OLD_OR_PREVIEW:
            continue
        assert re.fullmatch(r"20\d\d-\d\d-\d\d", version), f"{symbol}: {resource['type']}@{version}"
        assert int(version[:4]) >= 2022, f"{symbol}: {resource['type']}@{version} is old"


def test_outputs_are_upper_snake_and_include_what_azd_needs() -> None:
    outputs = parse(MAIN)["outputs"]
    assert all(UPPER_SNAKE.fullmatch(name) for name in outputs), sorted(outputs)
    assert {
        "AZURE_CONTAINER_REGISTRY_ENDPOINT",
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "AZURE_CHAT_URL",
        "AZURE_GATEWAY_URL",
    } <= set(outputs)


# ---- azd services ---------------------------------------------------------------------------------------


def app_calls() -> dict[str, dict[str, Any]]:
    calls = bicep.module_calls(MAIN)
    return {symbol: calls[symbol] for symbol in APP_MODULES}


def test_container_app_module_tags_the_azd_service() -> None:
    scope = scope_of(CONTAINER_APP, serviceName="chat", tags={"azd-env-name": "dev"})
    app = parse(CONTAINER_APP)["resources"]["app"]
    assert evaluate(app["config"]["tags"], scope) == {"azd-env-name": "dev", "azd-service-name": "chat"}
    untagged = scope_of(CONTAINER_APP, tags={"azd-env-name": "dev"})
    assert evaluate(app["config"]["tags"], untagged) == {"azd-env-name": "dev"}


def find_keys(tree: Any, key: str) -> int:
    if isinstance(tree, dict):
        return sum((k == key) + find_keys(v, key) for k, v in tree.items())
    if isinstance(tree, list):
        return sum(find_keys(item, key) for item in tree)
    return 0


def test_azd_service_tags_match_azure_yaml(azure_yaml: dict[str, Any]) -> None:
    tagged: dict[str, int] = {}
    scope = scope_of(MAIN)
    for call in bicep.module_calls(MAIN).values():
        if call["path"] != CONTAINER_APP:
            continue
        indexes = range(scope["llamaBackendCount"]) if call["loop"] else [None]
        for i in indexes:
            service = evaluate(call["params"].get("serviceName", ""), {**scope, "i": i})
            if service:
                tagged[service] = tagged.get(service, 0) + 1
    assert set(tagged) == set(azure_yaml["services"])
    assert all(count == 1 for count in tagged.values()), f"one resource per service tag: {tagged}"
    # Nothing but the container-app module writes the tag (azd refuses a second tagged resource).
    for path in bicep.bicep_files():
        expected = 1 if path.resolve() == CONTAINER_APP else 0
        assert find_keys(parse(path), "'azd-service-name'") == expected, path.name


# ---- the apps' configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", sorted(APP_MODULES))
def test_sets_what_the_app_needs_and_nothing_it_does_not_read(symbol: str, app_specs: dict[str, App]) -> None:
    app = app_specs[APP_MODULES[symbol]]
    params = app_calls()[symbol]["params"]
    env = bicep.app_env(symbol)
    names = [item["name"] for item in env]
    assert len(names) == len(set(names)), f"{symbol}: a variable is set twice"
    unread = set(names) - app.reads
    assert not unread, f"{symbol} sets variables its app never reads: {sorted(unread)}"
    image_env = dockerfiles.env(dockerfiles.final_stage(dockerfiles.DOCKERFILES[APP_MODULES[symbol]]))
    missing = app.required - set(names) - set(image_env)
    assert not missing, f"{symbol} leaves required variables unset: {sorted(missing)}"
    secrets = {secret["name"]: secret for secret in params.get("secrets", [])}
    for item in env:
        assert ("value" in item) != ("secretRef" in item), item["name"]
        if "secretRef" in item:
            assert item["secretRef"] in secrets, f"{symbol}: {item['name']} refers to an undeclared secret"
    for secret in secrets.values():
        assert set(secret) == {"name", "keyVaultUrl", "identity"}, "secrets come from Key Vault, by identity"


def literal_env(symbol: str, **bindings: Any) -> dict[str, Any]:
    """The app's non-secret variables, with made-up outputs for the modules they come from."""
    return {item["name"]: item["value"] for item in bicep.app_env(symbol, **bindings) if "value" in item}


@pytest.mark.parametrize("symbol", ["gateway", "chat"])
def test_apps_listen_on_all_interfaces_on_their_target_port(symbol: str) -> None:
    scope = scope_of(MAIN)
    prefix = {"gateway": "GATEWAY_", "chat": "CHAT_"}[symbol]
    env = literal_env(symbol, gateway=ns(outputs=ns(uri="https://gw.internal.example")))
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert int(env[f"{prefix}PORT"]) == evaluate(app_calls()[symbol]["params"]["targetPort"], scope)


def test_chat_settings_load_from_the_template(
    app_specs: dict[str, App], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat_client.settings import load_settings

    gateway_uri = "https://ca-gateway-abc.internal.example.azurecontainerapps.io"
    env = chat_env_with_made_up_outputs(gateway_uri)
    secrets = {
        "CHAT_SESSION_KEY": derived_session_key(
            generate_like_azd(param_generate_config("chatSessionSecret"))
        ),
        "AZURE_OPENAI_API_KEY": generate_like_azd(param_generate_config("gatewayApiKey")),
    }
    for name in app_specs["chat"].reads:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**env, **secrets}.items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings()
    assert settings.openai_host == "azure_custom"
    assert settings.azure_openai_custom_url == f"{gateway_uri}/openai"
    assert settings.chat_model == llama_args(2).alias
    assert settings.resolved_database_url == (
        f"postgresql+asyncpg://{CHAT_IDENTITY_NAME}@{POSTGRES_FQDN}:5432/chat?ssl=verify-full"
    )
    assert settings.database_azure_auth is True


def test_gateway_literal_settings() -> None:
    identity = ns(outputs=ns(clientId="00000000-0000-0000-0000-000000000001", principalId="oid"))
    env = literal_env("gateway", gatewayIdentity=identity)
    assert env["GATEWAY_LOG_LEVEL"] in {"debug", "info", "warning", "error"}
    assert env["AZURE_CLIENT_ID"] == "00000000-0000-0000-0000-000000000001"


def gateway_backends_json(
    llama_count: int,
    instances: list[dict[str, str]],
    existing: list[dict[str, str]] | None = None,
    location: str = "",
) -> str:
    """Evaluate gateway-backends.bicep the way main.bicep calls it, with made-up addresses."""
    existing = existing or []
    path = bicep.module_calls(MAIN)["gatewayBackends"]["path"]
    main_scope = scope_of(
        MAIN,
        llamaBackendCount=llama_count,
        openAiInstances=instances,
        openAiExisting=existing,
        openAiLocation=location,
    )
    passed = bicep.module_calls(MAIN)["gatewayBackends"]["params"]
    fqdns = [f"ca-llama-{i + 1}-abc.internal.example.azurecontainerapps.io" for i in range(llama_count)]
    created = main_scope["openAiCreated"]
    endpoints = [f"https://oai-{inst['name']}-abc.openai.azure.com/" for inst in created]
    existing_endpoints = [f"https://{account['accountName']}.openai.azure.com/" for account in existing]
    module_outputs = {"llamaFqdns", "openAiEndpoints", "openAiExistingEndpoints"}
    params = {
        name: evaluate(value, main_scope) for name, value in passed.items() if name not in module_outputs
    }
    scope = scope_of(
        path,
        llamaFqdns=fqdns,
        openAiEndpoints=endpoints,
        openAiExistingEndpoints=existing_endpoints,
        **params,
    )
    return evaluate(parse(path)["outputs"]["json"]["value"], scope)


def test_gateway_backends_from_the_template_are_valid_gateway_settings() -> None:
    from gateway.settings import BackendKind, GatewaySettings

    instances = [{"name": "eastus", "location": "eastus"}, {"name": "sweden", "location": "swedencentral"}]
    settings = GatewaySettings(backends=gateway_backends_json(3, instances), host="0.0.0.0")
    names = [backend.name for backend in settings.backends]
    assert names == ["llama-1", "llama-2", "llama-3", "aoai-eastus", "aoai-sweden"]
    for backend in settings.backends[:3]:
        assert backend.kind is BackendKind.LLAMA_SERVER
        assert backend.url.startswith("https://") and backend.url.endswith(".azurecontainerapps.io/v1")
        # Its slots are read from the server (/props): a number here could only disagree with --parallel.
        assert backend.max_concurrency is None and backend.priority == 0
    for backend in settings.backends[3:]:
        assert backend.kind is BackendKind.AZURE
        assert backend.api_key is None, "Azure OpenAI is reached with the managed identity, never a key"
        assert backend.deployment == scope_of(MAIN)["openAiDeploymentName"]
        assert backend.priority > 0
    only_llama = GatewaySettings(backends=gateway_backends_json(2, []), host="0.0.0.0")
    assert [b.name for b in only_llama.backends] == ["llama-1", "llama-2"]


def test_azure_openai_created_in_a_region_and_brought_along_become_backends() -> None:
    from gateway.settings import BackendKind, GatewaySettings

    existing = [{"name": "prod", "resourceGroup": "rg-ai", "accountName": "my-aoai", "deployment": "gpt-4.1"}]
    backends = gateway_backends_json(1, [], existing=existing, location="swedencentral")
    settings = GatewaySettings(backends=backends, host="0.0.0.0")
    assert [b.name for b in settings.backends] == ["llama-1", "aoai-swedencentral", "aoai-prod"]
    region, prod = settings.backends[1:]
    assert region.kind is prod.kind is BackendKind.AZURE
    assert region.deployment == scope_of(MAIN)["openAiDeploymentName"]
    assert prod.deployment == "gpt-4.1" and prod.url.rstrip("/") == "https://my-aoai.openai.azure.com"
    assert region.api_key is None and prod.api_key is None
    # The role for the gateway is assigned in the account's own resource group.
    call = bicep.module_calls(MAIN)["openAiExistingAccess"]
    assert call["loop"] is not None
    scope_call = parse(MAIN)["modules"]["openAiExistingAccess"]["config"]["config"]["scope"]["function"]
    assert scope_call["type"] == "resource_group"
    arguments = [
        evaluate(a, {"account": existing[0]}) for a in scope_call["parameters"].values() if a is not None
    ]
    assert arguments == ["rg-ai"]


def test_the_openai_region_list_offers_only_real_regions_and_none() -> None:
    allowed = bicep.decorators(declared_params(MAIN)["openAiLocation"])["allowed"]
    assert allowed[0] == "" and len(allowed) == len(set(allowed)) > 10
    assert all(re.fullmatch(r"[a-z]+[0-9]?", region) for region in allowed[1:])
    metadata = bicep.decorators(declared_params(MAIN)["openAiLocation"])["metadata"]["azd"]
    model = scope_of(MAIN)["openAiModelName"]
    assert metadata["type"] == "location"
    assert metadata["usageName"] == [f"OpenAI.GlobalStandard.{model},{scope_of(MAIN)['openAiCapacity']}"]


def walk(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from walk(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from walk(value)


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: str(p.relative_to(bicep.BICEP_DIR)))
def test_no_construct_bicep_or_checkov_rejects(path: Path) -> None:
    """A `for` inside a function call is Bicep error BCP138; a lambda is valid Bicep that checkov cannot parse."""
    for node in walk(parse(path)):
        function = node.get("function")
        if isinstance(function, dict):
            for argument in (function.get("parameters") or {}).values():
                assert not (isinstance(argument, dict) and "loop_type" in argument), (
                    f"{path.name}: for in a call"
                )
        assert node.get("type") != "lambda_expression", f"{path.name}: a lambda (checkov cannot parse it)"


def llama_args(cores: int, parallel: int | None = None) -> ServerCommand:
    """llama-server's command line in a llama app: the image's ENTRYPOINT, then the app's args (in place of
    the image's CMD)."""
    overrides = {"llamaCpuCores": cores} | ({} if parallel is None else {"llamaParallel": parallel})
    scope = scope_of(MAIN, **overrides)
    args = [str(word) for word in evaluate(app_calls()["llama"]["params"]["args"], scope)]
    return llama_server_cli.image_command(args)


def test_llama_arguments_are_accepted_by_llama_server() -> None:
    from backends.llamacpp.llama_server import DEFAULT_CTX_PER_SLOT

    allowed = bicep.decorators(declared_params(MAIN)["llamaCpuCores"])["allowed"]
    for cores in allowed:
        args = llama_args(cores)
        assert args.threads == cores
        assert args.parallel == scope_of(MAIN)["llamaParallel"]
        assert args.host == "0.0.0.0"
        assert args.port == evaluate(app_calls()["llama"]["params"]["targetPort"], scope_of(MAIN))
        assert (
            args.alias == literal_env("chat", gateway=ns(outputs=ns(uri="x")))["AZURE_OPENAI_CHAT_DEPLOYMENT"]
        )
    # Every slot gets the context a local llama-server's does, whatever the slot count.
    limits = bicep.decorators(declared_params(MAIN)["llamaParallel"])
    for parallel in range(limits["min_value"], limits["max_value"] + 1):
        args = llama_args(2, parallel)
        assert args.parallel == parallel and args.ctx_size == parallel * DEFAULT_CTX_PER_SLOT


# ---- resources, probes and scaling of the apps ----------------------------------------------------------

CONSUMPTION_CPUS = [x / 4 for x in range(1, 17)]  # 0.25 .. 4 vCPU, memory 2 GiB per vCPU


@pytest.mark.parametrize("symbol", sorted(APP_MODULES))
def test_cpu_and_memory_are_a_valid_consumption_size(symbol: str) -> None:
    cores_choices = bicep.decorators(declared_params(MAIN)["llamaCpuCores"])["allowed"]
    for cores in cores_choices if symbol == "llama" else [None]:
        scope = scope_of(MAIN, **({"llamaCpuCores": cores} if cores else {}))
        params = app_calls()[symbol]["params"]
        cpu = float(evaluate(params["cpu"], scope))
        memory = evaluate(params["memory"], scope)
        assert cpu in CONSUMPTION_CPUS, f"{symbol}: cpu {cpu}"
        assert memory == f"{cpu * 2:g}Gi", f"{symbol}: {cpu} vCPU needs {cpu * 2:g}Gi, not {memory}"


@pytest.mark.parametrize("symbol", sorted(APP_MODULES))
def test_replica_bounds_and_ingress(symbol: str) -> None:
    scope = scope_of(MAIN)
    params = app_calls()[symbol]["params"]
    low, high = evaluate(params["minReplicas"], scope), evaluate(params["maxReplicas"], scope)
    assert 1 <= low <= high
    assert evaluate(params["concurrentRequests"], scope) >= 1
    external = evaluate(params["external"], scope)
    assert external is {"chat": True, "gateway": False, "llama": False}[symbol]


async def probe_paths(symbol: str) -> set[str]:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    setup = {"gateway": "gateway.routes", "chat": "chat_client.routes"}[symbol]
    module = __import__(setup, fromlist=["setup_routes"])
    app = web.Application()
    if symbol == "gateway":
        from gateway.guard import Guard
        from gateway.routes import NO_ROUTE

        module.setup_routes(app, Guard(()))
    else:
        NO_ROUTE = "(the chat app has no catch-all route)"
        module.setup_routes(app)
    served = set()
    for probe in app_calls()[symbol]["params"]["probes"]:
        if "httpGet" in probe:
            path = probe["httpGet"]["path"]
            match = await app.router.resolve(make_mocked_request("GET", path, app=app))
            routed = match.http_exception is None and match.route.resource.name != NO_ROUTE
            assert routed, f"{symbol}: probe {path} is not a route of the app"
            served.add(path)
    return served


@pytest.mark.parametrize("symbol", sorted(APP_MODULES))
async def test_probes_use_the_target_port_within_container_apps_limits(symbol: str) -> None:
    scope = scope_of(MAIN)
    params = app_calls()[symbol]["params"]
    port = evaluate(params["targetPort"], scope)
    probes = evaluate(params["probes"], scope)
    assert sorted(p["type"] for p in probes) == ["Liveness", "Readiness", "Startup"]
    for probe in probes:
        action = probe.get("httpGet") or probe.get("tcpSocket")
        assert action["port"] == port
        assert 0 <= probe.get("initialDelaySeconds", 0) <= 60
        assert 1 <= probe.get("periodSeconds", 10) <= 240
        assert 1 <= probe.get("timeoutSeconds", 1) <= 240
        assert 1 <= probe.get("failureThreshold", 3) <= 10
    if symbol in ("gateway", "chat"):
        assert await probe_paths(symbol)
    else:  # llama-server: the same URL as the image's own HEALTHCHECK
        stage = dockerfiles.final_stage(dockerfiles.DOCKERFILES["llama"])
        image_check = " ".join(dockerfiles.healthcheck_command(stage))
        for probe in probes:
            if "httpGet" in probe:
                assert f"127.0.0.1:{port}{probe['httpGet']['path']}" in image_check


# ---- generated secrets ----------------------------------------------------------------------------------

LOWER, UPPER, DIGITS = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"
SYMBOLS = '~!@#$%^&*()_+`-={}|[]\\:"<>?,./'


def param_generate_config(name: str) -> dict[str, Any]:
    metadata = bicep.decorators(declared_params(MAIN)[name])["metadata"]["azd"]
    assert metadata["type"] == "generate"
    return metadata["config"]


def generate_like_azd(config: dict[str, Any]) -> str:
    """azd's generator (pkg/password): the minimum of each class, then every further character from a class
    picked uniformly among the allowed ones, then shuffled."""
    import secrets

    classes = [("Lower", LOWER), ("Upper", UPPER), ("Numeric", DIGITS), ("Special", SYMBOLS)]
    allowed = [chars for label, chars in classes if not config.get(f"no{label}")]
    chars = [secrets.choice(chars) for label, chars in classes for _ in range(config.get(f"min{label}", 0))]
    while len(chars) < config["length"]:
        chars.append(secrets.choice(secrets.choice(allowed)))
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def derived_session_key(secret: str) -> str:
    value = bicep.module_calls(MAIN)["chatSessionKeySecret"]["params"]["value"]
    return evaluate(value, {"chatSessionSecret": secret})


CHAT_IDENTITY_NAME = "id-chat-abc"
POSTGRES_FQDN = "psql-abc.postgres.database.azure.com"


def database_url() -> str:
    """postgres.bicep's databaseUrl output, as main.bicep calls the module, with made-up names."""
    call = bicep.module_calls(MAIN)["postgres"]
    scope = scope_of(
        call["path"],
        appPrincipalName=CHAT_IDENTITY_NAME,
        server=ns(properties=ns(fullyQualifiedDomainName=POSTGRES_FQDN)),
        database=ns(name=evaluate(call["params"]["databaseName"], scope_of(MAIN))),
    )
    return evaluate(parse(call["path"])["outputs"]["databaseUrl"]["value"], scope)


def chat_env_with_made_up_outputs(gateway_uri: str) -> dict[str, Any]:
    return literal_env(
        "chat",
        gateway=ns(outputs=ns(uri=gateway_uri)),
        postgres=ns(outputs=ns(databaseUrl=database_url())),
    )


def test_the_generated_session_secret_always_makes_a_valid_fernet_key() -> None:
    from chat_client.settings import check_session_key
    from cryptography.fernet import Fernet

    config = param_generate_config("chatSessionSecret")
    for _ in range(500):
        key = derived_session_key(generate_like_azd(config))
        check_session_key(key)
        Fernet(key.encode())


def test_the_database_url_has_no_password_and_verifies_the_server() -> None:
    from urllib.parse import parse_qsl, urlsplit

    url = urlsplit(database_url())
    assert url.username == CHAT_IDENTITY_NAME and url.password is None
    assert (url.hostname, url.port, url.path) == (POSTGRES_FQDN, 5432, "/chat")
    assert dict(parse_qsl(url.query)) == {"sslmode": "verify-full"}
    # The identity the URL names is the one the server makes its Entra administrator, and the app's own.
    scope = bicep.main_scope()
    postgres = bicep.module_calls(MAIN)["postgres"]["params"]
    chat = app_calls()["chat"]["params"]
    assert evaluate(postgres["appPrincipalName"], scope) == evaluate(chat["additionalIdentityName"], scope)
    assert evaluate(postgres["appPrincipalId"], scope) == "<chatIdentity.principalId>"
    server = parse(bicep.module_calls(MAIN)["postgres"]["path"])["resources"]["server"]["config"]
    assert server["properties"]["authConfig"]["passwordAuth"] == "Disabled"
    assert "administratorLoginPassword" not in server["properties"]


def test_the_generated_gateway_key_is_header_safe() -> None:
    key = generate_like_azd(param_generate_config("gatewayApiKey"))
    assert len(key) >= 32 and re.fullmatch(r"[A-Za-z0-9]+", key)


def test_no_made_up_names_in_the_apps_namespaces() -> None:
    """azd environment names (parameters and outputs) stay out of the apps' own GATEWAY_/CHAT_ prefixes."""
    text = PARAMETERS_FILE.read_text(encoding="utf-8")
    names = set(azd_params.references(text)) | set(parse(MAIN)["outputs"])
    for name in names:
        assert not name.startswith(("GATEWAY_", "CHAT_")), f"{name} would read as a setting of an app"
