"""Non-streaming `chat.completion` bodies, rendered fast.

The fake sits in front of benchmarks, so the part of the body that is the same for every request
(the choices, for a given reply text) is serialized once and spliced into a small byte template.
"""

from __future__ import annotations

import itertools

import orjson

_TEMPLATE = (
    b'{"id":%s,"object":"chat.completion","created":%d,"model":%s,"system_fingerprint":null,'
    b'"choices":%s,"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)

# Enough for every (reply text, finish reason) a test or benchmark uses; bounded so that a script that
# varies the text per request cannot grow memory.
_CACHE_SIZE = 256


class CompletionRenderer:
    def __init__(self, name: str) -> None:
        self._id_prefix = f"chatcmpl-fake-{name}-"
        self._ids = itertools.count(1)
        self._choices: dict[tuple[str, str], bytes] = {}

    def next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def _choices_json(self, text: str, finish_reason: str) -> bytes:
        key = (text, finish_reason)
        cached = self._choices.get(key)
        if cached is None:
            if len(self._choices) >= _CACHE_SIZE:
                self._choices.clear()
            cached = self._choices[key] = orjson.dumps(
                [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ]
            )
        return cached

    def render(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        text: str,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> bytes:
        return _TEMPLATE % (
            orjson.dumps(completion_id),
            created,
            orjson.dumps(model),
            self._choices_json(text, finish_reason),
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
        )
