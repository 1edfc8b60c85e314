"""The JSON log lines: their shape, level filtering, exceptions, and batching per event-loop turn."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway import logs
from gateway.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def restore_debug_logging():
    yield
    configure_logging("debug")  # what tests/conftest.py set up for everything else


def lines(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines()]


def test_a_line_carries_event_level_timestamp_context_and_fields(capfd) -> None:
    configure_logging("info")
    get_logger().bind(worker=2).info("request", status=200, backend="a", odd=object)
    [line] = lines(capfd.readouterr().out)
    assert line["event"] == "request" and line["level"] == "info" and line["worker"] == 2
    assert (line["status"], line["backend"], line["odd"]) == (200, "a", "<class 'object'>")
    assert line["timestamp"].endswith("Z") and len(line["timestamp"]) == len("2026-01-01T00:00:00.000000Z")


def test_an_event_writer_writes_the_line_the_logger_would(capfd) -> None:
    configure_logging("info")
    get_logger().info("request", status=200, backend="a", duration_ms=1.25)
    logs.event_writer("request")({"status": 200, "backend": "a", "duration_ms": 1.25})
    logged, written = lines(capfd.readouterr().out)
    assert logged.keys() == written.keys()
    assert {k: v for k, v in logged.items() if k != "timestamp"} == {
        k: v for k, v in written.items() if k != "timestamp"
    }
    configure_logging("warning")
    logs.event_writer("request")({"status": 200})  # below the level: nothing
    logs.event_writer("upstream_attempt", "warning")({"status": 429})
    assert [line["event"] for line in lines(capfd.readouterr().out)] == ["upstream_attempt"]


def test_events_below_the_level_are_dropped(capfd) -> None:
    configure_logging("warning")
    log = get_logger()
    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")
    assert [line["event"] for line in lines(capfd.readouterr().out)] == ["c", "d"]


def test_an_exception_is_formatted_into_the_line(capfd) -> None:
    configure_logging("info")
    try:
        raise ZeroDivisionError("nope")
    except ZeroDivisionError:
        get_logger().exception("health_check_failed", backend="a")
    [line] = lines(capfd.readouterr().out)
    assert line["level"] == "error" and line["backend"] == "a"
    assert "ZeroDivisionError: nope" in line["exception"]


async def test_lines_of_one_loop_turn_are_written_together_in_whole_lines(capfd, monkeypatch) -> None:
    configure_logging("info")
    writes: list[int] = []
    real_write = logs.os.write

    def counting_write(fd: int, data) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(logs.os, "write", counting_write)
    log = get_logger()
    for number in range(100):
        log.info("request", number=number, padding="x" * 100)
    assert writes == []  # nothing yet: the turn is not over
    await asyncio.sleep(0)
    written = lines(capfd.readouterr().out)
    assert [line["number"] for line in written] == list(range(100))
    assert 1 < len(writes) < 100 and max(writes) <= 4096  # batched, each write within PIPE_BUF


def test_a_loop_that_closed_with_lines_pending_does_not_hold_back_later_ones(capfd) -> None:
    configure_logging("info")
    loop = asyncio.new_event_loop()
    loop.call_soon(get_logger().info, "first")  # schedules a flush for the loop's next turn...
    loop.call_soon(loop.stop)  # ...which never comes
    loop.run_forever()
    loop.close()
    assert capfd.readouterr().out == ""

    async def log_second() -> None:
        get_logger().info("second")

    asyncio.run(log_second())
    assert [line["event"] for line in lines(capfd.readouterr().out)] == ["first", "second"]
