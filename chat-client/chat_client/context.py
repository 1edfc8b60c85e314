"""Fit a chat's history into the model's context window.

The reference app sent the whole history with every request; once a chat outgrew the model's 1,024-token
window every request failed and that chat was dead for good. Here each request carries the system prompt and
the newest messages that fit a token budget (CHAT_CONTEXT_TOKENS); older ones stay in the database and on the
page but are no longer sent. Pure functions: no I/O, no settings.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The role markers a chat template wraps around each message (`<|im_start|>user\n…<|im_end|>\n`).
PER_MESSAGE_OVERHEAD = 4
BYTES_PER_TOKEN = 3


def estimate_tokens(text: str) -> int:
    """A tokenizer-free upper estimate: one token per 3 bytes of UTF-8.

    The app cannot know the served model's tokenizer (the gateway may route to several). English runs at
    about 4 characters a token and code or non-Latin scripts closer to 3 bytes, so this errs towards
    requests that fit; CHAT_CONTEXT_TOKENS keeps a margin on top.
    """
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]
    estimated_tokens: int
    dropped: int  # history turns left out to fit the budget
    truncated: bool  # the newest turn alone did not fit and was cut


def build_prompt(
    system_prompt: str,
    history: Sequence[Turn],
    budget: int,
    count: Callable[[str], int] = estimate_tokens,
) -> Prompt:
    """The system prompt plus the longest run of newest turns whose estimated size fits `budget` tokens.

    The newest turn (the message being answered) is always sent; if it alone overflows the budget its
    beginning is kept. Older turns are dropped oldest first, and never out of order: a gap in the middle of
    a conversation would confuse the model more than a shorter memory.

    Older turns go in question/answer pairs: a question left unanswered (its reply failed) is left out, and
    the kept run never starts with an answer. Models whose chat templates require alternating roles after the
    system prompt (Gemma, Mistral, older Llama templates in llama.cpp) reject anything else.
    """
    used = 0
    head: list[dict[str, str]] = []
    if system_prompt:
        used = count(system_prompt) + PER_MESSAGE_OVERHEAD
        head = [{"role": "system", "content": system_prompt}]
    if not history:
        return Prompt(head, used, dropped=0, truncated=False)

    older, newest = _answered_pairs(history[:-1]), history[-1]
    room = budget - used - PER_MESSAGE_OVERHEAD
    content = newest.content
    truncated = count(content) > room
    if truncated:
        content = _cut_to(content, max(room, 1), count)
    used += count(content) + PER_MESSAGE_OVERHEAD
    kept = [{"role": newest.role, "content": content}]

    for turn in reversed(older):
        cost = count(turn.content) + PER_MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        used += cost
        kept.append({"role": turn.role, "content": turn.content})
    kept.reverse()
    # The budget may have split a pair: a leading answer without its question goes too.
    while len(kept) > 1 and kept[0]["role"] != "user":
        used -= count(kept[0]["content"]) + PER_MESSAGE_OVERHEAD
        kept.pop(0)
    return Prompt(head + kept, used, dropped=len(history) - len(kept), truncated=truncated)


def _answered_pairs(turns: Sequence[Turn]) -> list[Turn]:
    """The question/answer pairs of `turns`, in order: a user turn directly followed by an assistant turn."""
    pairs: list[Turn] = []
    for question, answer in itertools.pairwise(turns):
        if question.role == "user" and answer.role == "assistant":
            pairs += [question, answer]
    return pairs


def _cut_to(text: str, tokens: int, count: Callable[[str], int]) -> str:
    """The longest prefix of `text` that `count` puts at or under `tokens` (binary search on characters)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count(text[:middle]) <= tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]
