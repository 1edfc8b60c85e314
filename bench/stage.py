"""One stage of a run: two fake upstreams, and every target started in front of the same two.

The second fake is the reference: "direct" sends its load there, and the throttled scenario leaves it healthy
while it makes the first one answer 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.processes import Server, Servers, free_port
from bench.targets import CHAT_PATH, REPO, Target


@dataclass
class Stage:
    fakes: list[Server]
    targets: list[Target]  # those that are running, in the order asked for
    servers: dict[str, Server]  # target name -> its process (none for direct)
    skipped: dict[str, str] = field(default_factory=dict)  # target name -> why it is not running
    session: aiohttp.ClientSession | None = None

    @property
    def reference(self) -> Server:
        return self.fakes[1]

    @property
    def throttled(self) -> Server:
        return self.fakes[0]

    def chat_url(self, target: str) -> str:
        server = self.servers.get(target, self.reference)
        return server.base_url + CHAT_PATH

    async def fake_stats(self, fake: Server) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(fake.base_url + "/_fake/stats") as response:
            response.raise_for_status()
            return await response.json()

    async def script_fake(self, fake: Server, default: dict[str, Any] | int) -> None:
        """Make every later chat request to `fake` get this reply (a status, or the fake's Reply fields)."""
        assert self.session is not None
        async with self.session.post(fake.base_url + "/_fake/script", json={"default": default}) as response:
            response.raise_for_status()

    async def upstream_in_flight(self) -> int:
        stats = await asyncio.gather(*(self.fake_stats(fake) for fake in self.fakes))
        return sum(s["in_flight"] for s in stats)


def fake_server(name: str, args: Sequence[str], workdir: Path) -> Server:
    port = free_port()
    return Server(
        name=name,
        argv=[sys.executable, "-m", "backends.fake", "--port", str(port), "--name", name, *args],
        port=port,
        ready_path="/health",
        log_path=workdir / f"{name}.log",
        cwd=REPO,
        start_timeout=60,
    )


@contextlib.asynccontextmanager
async def stage(
    label: str, targets: Sequence[Target], fake_args: Sequence[str], workdir: Path, *, say: Any = print
) -> AsyncIterator[Stage]:
    """Start the fakes and every available target; stop them all when the block exits.

    A target that fails to start is skipped (with the reason in `skipped`); a fake that fails ends the run.
    """
    stage_dir = workdir / label
    stage_dir.mkdir(parents=True, exist_ok=True)
    fakes = [fake_server(f"up{i}", fake_args, stage_dir) for i in range(2)]
    upstreams = [fake.base_url for fake in fakes]
    async with Servers() as running, aiohttp.ClientSession() as session:
        skipped = {t.name: t.unavailable for t in targets if t.unavailable is not None}
        servers = {}
        for target in targets:
            if target.unavailable is None:
                server = target.server(upstreams, free_port(), stage_dir)
                if server is not None:
                    servers[target.name] = server
        say(f"==> {label}: starting 2 fake upstreams and {', '.join(servers) or 'no proxy'} in front of them")
        # All at once: the ports are known beforehand, and each proxy copes with upstreams that come up late.
        failures = await running.start([*fakes, *servers.values()], session)
        for fake in fakes:
            if fake.name in failures:
                raise failures[fake.name]
        for name, failure in failures.items():
            skipped[name] = f"failed to start: {failure}"
            del servers[name]
            say(f"    {name} skipped: {failure}")
        live = [t for t in targets if t.name not in skipped]
        yield Stage(fakes=fakes, targets=live, servers=servers, skipped=skipped, session=session)

