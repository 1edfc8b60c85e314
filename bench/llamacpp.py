"""`python -m bench.llamacpp` (`make bench-llamacpp`): which llama.cpp backend to run, and what affinity buys.

Many chats at once, through the gateway, on two llama.cpp backends (the embedded SmolLM2, one thread each):

  1. llama-server, affinity     llama.cpp's own server, `--parallel` slots with continuous batching; the
                                gateway reads the capacity from /props and routes each chat back to its
                                backend
  2. llama-server, round robin  the same backends, affinity off, plain round robin
  3. llama-cpp-python           llama-cpp-python's server, one request at a time (max_concurrency 1), affinity

Every chat opens with a document and a question, then asks follow-ups (streamed, temperature 0, a random
think time between turns); every chat opens with its own nonce, so no setup profits from another's caches.
Measured per setup: aggregate completion tokens per second (all chats' tokens over the rounds' wall time),
the median time to first token over all turns and over turn 3 and later (where the history is long), and the
share of prompt tokens the backends found in their cache (`cached_tokens`, read from the gateway's /metrics:
what it measures of every answer). Everything starts first, then the setups take turns, round after round, in
alternating order; the run is bounded (`--budget`): no round starts after it. Printed as markdown and written
to bench/results/llamacpp.md.

    python -m bench.llamacpp [--chats 8] [--turns 5] [--rounds 2] [--parallel 4] [--max-tokens 128]
                             [--budget 1200] [--only affinity,round-robin,python] [--model FILE.gguf]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import os
import platform
import random
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from backends.llamacpp.model import DEFAULT_MODEL_FILE
from bench.processes import HOST, Server, ServerFailed, Servers, free_port
from scripts import services
from scripts.services import MODEL, Service

RESULTS = Path(__file__).parent / "results" / "llamacpp.md"

DOCUMENT = (
    "The lighthouse on the northern cape was built in 1871 from granite quarried two miles inland. Its "
    "keeper, a former ship's carpenter named Elias Marr, kept a daily log for thirty-one years: the "
    "weather at dawn and dusk, the ships that passed, the oil burned, and the birds that struck the "
    "lantern glass during the autumn migration. In the winter of 1893 a storm cut the cape off from the "
    "village for nineteen days. Marr rationed the oil, burned driftwood in the kitchen stove, and rowed "
    "out twice to a schooner that had lost its mast, bringing four sailors back to the tower. The log "
    "records that they played cards by lamplight and that one of them, a boy from Bergen, carved a small "
    "wooden whale that still sits on the windowsill of the watch room. When the lighthouse was automated "
    "in 1962 the log books went to the county archive, where historians use them to date the arrival of "
    "the swallows and the slow retreat of the sea ice along the coast. "
)
QUESTIONS = (
    "Summarise the document in two sentences.",
    "Who was Elias Marr and what did he record?",
    "What happened in the winter of 1893?",
    "What is on the windowsill of the watch room?",
    "Why do historians use the log books?",
)


SETUPS = ("affinity", "round-robin", "python")


@dataclass
class Setup:
    key: str  # one of SETUPS
    name: str
    backends: str  # "2 × 4 slots"
    gateway: Service
    ttft: dict[int, list[float]] = field(default_factory=dict)  # turn (1-based) -> seconds
    completion_tokens: int = 0
    wall_seconds: float = 0.0
    failures: int = 0
    cached_tokens: float = 0.0
    prompt_tokens: float = 0.0
    reports_cache: bool = False
    backend_names: tuple[str, ...] = ()
    # CPU time of its backends and of its gateway during its rounds (from /proc): what a completion token
    # costs, less sensitive to other work on the machine than tokens per wall-clock second.
    backend_cpu: float = 0.0
    gateway_cpu: float = 0.0
    processes: dict[str, Server] = field(default_factory=dict)  # by name, its backends' and its gateway
    @property
    def url(self) -> str:
        return f"{self.gateway.base_url}/v1"

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.wall_seconds if self.wall_seconds else 0.0

    def median_ttft(self, first_turn: int = 1) -> float | None:
        values = [t for turn, ts in self.ttft.items() if turn >= first_turn for t in ts]
        return statistics.median(values) if values else None

    def cpu_ms_per_token(self, seconds: float) -> float | None:
        return 1000 * seconds / self.completion_tokens if self.completion_tokens else None

    def cpu_now(self) -> tuple[float, float]:
        backends = sum(self.processes[name].cpu_seconds() for name in self.backend_names)
        return backends, self.processes[self.gateway.name].cpu_seconds()

    @property
    def prompt_reuse(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.reports_cache and self.prompt_tokens else None


async def one_chat(client: AsyncOpenAI, setup: Setup, args: argparse.Namespace, rng: random.Random,
                   record: bool) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system",
         "content": f"Session {uuid.uuid4().hex[:12]}. You answer questions about the document."},
        {"role": "user", "content": f"Here is a document.\n\n{DOCUMENT}\n\n{QUESTIONS[0]}"},
    ]
    for turn in range(1, args.turns + 1):
        started = time.perf_counter()
        first_token = None
        pieces: list[str] = []
        try:
            stream = await client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=args.max_tokens, temperature=0, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if first_token is None:
                        first_token = time.perf_counter() - started
                    pieces.append(chunk.choices[0].delta.content)
        except Exception as error:  # noqa: BLE001 - any failure is counted and shown, the run goes on
            setup.failures += record
            print(f"    {setup.name}: turn {turn} failed: {error}", file=sys.stderr)
            return
        if record:
            setup.completion_tokens += len(pieces)  # one token per streamed chunk, from both servers
            if first_token is not None:
                setup.ttft.setdefault(turn, []).append(first_token)
        messages.append({"role": "assistant", "content": "".join(pieces) or "…"})
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        # People read the answer and type: turns of different chats do not arrive in lockstep.
        await asyncio.sleep(rng.uniform(0, args.think))


async def cache_counters(session: aiohttp.ClientSession, setup: Setup) -> tuple[float, float, bool]:
    """Cached and prompt token totals of all backends (gateway /metrics); whether any reported a cache."""
    async with session.get(f"{setup.gateway.base_url}/metrics") as response:
        text = await response.text()
    totals = {"cached": 0.0, "prompt": 0.0}
    seen_cached = False
    pattern = r'^gateway_tokens_total\{backend="[^"]*",type="(cached|prompt)"\} (\S+)$'
    for kind, value in re.findall(pattern, text, re.MULTILINE):
        totals[kind] += float(value)
        seen_cached |= kind == "cached"
    return totals["cached"], totals["prompt"], seen_cached


async def run_round(setup: Setup, args: argparse.Namespace, session: aiohttp.ClientSession, seed: int,
                    record: bool = True) -> None:
    rng = random.Random(seed)  # the same think times for every setup in a round
    cached_before, prompt_before, _ = await cache_counters(session, setup)
    backend_cpu_before, gateway_cpu_before = setup.cpu_now()
    client = AsyncOpenAI(base_url=setup.url, api_key="bench", max_retries=0, timeout=args.round_timeout)
    async with client:
        started = time.perf_counter()
        async with asyncio.timeout(args.round_timeout):
            await asyncio.gather(*(one_chat(client, setup, args, random.Random(rng.random()), record)
                                   for _ in range(args.chats)))
        wall = time.perf_counter() - started
    if record:
        backend_cpu, gateway_cpu = setup.cpu_now()
        setup.backend_cpu += backend_cpu - backend_cpu_before
        setup.gateway_cpu += gateway_cpu - gateway_cpu_before
        cached, prompt, reports = await cache_counters(session, setup)
        setup.wall_seconds += wall
        setup.cached_tokens += cached - cached_before
        setup.prompt_tokens += prompt - prompt_before
        setup.reports_cache |= reports


def as_server(service: Service, log_dir: Path) -> Server:
    """The stack's definition of a process, run the benchmark's way: output to a file, not through a pipe."""
    return Server(
        name=service.name, argv=service.argv, port=service.port, ready_path=service.ready_path,
        log_path=log_dir / f"{service.name}.log", env=service.env, start_timeout=service.timeout,
    )


def plan(args: argparse.Namespace) -> tuple[list[Service], list[Setup]]:
    servers = [services.llama_server(f"server-{i}", host=HOST, port=free_port(), threads=1,
                                     parallel=args.parallel, model=args.model) for i in (1, 2)]
    python = [services.llama_backend(f"python-{i}", host=HOST, port=free_port(), threads=1, model=args.model)
              for i in (1, 2)]
    affinity = services.gateway(host=HOST, port=free_port(), backends=servers)
    round_robin = services.gateway(host=HOST, port=free_port(), backends=servers)
    round_robin = replace(round_robin, env={**round_robin.env, "GATEWAY_AFFINITY": "off",
                                            "GATEWAY_ROUTING": "round_robin"})
    plain = services.gateway(host=HOST, port=free_port(), backends=python)
    server_names = tuple(s.name for s in servers)
    every = {
        "affinity": Setup("affinity", "llama-server, affinity", f"2 × {args.parallel} slots",
                          replace(affinity, name="gateway-affinity"), backend_names=server_names),
        "round-robin": Setup("round-robin", "llama-server, round robin", f"2 × {args.parallel} slots",
                             replace(round_robin, name="gateway-rr"), backend_names=server_names),
        "python": Setup("python", "llama-cpp-python", "2 × 1 slot", replace(plain, name="gateway-python"),
                        backend_names=tuple(s.name for s in python)),
    }
    setups = [every[key] for key in args.only]
    # The same for all: no request line per request, and no refusal of a request that waits long for a slot
    # (the one-slot backends queue 8 chats' turns: what that costs shows in the TTFT, not as 429s).
    common = {"GATEWAY_LOG_LEVEL": "warning", "GATEWAY_QUEUE_TIMEOUT": str(args.round_timeout)}
    for setup in setups:
        setup.gateway = replace(setup.gateway, env={**setup.gateway.env, **common})
    # Only the backends some setup uses are started (idle ones would cost memory and start-up time).
    used = [*(servers if {"affinity", "round-robin"} & set(args.only) else []),
            *(python if "python" in args.only else [])]
    return used, setups


async def run(args: argparse.Namespace, log_dir: Path) -> list[Setup]:
    backends, setups = plan(args)
    deadline = time.monotonic() + args.budget
    async with Servers() as servers, aiohttp.ClientSession() as session:
        for stage in (backends, [s.gateway for s in setups]):
            print("==> starting " + ", ".join(s.name for s in stage), flush=True)
            launched = {s.name: as_server(s, log_dir) for s in stage}
            failures = await servers.start(list(launched.values()), session)
            if failures:
                raise ServerFailed("\n".join(str(f) for f in failures.values()))
            for setup in setups:
                setup.processes.update(launched)
        print("==> warming up", flush=True)
        warm = argparse.Namespace(**{**vars(args), "chats": 2, "turns": 1, "max_tokens": 4})
        for setup in setups:
            await run_round(setup, warm, session, seed=0, record=False)
        args.rounds_done = 0
        for number in range(1, args.rounds + 1):
            if time.monotonic() > deadline:
                print(f"==> budget of {args.budget:g}s spent: stopping after {number - 1} round(s)",
                      flush=True)
                break
            order = setups if number % 2 else list(reversed(setups))
            for setup in order:
                await run_round(setup, args, session, seed=number)
            args.rounds_done = number
            print(f"==> round {number}/{args.rounds}: " + ", ".join(
                f"{s.name} {s.tokens_per_second:.1f} tokens/s" for s in setups), flush=True)
    return setups


def _spin(iterations: int) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return time.perf_counter() - started


def cpu_parallelism(iterations: int = 10_000_000) -> float:
    """Work done per second by two busy processes at once, relative to one alone: 2.0 on two free cores."""
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        alone = pool.submit(_spin, iterations).result()
        together = list(pool.map(_spin, [iterations] * 2))
    return 2 * alone / max(together)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


def _cpu(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.1f}"


def report(setups: list[Setup], args: argparse.Namespace, cpu_scaling: list[float]) -> str:
    by_key = {s.key: s for s in setups}
    server, round_robin, python = (by_key.get(key) for key in SETUPS)
    rows = [
        ("| setup | backends | completion tokens/s | median TTFT | median TTFT, turn ≥ 3 "
        "| prompt tokens reused | backend CPU ms/token | gateway CPU ms/token | failed turns |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in setups:
        reuse = "—" if s.prompt_reuse is None else f"{s.prompt_reuse:.0%}"
        rows.append(f"| {s.name} | {s.backends} | {s.tokens_per_second:.1f} | {_ms(s.median_ttft())} "
                    f"| {_ms(s.median_ttft(3))} | {reuse} | {_cpu(s.cpu_ms_per_token(s.backend_cpu))} "
                    f"| {_cpu(s.cpu_ms_per_token(s.gateway_cpu))} | {s.failures} |")
    only = "" if args.only == list(SETUPS) else f" --only {','.join(args.only)}"
    model = "" if args.model is None else f" --model {args.model}"
    model_file = (args.model or Path(DEFAULT_MODEL_FILE)).name
    lines = [
        "# llama.cpp backends: llama-server vs llama-cpp-python, and affinity on llama-server",
        "",
        (f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC with `python -m bench.llamacpp "
        f"--chats {args.chats} --turns {args.turns} --rounds {args.rounds} --parallel {args.parallel} "
        f"--max-tokens {args.max_tokens}{only}{model}`."),
        "",
        (f"Machine: {os.cpu_count()} cores ({cpu_model()}); model {model_file}; one thread per "
        f"backend; the client and the gateways share the cores. {args.chats} concurrent chats × {args.turns} "
        f"turns per round, streamed, max_tokens {args.max_tokens}, think time up to {args.think:g} s; rounds "
        f"counted: {args.rounds_done} (of {args.rounds}, budget {args.budget:g} s)."),
        "",
        *rows,
        "",
    ]
    if server and python and server.tokens_per_second and python.tokens_per_second:
        speedup = server.tokens_per_second / python.tokens_per_second
        ttft_s, ttft_p = server.median_ttft(), python.median_ttft()
        target = speedup >= 2 and ttft_s is not None and ttft_p is not None and ttft_s <= ttft_p
        lines.append(f"- llama-server vs llama-cpp-python (both with affinity): **{speedup:.2f}×** the "
                     f"tokens/s, median TTFT {_ms(ttft_s)} vs {_ms(ttft_p)} — "
                     f"{'meets' if target else 'MISSES'} the target (≥ 2× at ≥ equal TTFT).")
        cpu_s = server.cpu_ms_per_token(server.backend_cpu)
        cpu_p = python.cpu_ms_per_token(python.backend_cpu)
        if cpu_s and cpu_p:
            lines.append(f"- Backend CPU time per completion token: {cpu_s:.1f} ms vs {cpu_p:.1f} ms "
                         f"(**{cpu_p / cpu_s:.2f}×**): the tokens/s ratio the backends' own work allows when "
                         "both keep the cores busy, whatever else the machine runs.")
    later_a = server.median_ttft(3) if server else None
    later_rr = round_robin.median_ttft(3) if round_robin else None
    if server and round_robin and later_a and later_rr:
        lines.append(f"- Affinity on llama-server, turn ≥ 3: median TTFT {_ms(later_a)} vs {_ms(later_rr)} "
                     f"with round robin (**{later_rr / later_a:.1f}×** lower); prompt tokens reused "
                     f"{server.prompt_reuse or 0:.0%} vs {round_robin.prompt_reuse or 0:.0%}.")
    lines.append(f"- CPU control: two busy processes got through "
                 f"{' and '.join(f'{c:.2f}×' for c in cpu_scaling)} the work of one, before and after the "
                 f"run (2.00× on two free cores).")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.llamacpp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=8, help="concurrent chats (default: %(default)s)")
    parser.add_argument("--turns", type=int, default=5, help="turns per chat (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per setup (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=4,
                        help="llama-server slots per backend (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=128, help="per answer (default: %(default)s)")
    parser.add_argument("--think", type=float, default=0.5,
                        help="most seconds between a chat's turns, drawn at random (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=1200,
                        help="seconds after which no new round starts (default: %(default)s)")
    parser.add_argument("--round-timeout", type=float, default=600,
                        help="seconds per round (default: %(default)s)")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(SETUPS),
                        help=f"setups to run, in this order in odd rounds: {','.join(SETUPS)} (default: all)")
    parser.add_argument("--model", type=Path,
                        help="GGUF file for every backend (default: the embedded SmolLM2)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown report (default: %(default)s)")
    args = parser.parse_args(argv)
    unknown = [key for key in args.only if key not in SETUPS]
    if unknown or not args.only or len(set(args.only)) != len(args.only):
        parser.error(f"--only takes distinct names from {','.join(SETUPS)}")
    for name in ("chats", "turns", "rounds", "parallel", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the servers are stopped on the way out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    cpu_scaling = [cpu_parallelism()]  # before and after: the machine's load can change during the run
    print(f"==> CPU control: two busy processes do {cpu_scaling[0]:.2f}× the work of one", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-") as log_dir:
        try:
            setups = asyncio.run(run(args, Path(log_dir)))
        except ServerFailed as e:
            print(f"bench: {e}", file=sys.stderr)
            sys.exit(1)
    cpu_scaling.append(cpu_parallelism())
    text = report(setups, args, cpu_scaling)
    print("\n" + text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
