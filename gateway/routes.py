"""The whole URL table."""

from __future__ import annotations

from aiohttp import web

from gateway import views


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", views.chat_completions)
    # Azure OpenAI shapes, so AzureOpenAI(azure_endpoint=<gateway>) and OPENAI_HOST=azure_custom apps just work.
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", views.chat_completions)
    app.router.add_post("/openai/v1/chat/completions", views.chat_completions)
    app.router.add_get("/v1/models", views.list_models)
    app.router.add_get("/openai/models", views.list_models)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/metrics", views.metrics)
