"""`python -m bench.llama_probe`: tokens per second of llama-server variants, N streams at once, direct.

A quick probe before a full `bench.llamacpp` run: no gateway, no chat history, only the servers. Each variant
is a llama-server command line (the launcher's, `backends.llamacpp.llama_server.server_argv`, plus extra
arguments, which win because llama.cpp keeps the last of a repeated flag), optionally another binary, and
optionally several instances that share the streams (two backends of one thread against one of two). The
binary `python` means llama-cpp-python's server (`python -m backends.llamacpp` plus the arguments); leading
`NAME=VALUE` words of the arguments are its environment (LLAMACPP_FLASH_ATTN=true).

    python -m bench.llama_probe --streams 1,4,8 --rounds 3 \\
        --variant 'v3=-t 1 -np 4' \\
        --variant 'dl@/tmp/llama-dl/bin/llama-server=-t 1 -np 4' \\
        --variant '2x1t*2=-t 1 -np 4' --variant '1x2t=-t 2 -np 8' \\
        --variant 'python@python=--threads 1'

Every variant is started first, then they take turns, round after round, in alternating order (idle servers
cost no CPU). A measurement is N completions at once (each split evenly over the variant's instances), each
opening with its own nonce so no prompt is found in a cache: a ~250-token document (`--prompt long`: three
times that, as late in a chat; `--prompt short`: one line), and `--tokens` generated tokens
(/v1/completions with the end-of-text tokens banned by logit_bias, so every stream generates exactly that
many, on both servers). Per variant and N: the aggregate generated tokens per second over the wall time, the
median of the server's own prompt and decode speeds, and the servers' CPU time per generated token (from
/proc: less sensitive to other work on the machine than the wall clock).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from backends.llamacpp.llama_server import find_binary, server_argv
from backends.llamacpp.model import default_model_path
from bench.llamacpp import DOCUMENT
from bench.processes import HOST, Server, ServerFailed, Servers, free_port


@dataclass
class Sample:
    wall: float
    generated: int
    cpu_seconds: float
    prompt_speeds: list[float]
    decode_speeds: list[float]


@dataclass
class Variant:
    name: str
    binary: Path | None  # None: llama-cpp-python's server
    extra: list[str]
    instances: int
    env: dict[str, str] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)
    samples: dict[int, list[Sample]] = field(default_factory=dict)


def parse_variant(spec: str) -> Variant:
    """NAME[*INSTANCES][@BINARY]=ARGS"""
    head, _, rest = spec.partition("=")
    head, _, binary = head.partition("@")
    name, _, count = head.partition("*")
    words = shlex.split(rest)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    path = None if binary == "python" else Path(binary) if binary else find_binary()
    return Variant(name=name, binary=path, extra=words, instances=int(count or 1), env=env)


def slots_of(extra: list[str], default: int) -> int:
    """The variant's -np/--parallel, so that the launcher's --ctx-size gives each slot its usual context."""
    for flag, value in itertools.pairwise(extra):
        if flag in ("-np", "--parallel"):
            return int(value)
    return default


# Copies of the document in the prompt.
PROMPTS = {"short": 0, "document": 1, "long": 3}
# SmolLM2's <|endoftext|>, <|im_start|>, <|im_end|>: banned, so that every answer is exactly max_tokens long.
NO_END = {"0": -100, "1": -100, "2": -100}


async def one_completion(session: aiohttp.ClientSession, server: Server, tokens: int,
                         copies: int) -> dict[str, float]:
    opening = f"Session {uuid.uuid4().hex}."
    document = DOCUMENT * copies
    prompt = (f"{opening} Write a long story about a lighthouse keeper.\n" if not copies else
              f"{opening} Here is a document.\n\n{document}\n\nQuestion: who was Elias Marr and what did he "
              "record?\nAnswer:")
    body = {"model": "probe", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "logit_bias": NO_END}
    async with session.post(f"{server.base_url}/v1/completions", json=body) as response:
        response.raise_for_status()
        reply = await response.json()
    timings: dict[str, float] = reply.get("timings", {})
    return {**timings, "completion_tokens": reply["usage"]["completion_tokens"]}


async def measure(variant: Variant, streams: int, tokens: int, session: aiohttp.ClientSession,
                  copies: int = 1) -> Sample:
    targets = [variant.servers[i % len(variant.servers)] for i in range(streams)]
    cpu_before = sum(s.cpu_seconds() for s in variant.servers)
    started = time.perf_counter()
    results = await asyncio.gather(*(one_completion(session, s, tokens, copies) for s in targets))
    wall = time.perf_counter() - started
    cpu = sum(s.cpu_seconds() for s in variant.servers) - cpu_before
    return Sample(wall=wall, generated=int(sum(r["completion_tokens"] for r in results)), cpu_seconds=cpu,
                  prompt_speeds=[r["prompt_per_second"] for r in results if "prompt_per_second" in r],
                  decode_speeds=[r["predicted_per_second"] for r in results if "predicted_per_second" in r])


def median_or_none(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "—"


def report(variants: list[Variant], streams: list[int], rounds_done: int, args: argparse.Namespace) -> str:
    lines = [
        f"`python -m bench.llama_probe {' '.join(shlex.quote(a) for a in sys.argv[1:])}`",
        "",
        (f"{os.cpu_count()} cores; {rounds_done} round(s); {args.tokens} generated tokens per stream; "
        "tokens/s = all streams' generated tokens over the wall time (median of the rounds); per-stream "
        "speeds are the server's own timings (median); CPU ms/token = the servers' CPU time per generated "
        "token, prompt included."),
        "",
        "| variant | streams | tokens/s | (rounds) | decode tok/s per stream | prompt tok/s | CPU ms/token |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for v in variants:
        for n in streams:
            samples = v.samples.get(n, [])
            if not samples:
                continue
            rates = [s.generated / s.wall for s in samples]
            decode = median_or_none([x for s in samples for x in s.decode_speeds])
            prompt = median_or_none([x for s in samples for x in s.prompt_speeds])
            cpu_ms = 1000 * sum(s.cpu_seconds for s in samples) / sum(s.generated for s in samples)
            lines.append(f"| {v.name} | {n} | **{statistics.median(rates):.1f}** | "
                         f"{', '.join(f'{r:.1f}' for r in rates)} | {decode} | {prompt} | {cpu_ms:.1f} |")
    return "\n".join(lines) + "\n"


def instance(variant: Variant, number: int, model: Path, streams: int, log_dir: Path) -> Server:
    port = free_port()
    if variant.binary is None:
        argv = [sys.executable, "-m", "backends.llamacpp", "--host", HOST, "--port", str(port),
                "--alias", "probe", *variant.extra]
        ready = "/v1/models"
    else:
        argv = server_argv(variant.binary, model, host=HOST, port=port, alias="probe",
                           parallel=slots_of(variant.extra, streams), embeddings=False) + variant.extra
        ready = "/health"  # 503 while the model loads
    return Server(name=f"{variant.name}-{number}", argv=argv, port=port, ready_path=ready,
                  log_path=log_dir / f"{variant.name}-{number}.log", env=variant.env, start_timeout=120)


async def run(args: argparse.Namespace, variants: list[Variant], log_dir: Path) -> int:
    model = default_model_path()
    streams = args.streams
    deadline = time.monotonic() + args.budget
    timeout = aiohttp.ClientTimeout(total=args.round_timeout)
    # A connection per request: uvicorn (llama-cpp-python) closes idle keep-alive connections after 5 s, and a
    # request sent on one it is closing fails.
    connector = aiohttp.TCPConnector(force_close=True)
    async with Servers() as servers, aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for v in variants:
            v.servers = [instance(v, i, model, max(streams), log_dir) for i in range(v.instances)]
        failures = await servers.start([s for v in variants for s in v.servers], session)
        if failures:
            raise ServerFailed("\n".join(str(f) for f in failures.values()))
        for v in variants:  # warm-up: first-touch page faults and allocations out of the way
            await measure(v, len(v.servers), 8, session)
        done = 0
        for number in range(1, args.rounds + 1):
            if time.monotonic() > deadline:
                print(f"==> budget of {args.budget:g}s spent after {done} round(s)", flush=True)
                break
            order = variants if number % 2 else list(reversed(variants))
            for n in streams:
                for v in order:
                    sample = await measure(v, n, args.tokens, session, PROMPTS[args.prompt])
                    v.samples.setdefault(n, []).append(sample)
                    rate, cpu_ms = sample.generated / sample.wall, 1000 * sample.cpu_seconds / sample.generated
                    print(f"    round {number}: {v.name} n={n}: {rate:.1f} tokens/s, {cpu_ms:.1f} CPU ms/token",
                          flush=True)
            done = number
        if args.keep_logs:
            for v in variants:
                for s in v.servers:
                    head = s.log_path.read_text(errors="replace")[:args.keep_logs]
                    print(f"--- {s.name} ({s.log_path})\n{head}")
    return done


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.llama_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, type=parse_variant,
                        help="NAME[*INSTANCES][@BINARY]=LLAMA_SERVER_ARGS (repeatable)")
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4],
                        help="comma-separated stream counts (default: 1,4)")
    parser.add_argument("--tokens", type=int, default=128, help="generated per stream (default: %(default)s)")
    parser.add_argument("--prompt", choices=PROMPTS, default="document",
                        help="a ~250-token document, three times that (as late in a chat), or one line: "
                        "mostly decoding (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds after which no round starts (default: %(default)s)")
    parser.add_argument("--round-timeout", type=float, default=300)
    parser.add_argument("--keep-logs", type=int, default=0, metavar="CHARS",
                        help="print the first CHARS of each server's log at the end")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    variants: list[Variant] = args.variant
    with tempfile.TemporaryDirectory(prefix="llama-probe-") as log_dir:
        try:
            done = asyncio.run(run(args, variants, Path(log_dir)))
        except ServerFailed as e:
            print(f"probe: {e}", file=sys.stderr)
            sys.exit(1)
    text = report(variants, args.streams, done, args)
    print("\n" + text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
