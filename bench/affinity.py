"""`python -m bench.affinity`: what conversation affinity buys on real llama.cpp CPU backends.

Two llama.cpp backends (the embedded SmolLM2, one thread each) sit behind two gateways: one routes with
conversation affinity, the other with plain round robin (affinity off). Both see the same workload, in turns:
several multi-turn chats at once, each opening with a long document, then short follow-up questions. Time to
first token is measured on every turn with a streaming request; the number that matters is the median on turn 3
and later, when the history is long and re-reading it dominates.

Every conversation opens with a unique nonce, so no setup can profit from the other's caches. The backends run
with llama-cpp-python's RAM prompt cache (``--cache-mb``), which keeps several conversations' KV state per
backend: affinity is what makes the next turn land where its state is.

    python -m bench.affinity [--chats 8] [--turns 5] [--rounds 2] [--max-tokens 24] [--cache-mb 128] [--think 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from openai import AsyncOpenAI

from bench.llamacpp import as_server, cpu_model
from bench.processes import HOST, ServerFailed, Servers, free_port
from scripts import services
from scripts.services import MODEL

RESULTS = Path(__file__).parent / "results" / "affinity.md"

DOCUMENT = (
    "The lighthouse on the northern cape was built in 1871 from granite quarried two miles inland. Its keeper, "
    "a former ship's carpenter named Elias Marr, kept a daily log for thirty-one years: the weather at dawn and "
    "dusk, the ships that passed, the oil burned, and the birds that struck the lantern glass during the autumn "
    "migration. In the winter of 1893 a storm cut the cape off from the village for nineteen days. Marr rationed "
    "the oil, burned driftwood in the kitchen stove, and rowed out twice to a schooner that had lost its mast, "
    "bringing four sailors back to the tower. The log records that they played cards by lamplight and that one "
    "of them, a boy from Bergen, carved a small wooden whale that still sits on the windowsill of the watch "
    "room. When the lighthouse was automated in 1962 the log books went to the county archive, where "
    "historians use them to date the arrival of the swallows and the slow retreat of the sea ice along the "
    "coast. The tower itself is now a museum; visitors climb one hundred and twelve steps to the lantern and "
    "can still see the scratches Marr made on the brass rail to mark each year he served. "
)
QUESTIONS = (
    "Summarise the document in two sentences.",
    "Who was Elias Marr and what did he record?",
    "What happened in the winter of 1893?",
    "What is on the windowsill of the watch room?",
    "Why do historians use the log books?",
    "How many steps lead to the lantern?",
    "What happened to the lighthouse in 1962?",
)


@dataclass
class Setup:
    name: str
    url: str
    ttft: dict[int, list[float]] = field(default_factory=dict)  # turn (1-based) -> seconds
    failures: int = 0

    def later_turns(self, first: int = 3) -> list[float]:
        return [t for turn, values in self.ttft.items() if turn >= first for t in values]


async def one_chat(
    client: AsyncOpenAI, setup: Setup, turns: int, max_tokens: int, think: float, rng: random.Random
) -> None:
    nonce = uuid.uuid4().hex[:12]
    messages = [
        {"role": "system", "content": f"Session {nonce}. You answer questions about the document briefly."},
        {"role": "user", "content": f"Here is a document.\n\n{DOCUMENT * 2}\n\n{QUESTIONS[0]}"},
    ]
    for turn in range(1, turns + 1):
        started = time.perf_counter()
        first_token = None
        pieces: list[str] = []
        try:
            stream = await client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if first_token is None:
                        first_token = time.perf_counter() - started
                    pieces.append(chunk.choices[0].delta.content)
        except Exception as error:  # noqa: BLE001 - any failure is counted and shown, the run goes on
            setup.failures += 1
            print(f"    {setup.name}: turn {turn} failed: {error}", file=sys.stderr)
            return
        if first_token is not None:
            setup.ttft.setdefault(turn, []).append(first_token)
        messages.append({"role": "assistant", "content": "".join(pieces) or "…"})
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        # People read the answer and type: turns of different chats do not arrive in lockstep.
        await asyncio.sleep(rng.uniform(0, think))


async def run_round(setup: Setup, args: argparse.Namespace, seed: int, chats: int | None = None,
                    turns: int | None = None, max_tokens: int | None = None) -> None:
    rng = random.Random(seed)  # the same think times for both setups in a round
    chats, turns = chats or args.chats, turns or args.turns
    async with AsyncOpenAI(base_url=setup.url, api_key="bench", max_retries=0, timeout=args.timeout) as client:
        async with asyncio.timeout(args.timeout):
            await asyncio.gather(*(
                one_chat(client, setup, turns, max_tokens or args.max_tokens, args.think, random.Random(rng.random()))
                for _ in range(chats)
            ))


async def run(args: argparse.Namespace, log_dir: Path) -> list[Setup]:
    llama = [services.llama_backend(f"llama-{i}", host=HOST, port=free_port(), threads=1) for i in (1, 2)]
    llama = [replace(service, argv=[*service.argv, "--cache-mb", str(args.cache_mb)]) for service in llama]
    plain = services.gateway(host=HOST, port=free_port(), backends=llama)
    gateways = [
        replace(plain, name="gateway-affinity", env={**plain.env, "GATEWAY_AFFINITY": "on"}),
        replace(services.gateway(host=HOST, port=free_port(), backends=llama), name="gateway-round-robin"),
    ]
    gateways[1] = replace(
        gateways[1], env={**gateways[1].env, "GATEWAY_AFFINITY": "off", "GATEWAY_ROUTING": "round_robin"}
    )
    setups = [Setup("affinity", f"{gateways[0].base_url}/v1"), Setup("round robin", f"{gateways[1].base_url}/v1")]
    async with Servers() as servers, aiohttp.ClientSession() as session:
        for stage in (llama, gateways):
            print("==> starting " + ", ".join(s.name for s in stage), flush=True)
            failures = await servers.start([as_server(s, log_dir) for s in stage], session)
            if failures:
                raise ServerFailed("\n".join(str(f) for f in failures.values()))
        warm = Setup("warm-up", setups[1].url)
        await run_round(warm, args, seed=0, chats=2, turns=1, max_tokens=4)
        for round_number in range(1, args.rounds + 1):
            # Alternate which goes first, so neither always meets a machine warmed (or tired) by the other.
            order = setups if round_number % 2 else list(reversed(setups))
            for setup in order:
                await run_round(setup, args, seed=round_number)
            print(f"==> round {round_number}/{args.rounds}: " + ", ".join(
                f"{s.name} median TTFT turn>=3 {statistics.median(s.later_turns()) * 1000:.0f} ms"
                for s in setups if s.later_turns()), flush=True)
    return setups


def report(setups: list[Setup], args: argparse.Namespace) -> str:
    affinity, round_robin = setups
    lines = [
        f"# Conversation affinity on llama.cpp — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        (f"{args.chats} concurrent chats × {args.turns} turns × {args.rounds} rounds per setup; 2 llama.cpp backends "
        f"(SmolLM2-135M Q4_1, 1 thread each, RAM prompt cache {args.cache_mb or 'off: only the KV cache of the last request'}"
        f"{' MB' if args.cache_mb else ''}, max_concurrency 1); "
        f"max_tokens {args.max_tokens}; think time up to {args.think:g} s between turns; CPU: {cpu_model()}."),
        "",
        "Median time to first token (ms) by turn:",
        "",
        "| turn | " + " | ".join(s.name for s in setups) + " |",
        "|---:|" + "---:|" * len(setups),
    ]
    for turn in range(1, args.turns + 1):
        cells = [f"{statistics.median(s.ttft[turn]) * 1000:.0f}" if s.ttft.get(turn) else "—" for s in setups]
        lines.append(f"| {turn} | " + " | ".join(cells) + " |")
    later = {s.name: statistics.median(s.later_turns()) for s in setups if s.later_turns()}
    lines.append("")
    if len(later) == 2:
        ratio = later["round robin"] / later["affinity"]
        verdict = "meets" if ratio >= 2 else "MISSES"
        lines.append(
            f"Turn ≥ 3, median TTFT: affinity {later['affinity'] * 1000:.0f} ms, round robin "
            f"{later['round robin'] * 1000:.0f} ms → **{ratio:.1f}× lower** with affinity ({verdict} the ≥ 2× target)."
        )
    lines.append(f"Failed turns: affinity {affinity.failures}, round robin {round_robin.failures}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.affinity", description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=8, help="concurrent conversations (default: %(default)s)")
    parser.add_argument("--turns", type=int, default=5, help="turns per conversation (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per setup (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per answer (default: %(default)s)")
    parser.add_argument("--think", type=float, default=0.5,
                        help="most seconds a user waits before the next turn, drawn at random (default: %(default)s)")
    parser.add_argument("--cache-mb", type=int, default=128,
                        help="llama-cpp-python RAM prompt cache per backend, 0 for none (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per round (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown report (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-affinity-") as log_dir:
        try:
            setups = asyncio.run(run(args, Path(log_dir)))
        except ServerFailed as error:
            print(f"bench.affinity: {error}", file=sys.stderr)
            sys.exit(1)
    text = report(setups, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    print(json.dumps({s.name: {str(k): v for k, v in s.ttft.items()} for s in setups}), file=sys.stderr)


if __name__ == "__main__":
    main()
