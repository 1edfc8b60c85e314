"""The servers a benchmark run starts: each in its own session, its output in a log file, ready when an HTTP
probe answers, and stopped (SIGTERM, then SIGKILL) when the run ends, however it ends.

Output goes to a file rather than through a pipe: a pipe would need a reader in this process, and that reader
would compete for the same two cores as the servers being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import aiohttp

HOST = "127.0.0.1"
TAIL_LINES = 25


class ServerFailed(Exception):
    """A server exited early or did not become ready in time; the message ends with its last log lines."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    ready_path: str
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    # Variables of ours with this prefix are not passed on: the server gets only what `env` sets.
    private_prefix: str | None = None
    cwd: Path | None = None
    start_timeout: float = 60.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self._inherited_env(), "PYTHONUNBUFFERED": "1", **self.env},
                cwd=self.cwd,
                # A session of its own: Ctrl-C in the terminal reaches only the benchmark, which then stops
                # every server in order, and a signal to the group also reaches the workers a server forked.
                start_new_session=True,
            )

    def _inherited_env(self) -> dict[str, str]:
        prefix = self.private_prefix
        return {k: v for k, v in os.environ.items() if prefix is None or not k.startswith(prefix)}

    async def wait_ready(self, session: aiohttp.ClientSession) -> float:
        """Poll the readiness URL until it answers 2xx; the seconds it took."""
        started = time.monotonic()
        url = self.base_url + self.ready_path
        while True:
            if self.process is None or self.process.poll() is not None:
                code = self.process and self.process.returncode
                raise ServerFailed(self._failure(f"exited with code {code}"))
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if 200 <= response.status < 300:
                        return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() - started > self.start_timeout:
                raise ServerFailed(self._failure(f"did not answer {url} within {self.start_timeout:g}s"))
            await asyncio.sleep(0.1)

    def _failure(self, what: str) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        except OSError:
            lines = []
        tail = "\n".join(f"    {line}" for line in lines)
        return f"{self.name} {what}; last lines of {self.log_path}:\n{tail}"

    def signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.process.pid, sig)

    def pids(self) -> list[int]:
        """The server and every process it started (workers)."""
        return session_pids(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its workers have used so far, summed."""
        return sum(_cpu_of(pid) for pid in self.pids())

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers, summed (pages they share are counted in each)."""
        return sum(_rss_of(pid) for pid in self.pids())


def session_pids(session_id: int) -> list[int]:
    """Every live process of a session: a server started with start_new_session leads its own."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        # Fields after the command name (which may itself hold spaces or parentheses): state ppid pgrp session
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session_id:
            pids.append(int(entry.name))
    return pids


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0  # it ended while we looked
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0  # a zombie or a process that just exited holds no memory


class Servers:
    """The servers of one phase of the benchmark; `async with` stops them all on the way out."""

    def __init__(self, grace: float = 5.0) -> None:
        self._grace = grace
        self._started: list[Server] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.shield(asyncio.to_thread(self.stop_all))

    async def start(
        self, servers: Sequence[Server], session: aiohttp.ClientSession
    ) -> dict[str, ServerFailed]:
        """Start them all at once and wait until each answers its readiness probe.

        Returns the failures by server name; a server that failed is already stopped.
        """
        for server in servers:
            server.start()
            self._started.append(server)
        outcomes = await asyncio.gather(
            *(server.wait_ready(session) for server in servers), return_exceptions=True
        )
        failures = {}
        for server, outcome in zip(servers, outcomes, strict=True):
            if isinstance(outcome, ServerFailed):
                failures[server.name] = outcome
                await self.stop(server)
            elif isinstance(outcome, BaseException):
                raise outcome
        return failures

    async def stop(self, server: Server) -> None:
        await asyncio.to_thread(self._stop, [server])
        self._started.remove(server)

    def stop_all(self) -> None:
        self._stop(list(reversed(self._started)))
        self._started.clear()

    def _stop(self, servers: list[Server]) -> None:
        for server in servers:
            server.signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for server in servers:
            if server.process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            # Also when the leader is gone: nothing it forked may outlive the run.
            server.signal(signal.SIGKILL)
            server.process.wait()
