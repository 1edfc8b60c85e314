"""The OpenAI-compatible HTTP server: llama-cpp-python's FastAPI app, wrapped, served by uvicorn.

Importing this module imports llama_cpp (a compiled extension): `__main__` does so only after the
command line and the model file have been checked, so those errors stay one clean line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ModelSettings, ServerSettings

from backends.llamacpp.asgi import PROBE_PATHS, AnyRequestId, CompletionRequests, InstantProbes

# llama-cpp-python's settings read unprefixed environment variables (API_KEY, MODEL, N_CTX, ...): a stray
# API_KEY in the environment would make the backend demand a key the gateway doesn't send. With a prefix
# only variables meant for it count: LLAMACPP_N_BATCH=256, LLAMACPP_API_KEY=... (arguments still win).
ENV_PREFIX = "LLAMACPP_"


class _DropProbeLines(logging.Filter):
    """Keep the access log readable: a load balancer probes every few seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: (client, method, path with query, HTTP version, status)
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) >= 3 and args[2] in PROBE_PATHS)


def build_app(model: Path, alias: str, *, threads: int, ctx: int, cache_mb: int = 0):
    """Load the model (blocking, a second or two for SmolLM2) and return the ASGI app serving it.

    Raises ValueError when llama.cpp cannot load the file.
    """
    model_settings = ModelSettings(
        _env_prefix=ENV_PREFIX,
        model=str(model),
        model_alias=alias,
        n_ctx=ctx,
        # Both knobs: generation and prompt processing. Its default for the batch one is every core,
        # which makes two backends on one small machine fight over the same cores.
        n_threads=threads,
        n_threads_batch=threads,
        # Saved after each completion, keyed by its tokens; the longest matching prefix is restored.
        cache=cache_mb > 0,
        cache_type="ram",
        cache_size=cache_mb << 20,
        verbose=False,
    )
    server_settings = ServerSettings(
        _env_prefix=ENV_PREFIX,
        # With the default (True) a queued request, a health probe included, cuts a running stream short;
        # a backend behind a load balancer must finish what it started and let the next one wait.
        interrupt_requests=False,
    )
    app = create_app(server_settings=server_settings, model_settings=[model_settings])
    return AnyRequestId(CompletionRequests(InstantProbes(app, alias), alias))


def serve(app, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; a request still running gets 2 seconds to finish."""
    logging.getLogger("uvicorn.access").addFilter(_DropProbeLines())
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run()
