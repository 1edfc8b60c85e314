"""The benchmark harness runs end to end in its smallest configuration, and reads wrk's summary right."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.wrk import lua_script, parse_output

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:8080/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.07ms    4.85ms  50.62ms   78.71%
    Req/Sec     3.61k     1.62k    6.57k    66.67%
  Latency Distribution
     50%  890.00us
     75%   12.19ms
     90%   14.65ms
     99%    1.02s
  7567 requests in 3.01s, 3.98MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   2513.95
Transfer/sec:      1.32MB
"""


def test_wrk_summary_is_read_with_units() -> None:
    result = parse_output(WRK_OUTPUT)
    assert result.latency == pytest.approx({50: 890e-6, 75: 12.19e-3, 90: 14.65e-3, 99: 1.02})
    assert (result.requests, result.duration, result.requests_per_second) == (7567, 3.01, 2513.95)
    assert (result.non_2xx, result.socket_errors, result.errors) == (7, 5, 12)


def test_lua_script_escapes_quotes_and_backslashes() -> None:
    script = lua_script(b'{"a":"b\\\\"}', {"Content-Type": "application/json"})
    assert 'wrk.body = "{\\034a\\034:\\034b\\092\\092\\034}"' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (bootstrap.sh installs it)")
def test_quick_run_writes_every_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "direct,gateway",
         "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=55, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "gateway.md").read_text()
    for heading in ("## Added latency, concurrency 1", "## Throughput, concurrency 32", "## Streaming",
                    "## Memory with 100 open streams", "## Throttled upstream", "## Targets (gateway)"):
        assert heading in report
    assert "| gateway |" in report and "| direct |" in report


async def test_responses_bench_runs_in_its_smallest_configuration() -> None:
    from bench.responses import run

    text = await run(requests=2, tokens=4, warmup=0)
    assert "| whole: gateway, translated |" in text and "| stream: gateway, native |" in text
    assert text.count("translation adds") == 2


def test_llamacpp_report_covers_the_chosen_setups_with_cpu_per_token() -> None:
    from bench.llamacpp import Setup, parse_args, report
    from scripts.services import Service

    args = parse_args(["--only", "python,affinity", "--rounds", "1"])
    args.rounds_done = 1
    gateway = Service(name="gw", argv=[], host="127.0.0.1", port=1, ready_path="/", timeout=1)
    python = Setup("python", "llama-cpp-python", "2 × 1 slot", gateway, completion_tokens=100, wall_seconds=10,
                   backend_cpu=4.0, gateway_cpu=0.03, ttft={1: [8.0]})
    server = Setup("affinity", "llama-server, affinity", "2 × 4 slots", gateway, completion_tokens=100,
                   wall_seconds=5, backend_cpu=2.5, gateway_cpu=0.02, ttft={1: [0.5]})
    text = report([python, server], args, [2.0, 2.0])
    rows = [line for line in text.splitlines() if line.startswith("| llama")]
    assert rows == [
        "| llama-cpp-python | 2 × 1 slot | 10.0 | 8000 ms | — | — | 40.0 | 0.3 | 0 |",
        "| llama-server, affinity | 2 × 4 slots | 20.0 | 500 ms | — | — | 25.0 | 0.2 | 0 |",
    ]
    assert "--only python,affinity" in text and "**2.00×** the tokens/s" in text and "meets the target" in text
    assert "25.0 ms vs 40.0 ms (**1.60×**)" in text and "round robin" not in text


def test_llamacpp_bench_refuses_unknown_or_repeated_setups() -> None:
    from bench.llamacpp import parse_args

    for only in ("python,bogus", "python,python", ""):
        with pytest.raises(SystemExit):
            parse_args(["--only", only])


@pytest.mark.timeout(120)
def test_llama_probe_measures_llama_server_and_llama_cpp_python(tmp_path: Path) -> None:
    output = tmp_path / "probe.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.llama_probe", "--streams", "1", "--rounds", "1", "--tokens", "3",
         "--prompt", "short", "--variant", "two*2=-t 1 -np 1", "--variant", "py@python=--threads 1",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.split(" | ")[:2] for line in output.read_text().splitlines() if line.startswith(("| two", "| py"))]
    assert rows == [["| two", "1"], ["| py", "1"]]


def test_instructions_per_request_are_counted_under_callgrind() -> None:
    """bench.instructions end to end, smallest: the gateway under callgrind, two fakes, a count per request."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--concurrency", "1,4", "--requests", "40", "--warmup", "20",
         "--rounds", "1"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| c=")]
    assert [row.split(" ")[1] for row in rows] == ["c=1", "c=4"]
    for row in rows:
        per_request = float(row.rsplit("|", 2)[-2].strip().rstrip("k"))
        # The proxied request of a Python gateway: hundreds of thousands of instructions, not tens or millions.
        assert 100 < per_request < 2000, row


def test_instructions_refuses_a_tree_without_a_gateway(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--tree", f"old={tmp_path}"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "expected NAME=PATH to a checkout with gateway/__main__.py" in done.stderr
