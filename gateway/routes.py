"""The whole URL table; every handler is registered inside the guard (request id, API key, JSON errors)."""

from __future__ import annotations

from aiohttp import web

from gateway import views
from gateway.guard import Guard

# The catch-all's name: whatever resolves to it is a path the gateway does not serve.
NO_ROUTE = "no_route"


def setup_routes(app: web.Application, guard: Guard) -> None:
    router = app.router
    router.add_post("/v1/chat/completions", guard(views.chat_completions, tagged=True))
    # Azure OpenAI shapes, so AzureOpenAI(azure_endpoint=<gateway>) and OPENAI_HOST=azure_custom apps just work.
    router.add_post("/openai/deployments/{deployment}/chat/completions", guard(views.chat_completions, tagged=True))
    router.add_post("/openai/v1/chat/completions", guard(views.chat_completions, tagged=True))
    # The other model APIs, on OpenAI's paths, Azure's v1 paths and (embeddings, completions) per deployment;
    # /openai/responses is where AzureOpenAI(api_version=...) clients send Responses requests.
    for path in ("/v1/responses", "/openai/v1/responses", "/openai/responses"):
        router.add_post(path, guard(views.responses, tagged=True))
    for path in ("/v1/embeddings", "/openai/v1/embeddings", "/openai/deployments/{deployment}/embeddings"):
        router.add_post(path, guard(views.embeddings, tagged=True))
    for path in ("/v1/completions", "/openai/v1/completions", "/openai/deployments/{deployment}/completions"):
        router.add_post(path, guard(views.completions, tagged=True))
    router.add_get("/v1/models", guard(views.list_models))
    router.add_get("/openai/models", guard(views.list_models))
    router.add_get("/openai/v1/models", guard(views.list_models))
    # Model ids may hold slashes (org/name), as Hugging Face style ids do.
    router.add_get("/v1/models/{model:.+}", guard(views.retrieve_model))
    router.add_get("/openai/v1/models/{model:.+}", guard(views.retrieve_model))
    # Probes and scrapes stay open so orchestrators and Prometheus need no key.
    router.add_get("/healthz", guard(views.healthz, public=True))
    router.add_get("/readyz", guard(views.readyz, public=True))
    router.add_get("/metrics", guard(views.metrics, public=True))
    # Last, so it matches only what nothing above does: every other path and method, answered in JSON.
    router.add_route("*", "/{path:.*}", guard(views.no_route), name=NO_ROUTE)
