"""Typed keys for what lives on the application and on each request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway import drain
from gateway.azure_auth import EntraTokenProvider
from gateway.balancer import Balancer
from gateway.clock import Clock
from gateway.metrics import GatewayMetrics
from gateway.models_catalog import ModelsCatalog
from gateway.proxy import Proxy
from gateway.readiness import Readiness
from gateway.responses.owners import ResponseOwners
from gateway.settings import GatewaySettings
from gateway.upstream import UpstreamClient

if TYPE_CHECKING:
    from gateway.telemetry import Telemetry  # imported by the app only when telemetry is configured

SETTINGS = web.AppKey("settings", GatewaySettings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
BALANCER = web.AppKey("balancer", Balancer)
METRICS = web.AppKey("metrics", GatewayMetrics)
AZURE_TOKEN: web.AppKey[EntraTokenProvider | None] = web.AppKey("azure_token")
UPSTREAM = web.AppKey("upstream", UpstreamClient)
PROXY = web.AppKey("proxy", Proxy)
MODELS_CATALOG = web.AppKey("models_catalog", ModelsCatalog)
RESPONSE_OWNERS = web.AppKey("response_owners", ResponseOwners)
READINESS = web.AppKey("readiness", Readiness)
TELEMETRY: web.AppKey[Telemetry | None] = web.AppKey("telemetry")
DRAIN = drain.DRAIN  # the shutdown's state: defined in gateway.drain, where the relay (below keys) reads it

