"""`python -m scripts.stack` (`make up`): the whole stack on this machine, in one terminal.

Two llama.cpp backends with the embedded model (llama.cpp's llama-server by default, --backend-kind llamacpp
for llama-cpp-python's), the gateway in front of them, and the chat app when it is installed; each started
once the ones it needs answer, each line of output prefixed with its name. Ctrl-C
(or SIGTERM) stops them all, newest first. A child that dies during start-up stops the rest and ends the
run with its last lines of output and a non-zero exit code; so does the gateway or the chat app dying
later. A backend dying later is reported and the rest keeps running: the gateway routes around it.

    .venv/bin/python -m scripts.stack [--gateway-port 8080] [--backend-ports 8081,8082] [--chat-port 8000]
                                      [--backend-kind llama-server|llamacpp] [--parallel 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

from backends.llamacpp.llama_server import DEFAULT_PARALLEL
from scripts import services
from scripts.services import MODEL, Service
from scripts.supervisor import Child, ChildExited, Console, NotReady, port_in_use, wait_ready

# llama-server is the default: on 2 cores, with 8 chats at once, it gets through 1.2-1.3x the tokens/s of
# llama-cpp-python and answers each chat's first token 4-13x sooner (bench/results/llamacpp.md).
BACKEND_KINDS = ("llama-server", "llamacpp")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("STACK_HOST", "127.0.0.1"))
    parser.add_argument("--gateway-port", type=int, default=_env_int("STACK_GATEWAY_PORT", 8080))
    parser.add_argument(
        "--backend-ports",
        default=os.environ.get("STACK_BACKEND_PORTS", "8081,8082"),
        help="comma-separated, one llama.cpp backend per port (default: %(default)s)",
    )
    parser.add_argument("--chat-port", type=int, default=_env_int("STACK_CHAT_PORT", 8000))
    parser.add_argument(
        "--threads", type=int, default=_env_int("STACK_THREADS", 1), help="CPU threads per backend"
    )
    parser.add_argument(
        "--backend-kind", choices=BACKEND_KINDS, default=os.environ.get("STACK_BACKEND_KIND", "llama-server"),
        help="llama-server (llama.cpp's own server, parallel slots) or llamacpp (llama-cpp-python's, one "
             "request at a time) (default: %(default)s)",
    )
    parser.add_argument(
        "--parallel", type=int, default=_env_int("STACK_PARALLEL", DEFAULT_PARALLEL),
        help="llama-server slots per backend (default: %(default)s)",
    )
    parser.add_argument("--no-chat", action="store_true", help="do not start the chat app")
    args = parser.parse_args(argv)
    try:
        args.backend_ports = [int(p) for p in args.backend_ports.split(",") if p.strip()]
    except ValueError:
        parser.error(f"--backend-ports must be comma-separated port numbers, got {args.backend_ports!r}")
    if not args.backend_ports:
        parser.error("--backend-ports names no port")
    return args


def chat_app_installed() -> bool:
    """Whether `python -m chat_client` can run; found without importing the app itself."""
    spec = importlib.util.find_spec("chat_client")
    locations = (spec.submodule_search_locations or []) if spec else []
    return any((Path(location) / "__main__.py").is_file() for location in locations)


def plan(args: argparse.Namespace) -> list[list[Service]]:
    """Start-up stages: every service of a stage starts together, once the stage before is ready."""
    if args.backend_kind == "llama-server":
        backends = [
            services.llama_server(f"llama-{i}", host=args.host, port=port, threads=args.threads,
                                  parallel=args.parallel)
            for i, port in enumerate(args.backend_ports, start=1)
        ]
    else:
        backends = [
            services.llama_backend(f"llama-{i}", host=args.host, port=port, threads=args.threads)
            for i, port in enumerate(args.backend_ports, start=1)
        ]
    gateway = services.gateway(host=args.host, port=args.gateway_port, backends=backends)
    stages = [backends, [gateway]]
    if not args.no_chat and chat_app_installed():
        stages.append([services.chat_app(host=args.host, port=args.chat_port, gateway_service=gateway)])
    return stages


def _python_for_humans() -> str:
    """The interpreter as a person would type it: `.venv/bin/python` rather than an absolute path."""
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable


def banner(stages: list[list[Service]], args: argparse.Namespace) -> str:
    base = f"http://{args.host}:{args.gateway_port}/v1"
    started = [s for stage in stages for s in stage]
    rows = [f"  {'gateway':<9} {base}   (metrics: /metrics, readiness: /readyz)"]
    rows += [f"  {'chat app':<9} {s.base_url}/" for s in started if s.name == "chat"]
    rows += [f"  {s.name:<9} {s.base_url}/v1" for s in started if s.name.startswith("llama-")]
    prompt = "Say hello in five words."
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 32})
    return "\n".join([
        "",
        "The stack is up:",
        *rows,
        "",
        "Try the gateway with curl (-i shows x-gateway-backend, the backend that answered):",
        f"  curl -i {base}/chat/completions -H 'Content-Type: application/json' \\",
        f"    -d '{body}'",
        "",
        "or with the openai SDK:",
        f"  {_python_for_humans()} - <<'EOF'",
        "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{base}", api_key="unused")',
        "  reply = client.chat.completions.create(",
        f'      model="{MODEL}", max_tokens=32,',
        f'      messages=[{{"role": "user", "content": "{prompt}"}}],',
        "  )",
        "  print(reply.choices[0].message.content)",
        "  EOF",
        "",
        "Ctrl-C stops everything.",
        "",
    ])


class Stack:
    """The running children, in start order."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.children: list[Child] = []
        self.essential: dict[Child, bool] = {}

    async def start(self, stages: list[list[Service]]) -> None:
        """Start stage by stage; raises ChildExited or NotReady when something fails to come up."""
        for stage in stages:
            started = []
            for service in stage:
                self.console.say(f"==> starting {service.name} on port {service.port}")
                child = service.child(self.console)
                await child.start()
                self.children.append(child)
                self.essential[child] = service.essential
                started.append((service, child))
            for service, child in started:
                others = [c for c in self.children if c is not child]
                seconds = await wait_ready(child, service.ready_url, timeout=service.timeout, others=others)
                self.console.say(f"==> {service.name} ready ({service.ready_url} answered in {seconds:.1f}s)")

    async def watch(self) -> Child:
        """Report children that exit; return the first essential one, or the last backend."""
        waits = {asyncio.create_task(child.wait()): child for child in self.children}
        backends_left = sum(not self.essential[child] for child in self.children)
        try:
            while True:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    child = waits.pop(task)
                    if not self.essential[child]:
                        backends_left -= 1
                    if self.essential[child] or backends_left == 0:
                        return child
                    await report_exit(self.console, child, "; the gateway routes around it")
        finally:
            for task in waits:
                task.cancel()

    async def stop(self) -> None:
        """Newest first: the chat app and the gateway go before the backends they call."""
        for child in reversed(self.children):
            if child.running:
                self.console.say(f"==> stopping {child.name}")
            await child.stop()


