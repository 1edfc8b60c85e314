"""Child processes for local runs: each started in its own process group, its output prefixed with its name,
its readiness probed over HTTP, and stopped with SIGTERM, then SIGKILL after a grace period.

Standard library only: it runs before anything is known to be installed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TextIO

TAIL_LINES = 30
# A long log line (a JSON access log, a traceback frame) must not break the reader: asyncio's limit is 64 KiB.
LINE_LIMIT = 1024 * 1024
_COLORS = ("36", "35", "33", "32", "34", "31")  # cyan, magenta, yellow, green, blue, red


class ChildExited(Exception):
    """A child ended while it was expected to keep running."""

    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited with code {child.returncode}")
        self.child = child


class NotReady(Exception):
    """A child did not answer its readiness URL in time."""


class Console:
    """Writes lines to one stream, prefixed with a padded name, colored when the stream is a terminal."""

    def __init__(self, stream: TextIO = sys.stdout, *, width: int = 8) -> None:
        self._stream = stream
        self._width = width
        self._color = stream.isatty() and "NO_COLOR" not in os.environ
        self._assigned: dict[str, str] = {}
        self._gone = False

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self._color else text

    def prefix(self, name: str) -> str:
        code = self._assigned.setdefault(name, _COLORS[len(self._assigned) % len(_COLORS)])
        return self.paint(f"{name:<{self._width}} |", code)

    def line(self, name: str, text: str) -> None:
        self._write(f"{self.prefix(name)} {text}\n")

    def say(self, text: str, *, code: str = "1") -> None:
        """A message from the supervisor itself, bold by default."""
        self._write(self.paint(text, code) + "\n")

    def _write(self, text: str) -> None:
        # The terminal can go away first (window closed, `| head` done reading). Output is then dropped:
        # stopping the children must go on, and their pipes must keep being drained or they block.
        if self._gone:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except OSError:
            self._gone = True


class Child:
    """One process: stdout and stderr merged, copied line by line to the console, the last lines kept."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        console: Console,
        *,
        env: Mapping[str, str] | None = None,
        stop_grace: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.stop_grace = stop_grace  # seconds between SIGTERM and SIGKILL
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._console = console
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def tail(self) -> list[str]:
        return list(self._tail)

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=LINE_LIMIT,
            # Its own process group: a Ctrl-C in the terminal reaches only us, so we decide the order of
            # shutdown, and a signal to the group also reaches anything the child started itself.
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._copy_output(self._process.stdout))

    async def _copy_output(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self._tail.append(text)
            self._console.line(self.name, text)

    async def wait(self) -> int:
        """Until the process exits; its exit code."""
        assert self._process is not None, "not started"
        return await self._process.wait()

    async def stop(self, grace: float | None = None) -> None:
        """SIGTERM to the child's process group, then SIGKILL if it is still there after `grace` seconds
        (default: the child's `stop_grace`)."""
        if grace is None:
            grace = self.stop_grace
        if self._process is None:
            return
        if self._process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._process.wait()), grace)
            except TimeoutError:
                self._console.line(self.name, f"still running {grace:g}s after SIGTERM: SIGKILL")
        # Also when the leader has exited: whatever it started in its group must not outlive it.
        self._signal_group(signal.SIGKILL)
        await self._process.wait()
        if self._pump is not None:
            # With the whole group gone the pipe is closed, so this ends, with the last lines in the tail.
            # Shielded: a caller cancelled while waiting here must not cut the copying short for the next.
            await asyncio.shield(self._pump)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):  # the group is already empty
            os.killpg(self._process.pid, sig)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET url answers 2xx. Blocking: call it through asyncio.to_thread."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def wait_ready(child: Child, url: str, *, timeout: float, others: Sequence[Child] = ()) -> float:
    """Poll `url` until it answers 2xx; return the seconds it took.

    Raises ChildExited when `child`, or any of `others` already running, ends first, and NotReady on timeout.
    """
    started = time.monotonic()
    while True:
        for watched in (child, *others):
            if watched.returncode is not None:
                raise ChildExited(watched)
        if await asyncio.to_thread(http_ok, url):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise NotReady(f"{child.name} did not answer {url} within {timeout:g}s")
        await asyncio.sleep(0.25)


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections there (a stack left running, another server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
