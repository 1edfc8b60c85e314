"""Typed keys for what the fake keeps on the app and on each request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .completion import CompletionRenderer
from .recording import RecordedRequest

if TYPE_CHECKING:
    from .upstream import FakeUpstream

UPSTREAM: web.AppKey[FakeUpstream] = web.AppKey("fake_upstream")
RENDERER = web.AppKey("fake_renderer", CompletionRenderer)
# The record of the request being handled, filled in by the middleware and the handler together.
RECORD = web.RequestKey("fake_record", RecordedRequest)
