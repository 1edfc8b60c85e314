"""A scriptable fake OpenAI / Azure OpenAI upstream, for tests and benchmarks of the gateway.

    upstream = FakeUpstream(name="a", script=[throttled_ms(100), unavailable(), Reply()])
    async with upstream.serve() as url:          # or: await aiohttp_server(upstream.make_app())
        client = AsyncOpenAI(base_url=upstream.openai_url, api_key="k", max_retries=0)
        ...
    assert [r.status for r in upstream.chat_requests] == [429, 503, 200]

From another process: `python -m backends.fake --port 9001`, then POST /_fake/script,
GET /_fake/stats, POST /_fake/reset.
"""

from .recording import RecordedRequest
from .script import (
    Reply,
    throttled,
    throttled_date,
    throttled_ms,
    throttled_ratelimit_reset,
    unavailable,
)
from .tokens import DEFAULT_REPLY_TEXT, reply_text_of_length
from .upstream import FakeUpstream

__all__ = [
    "DEFAULT_REPLY_TEXT",
    "FakeUpstream",
    "RecordedRequest",
    "Reply",
    "reply_text_of_length",
    "throttled",
    "throttled_date",
    "throttled_ms",
    "throttled_ratelimit_reset",
    "unavailable",
]
