"""HTTP load with wrk: one POST body from a Lua script, the numbers read back from wrk's own summary.

wrk is closed-loop (each connection sends its next request when the previous answer arrived), so `connections`
is the concurrency. It runs one thread: on two cores a second wrk thread would only take CPU from the servers.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)


class WrkFailed(Exception):
    """wrk is missing, exited with an error, or printed something we cannot read."""


@dataclass(frozen=True)
class WrkResult:
    requests: int  # completed responses, whatever their status
    duration: float  # seconds
    requests_per_second: float
    latency: dict[int, float]  # percentile (50, 75, 90, 99) -> seconds
    non_2xx: int  # wrk counts every status >= 400 here (its "Non-2xx or 3xx responses")
    socket_errors: int  # connect + read + write + timeout

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def successes(self) -> int:
        return self.requests - self.non_2xx

    @property
    def attempts(self) -> int:
        # A request cut by a read error or a timeout never completed, so it is not among `requests`.
        return self.requests + self.socket_errors


def parse_output(text: str) -> WrkResult:
    """Read the summary `wrk --latency` prints."""
    percentiles = {int(p): float(value) * _UNITS[unit] for p, value, unit in _PERCENTILE.findall(text)}
    requests = _REQUESTS.search(text)
    rate = _RATE.search(text)
    if requests is None or rate is None or set(percentiles) != {50, 75, 90, 99}:
        raise WrkFailed(f"cannot read wrk's summary:\n{text}")
    socket = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(requests.group(1)),
        duration=float(requests.group(2)) * _UNITS[requests.group(3)],
        requests_per_second=float(rate.group(1)),
        latency=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
    )


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{_lua_string(name.encode())}] = {_lua_string(value.encode())}")
    return "\n".join(lines) + "\n"


def _lua_string(data: bytes) -> str:
    """A double-quoted Lua string: printable ASCII as is, any other byte (and \\ and ") a \\ddd escape."""
    return '"' + "".join(
        chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in data
    ) + '"'


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkFailed("wrk is not installed: run scripts/bootstrap.sh (or `apt-get install -y wrk`)")
    return path


async def wrk_version() -> str:
    process = await asyncio.create_subprocess_exec(
        wrk_path(), "-v", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    first = out.decode(errors="replace").splitlines()[0] if out else "wrk"
    return first.split(" Copyright")[0].strip()


async def run_wrk(url: str, *, script: Path, connections: int, duration: int, timeout: float) -> WrkResult:
    """`duration` whole seconds of load (wrk's own resolution); `timeout` is wrk's per-request timeout."""
    argv = [
        wrk_path(), "--latency", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout:g}s",
        "-s", str(script), url,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        # wrk stops itself after `duration`; this bound only catches a wrk that hangs.
        out, _ = await asyncio.wait_for(process.communicate(), duration + timeout + 15)
    except (TimeoutError, asyncio.CancelledError):
        process.kill()
        await process.wait()
        raise
    text = out.decode(errors="replace")
    # wrk reports an error in its Lua script and then runs anyway, without it: a load we did not mean to send.
    if process.returncode != 0 or f"{script}:" in text:
        raise WrkFailed(f"{' '.join(argv)} exited with {process.returncode}:\n{text}")
    return parse_output(text)
