"""Wiring only: settings → application → resources (cleanup_ctx) → guarded routes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import keys
from gateway.accounting import Accounting
from gateway.affinity import AffinityTable
from gateway.azure_auth import EntraTokenProvider, default_credential
from gateway.backend_state import BreakerPolicy
from gateway.balancer import Balancer
from gateway.clock import Clock, SystemClock
from gateway.drain import Drain
from gateway.entra import EntraVerifier, policy_from_settings
from gateway.guard import Guard
from gateway.health import health_checks_ctx
from gateway.metrics import GatewayMetrics
from gateway.models_catalog import ModelsCatalog
from gateway.outcome import CooldownPolicy
from gateway.proxy import Proxy
from gateway.readiness import Readiness
from gateway.responses.owners import ResponseOwners
from gateway.routes import setup_routes
from gateway.settings import APPINSIGHTS_CONNECTION_STRING, BackendKind, GatewaySettings
from gateway.transports import create_transport
from gateway.upstream import UpstreamClient

if TYPE_CHECKING:
    from gateway.telemetry import Telemetry


def create_app(
    settings: GatewaySettings,
    *,
    clock: Clock | None = None,
    azure_credential: Any = None,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """Build the gateway. ``clock``, ``azure_credential`` and ``telemetry`` are injected by tests; without
    ``telemetry``, Application Insights if APPLICATIONINSIGHTS_CONNECTION_STRING is set, else none."""
    clock = clock or SystemClock()
    # aiohttp enforces the body limit itself while reading; the view turns its error into our 413.
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock
    app[keys.DRAIN] = Drain()  # set by gateway.server when a stop signal comes
    # With GATEWAY_STATE_URL, every process naming that Redis shares cooldowns, breakers, leases and affinity.
    balancer_class: type[Balancer] = Balancer
    shared_state = None
    if settings.state_url:
        # Imported only here: redis-py costs ~10 MB of RSS that a gateway without shared state never needs.
        from gateway.shared_state.balancer import SharedBalancer
        from gateway.shared_state.context import shared_state_ctx

        balancer_class = SharedBalancer
        shared_state = shared_state_ctx(azure_credential)
    balancer = balancer_class(
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
    app[keys.RESPONSE_OWNERS] = ResponseOwners(settings.affinity_capacity)
    app[keys.TELEMETRY] = telemetry if telemetry is not None else _telemetry_from_environment()

    app.cleanup_ctx.append(_azure_credentials_ctx(azure_credential))
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(health_checks_ctx)
    if shared_state is not None:
        app.cleanup_ctx.append(shared_state)
    setup_routes(app, Guard(settings.api_keys, _entra_verifier(app, settings, clock)))
    return app


def _telemetry_from_environment() -> Telemetry | None:
    if not os.environ.get(APPINSIGHTS_CONNECTION_STRING):
        return None
    # Imported only when it is used: OpenTelemetry's API alone costs ~6 MB of RSS and 0.1 s of start-up.
    from gateway.telemetry import telemetry_from_environment

    return telemetry_from_environment()


def _entra_verifier(app: web.Application, settings: GatewaySettings, clock: Clock) -> EntraVerifier | None:
    """Inbound Entra ID tokens, when configured; the tenant's keys are fetched through the upstream client."""
    policy = policy_from_settings(settings)
    if policy is None:
        return None

    async def fetch(url: str) -> tuple[int | None, bytes]:
        return await app[keys.UPSTREAM].probe(url)

    return EntraVerifier(policy, fetch, wall=clock.wall, monotonic=clock.monotonic)


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
        accounting=Accounting(app[keys.METRICS], app[keys.TELEMETRY]),
        clock=app[keys.CLOCK],
        max_attempts=settings.max_attempts,
        cooldown=CooldownPolicy(settings.cooldown_default, settings.cooldown_max),
        expose_routing_headers=settings.expose_routing_headers,
        affinity=AffinityTable(settings.affinity_capacity) if settings.affinity_enabled else None,
    )
    yield
    await transport.close()
