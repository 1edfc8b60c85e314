"""Typed keys for what lives on the application and on each request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # only for the type names in the keys below (imported for real, these would be cycles)
    from gateway.azure_auth import EntraTokenProvider  # noqa: F401
    from gateway.balancer import Balancer  # noqa: F401
    from gateway.clock import Clock  # noqa: F401
    from gateway.metrics import GatewayMetrics  # noqa: F401
    from gateway.models_catalog import ModelsCatalog  # noqa: F401
    from gateway.proxy import ChatProxy  # noqa: F401
    from gateway.settings import GatewaySettings  # noqa: F401
    from gateway.upstream import UpstreamClient  # noqa: F401

SETTINGS = web.AppKey("settings", "GatewaySettings")
CLOCK = web.AppKey("clock", "Clock")
BALANCER = web.AppKey("balancer", "Balancer")
METRICS = web.AppKey("metrics", "GatewayMetrics")
AZURE_TOKEN = web.AppKey("azure_token", "EntraTokenProvider | None")
UPSTREAM = web.AppKey("upstream", "UpstreamClient")
PROXY = web.AppKey("proxy", "ChatProxy")
MODELS_CATALOG = web.AppKey("models_catalog", "ModelsCatalog")

REQUEST_ID = web.RequestKey("request_id", str)
