"""``python -m bench.redis_gateway``: a private redis-server on a free port, then the gateway (with whatever
GATEWAY_* the bench set) sharing its routing state there. Both live in the bench server's session, so
stopping the server stops both."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from bench.processes import HOST, free_port


def start_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", workdir,
         "--loglevel", "warning"],
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bench.redis_gateway: redis-server did not start on {HOST}:{port}")
        time.sleep(0.05)


def main() -> None:
    from gateway.__main__ import main as gateway_main

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        redis = start_redis(port, workdir)
        os.environ["GATEWAY_STATE_URL"] = f"redis://{HOST}:{port}/0"
        try:
            gateway_main()
        finally:
            redis.terminate()
            redis.wait(timeout=10)


if __name__ == "__main__":
    main()
