"""Typed keys for what lives on the application and on each request."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from gateway.azure_auth import EntraTokenProvider
    from gateway.balancer import Balancer
    from gateway.clock import Clock
    from gateway.metrics import GatewayMetrics
    from gateway.models_catalog import ModelsCatalog
    from gateway.proxy import ChatProxy
    from gateway.settings import GatewaySettings
    from gateway.upstream import UpstreamClient

SETTINGS = web.AppKey("settings", "GatewaySettings")
CLOCK = web.AppKey("clock", "Clock")
BALANCER = web.AppKey("balancer", "Balancer")
METRICS = web.AppKey("metrics", "GatewayMetrics")
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
AZURE_TOKEN = web.AppKey("azure_token", "EntraTokenProvider | None")
UPSTREAM = web.AppKey("upstream", "UpstreamClient")
PROXY = web.AppKey("proxy", "ChatProxy")
MODELS_CATALOG = web.AppKey("models_catalog", "ModelsCatalog")

REQUEST_ID = web.RequestKey("request_id", str)
