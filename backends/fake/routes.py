"""The whole URL table. Route names are "<kind>[.<variant>]"; the kind ends up in RecordedRequest.kind."""

from __future__ import annotations

from aiohttp import web

from . import chat, control, llama_server, probes


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat.chat_completions, name="chat")
    # Azure OpenAI's v1 API and its classic per-deployment API.
    app.router.add_post("/openai/v1/chat/completions", chat.chat_completions, name="chat.azure-v1")
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat.chat_completions,
                        name="chat.azure-deployment")
    app.router.add_get("/v1/models", probes.models, name="models")
    app.router.add_get("/openai/models", probes.models, name="models.azure")
    app.router.add_get("/openai/v1/models", probes.models, name="models.azure-v1")
    app.router.add_get("/health", probes.health, name="health")
    # llama-server's own endpoints: 404 unless the fake poses as one.
    app.router.add_get("/props", llama_server.props, name="props")
    app.router.add_get("/slots", llama_server.slots, name="slots")
    app.router.add_get("/metrics", llama_server.metrics, name="metrics")
    app.router.add_post(control.PREFIX + "script", control.set_script)
    app.router.add_get(control.PREFIX + "stats", control.stats)
    app.router.add_post(control.PREFIX + "reset", control.reset)
