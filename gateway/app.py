"""Wiring only: settings → application → resources (cleanup_ctx) → guarded routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.accounting import Accounting
from gateway.affinity import AffinityTable
from gateway.azure_auth import EntraTokenProvider, default_credential
from gateway.backend_state import BreakerPolicy
from gateway.balancer import Balancer
from gateway.clock import Clock, SystemClock
from gateway.guard import Guard
from gateway.health import health_checks_ctx
from gateway.metrics import GatewayMetrics
from gateway.models_catalog import ModelsCatalog
from gateway.outcome import CooldownPolicy
from gateway.proxy import Proxy
from gateway.readiness import Readiness
from gateway.routes import setup_routes
from gateway.settings import BackendKind, GatewaySettings
from gateway.shared_state.balancer import SharedBalancer
from gateway.shared_state.context import shared_state_ctx
from gateway.transports import create_transport
from gateway.upstream import UpstreamClient


def create_app(
    settings: GatewaySettings, *, clock: Clock | None = None, azure_credential: Any = None
) -> web.Application:
    """Build the gateway. ``clock`` and ``azure_credential`` are injected by tests."""
    clock = clock or SystemClock()
    # aiohttp enforces the body limit itself while reading; the view turns its error into our 413.
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock
    # With GATEWAY_STATE_URL, every process naming that Redis shares cooldowns, breakers, leases and affinity.
    balancer = (SharedBalancer if settings.state_url else Balancer)(
        settings.backends,
        routing=settings.routing,
        queue_timeout=settings.queue_timeout,
        queue_max=settings.queue_max,
        queue_aging=settings.queue_aging,
        breaker=BreakerPolicy(settings.eject_after_failures, settings.eject_base, settings.eject_max),
        now=clock.monotonic,
    )
    app[keys.BALANCER] = balancer
    app[keys.METRICS] = GatewayMetrics(balancer)

    app.cleanup_ctx.append(_azure_credentials_ctx(azure_credential))
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(health_checks_ctx)
    if settings.state_url:
        app.cleanup_ctx.append(shared_state_ctx(azure_credential))
    setup_routes(app, Guard(settings.api_keys))
    return app


def _azure_credentials_ctx(credential: Any) -> Callable[[web.Application], AsyncIterator[None]]:
    async def azure_credentials(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        needs_entra = any(b.kind is BackendKind.AZURE and not b.api_key for b in settings.backends)
        provider = None
        if needs_entra:
            provider = EntraTokenProvider(credential or default_credential(), wall=app[keys.CLOCK].wall)
        app[keys.AZURE_TOKEN] = provider
        yield
        if provider is not None:
            await provider.close()

    return azure_credentials


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """One keep-alive connection pool for all upstream traffic, alive exactly as long as the app."""
    settings = app[keys.SETTINGS]
    transport = create_transport(
        settings.upstream_client,
        connect_timeout=settings.connect_timeout,
        idle_timeout=settings.upstream_idle_timeout,
        max_connections=settings.upstream_max_connections,
    )
    upstream = UpstreamClient(
        transport,
        read_timeout=settings.read_timeout,
        health_timeout=settings.health_timeout,
        max_response_bytes=settings.max_response_bytes,
        azure_token=app[keys.AZURE_TOKEN],
    )
    app[keys.UPSTREAM] = upstream
    app[keys.MODELS_CATALOG] = ModelsCatalog(app[keys.BALANCER], upstream)
    app[keys.READINESS] = Readiness(
        app[keys.BALANCER], upstream, interval=settings.health_interval, now=app[keys.CLOCK].monotonic
    )
    app[keys.PROXY] = Proxy(
        balancer=app[keys.BALANCER],
        upstream=upstream,
        accounting=Accounting(app[keys.METRICS]),
        clock=app[keys.CLOCK],
        max_attempts=settings.max_attempts,
        cooldown=CooldownPolicy(settings.cooldown_default, settings.cooldown_max),
        expose_routing_headers=settings.expose_routing_headers,
        affinity=AffinityTable(settings.affinity_capacity) if settings.affinity_enabled else None,
    )
    yield
    await transport.close()