async def report_exit(console: Console, child: Child, when: str) -> None:
    await child.stop()  # anything it started goes too, and its output is read to the last line
    console.say(f"!! {child.name} exited with code {child.returncode}{when}; its last lines:", code="1;31")
    for line in child.tail():
        console.say(f"   {line}", code="0")


async def run(args: argparse.Namespace) -> int:
    console = Console()
    stages = plan(args)
    if not args.no_chat and len(stages) < 3:
        console.say("==> the chat app (chat_client) is not installed: starting without it")
    busy = [s for stage in stages for s in stage if port_in_use(args.host, s.port)]
    if busy:
        for s in busy:
            console.say(f"!! port {s.port} for {s.name} is in use (is a stack already running?)", code="1;31")
        return 1

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop_requested.set)

    stack = Stack(console)

    async def start_and_watch() -> int:
        try:
            await stack.start(stages)
        except ChildExited as e:
            await report_exit(console, e.child, " during start-up")
            return 1
        except NotReady as e:
            console.say(f"!! {e}", code="1;31")
            return 1
        console.say(banner(stages, args))
        child = await stack.watch()
        await report_exit(console, child, ", stopping the stack")
        return 1

    main = asyncio.create_task(start_and_watch())
    stopper = asyncio.create_task(stop_requested.wait())
    try:
        done, _ = await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if main in done:
            return main.result()
        console.say("\n==> stop requested")
        return 0
    finally:
        for task in (main, stopper):
            task.cancel()
        await asyncio.gather(main, stopper, return_exceptions=True)
        await stack.stop()
        console.say("==> all stopped")


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
