"""FakeUpstream: the configuration of one fake backend plus what it has seen so far."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .app import make_app
from .budget import TokenBudget
from .llama_server import PromptCache
from .recording import ChatStats, RecordedRequest
from .script import Reply, as_reply
from .server import serve
from .tokens import DEFAULT_REPLY_TEXT


@dataclass(eq=False)
class FakeUpstream:
    """A scriptable OpenAI / Azure OpenAI upstream.

    Configuration may be changed between (or during) requests; each request reads it when it arrives.
    """

    name: str = "fake"
    model: str = "fake-model"
    # When set, requests must carry `Authorization: Bearer <key>` or `api-key: <key>` (else 401).
    api_key: str | None = None
    # When set, Azure-style /openai/deployments/{d}/... paths for another deployment answer 404.
    deployment: str | None = None
    # One Reply per chat request, consumed in order (a bare int means Reply(status=int)); then `default`.
    script: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    # Split on whitespace into the tokens of a normal completion.
    reply_text: str = DEFAULT_REPLY_TEXT
    token_delay: float = 0.0  # seconds between streamed chunks
    latency: float = 0.0  # seconds before the first byte of every chat response
    # Azure-like tokens-per-minute budget over a rolling 60 s window (None: unlimited).
    tpm_budget: int | None = None
    health_status: int = 200
    # Only the TPM window and the record timestamps read it; replies still sleep in real time.
    clock: Callable[[], float] = time.monotonic
    # Keep only the most recent records (None: all). Counters in stats() are never trimmed.
    keep_requests: int | None = None
    # Pose as llama.cpp's llama-server: /props, /slots, /metrics, and `timings` with prompt-cache reuse in
    # every completion (see llama_server.py). `total_slots` is its --parallel; `requests_deferred` adds
    # requests it reports as waiting (queued by clients other than the one under test).
    llama_server: bool = False
    total_slots: int = 1
    requests_deferred: int = 0
    cached_conversations: int = 8
    metrics_endpoint: bool = True  # False: /metrics answers 501, as llama-server started without --metrics

    requests: list[RecordedRequest] = field(default_factory=list, init=False, repr=False)
    in_flight: int = field(default=0, init=False)  # chat requests being answered now
    max_in_flight: int = field(default=0, init=False)
    base_url: str | None = field(default=None, init=False)  # set while serve() runs
    _stats: ChatStats = field(default_factory=ChatStats, init=False, repr=False)
    _budget: TokenBudget | None = field(default=None, init=False, repr=False)
    prompt_cache: PromptCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Copy: consuming the script must not eat the caller's list.
        self.set_script(self.script, default=self.default)
        self.prompt_cache = PromptCache(self.cached_conversations)

    @property
    def openai_url(self) -> str | None:
        """The base URL for OpenAI SDK clients (`base_url=`), while serve() runs."""
        return None if self.base_url is None else self.base_url + "/v1"

    @property
    def chat_count(self) -> int:
        return self._stats.chat_requests

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [record for record in self.requests if record.kind == "chat"]

    def set_script(self, script: Iterable[Reply | int], default: Reply | int | None = None) -> None:
        """Replace the remaining script (and the default reply, if given)."""
        self.script = [as_reply(item) for item in script]
        if default is not None:
            self.default = as_reply(default)

    def next_reply(self) -> Reply:
        return self.script.pop(0) if self.script else self.default

    def reset(self) -> None:
        """Forget what was seen (records, counters, peak concurrency, spent TPM); keep the configuration."""
        self.requests.clear()
        self._stats = ChatStats()
        self.max_in_flight = self.in_flight
        self._budget = None

    def token_budget(self) -> TokenBudget | None:
        if self.tpm_budget is None:
            return None
        if self._budget is None or self._budget.limit != self.tpm_budget:
            self._budget = TokenBudget(self.tpm_budget)
        return self._budget

    def stats(self) -> dict[str, Any]:
        """Counters over chat requests, as served by GET /_fake/stats."""
        return {
            "name": self.name,
            **self._stats.to_json(),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "script_remaining": len(self.script),
        }

    def begin(self, record: RecordedRequest) -> None:
        self.requests.append(record)
        if self.keep_requests is not None and len(self.requests) > self.keep_requests:
            del self.requests[: len(self.requests) - self.keep_requests]
        if record.kind == "chat":
            self._stats.arrived()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finish(self, record: RecordedRequest) -> None:
        record.finished_at = self.clock()
        if record.kind == "chat":
            self.in_flight -= 1
            self._stats.finished(record)

    def make_app(self) -> web.Application:
        return make_app(self)

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access_log: bool = False,
        shutdown_timeout: float = 1.0,
    ) -> AbstractAsyncContextManager[str]:
        """`async with upstream.serve() as url:` listens on a real ephemeral port until the block exits."""
        return serve(self, host, port, access_log=access_log, shutdown_timeout=shutdown_timeout)
