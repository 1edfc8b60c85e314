"""What llama.cpp's own server (llama-server) says about itself, read from its answers. Pure parsing, no I/O.

- ``GET /props``: ``total_slots``, the requests it serves at once (its ``--parallel``): the backend's capacity,
  so nobody has to repeat it as ``max_concurrency`` in the gateway's settings (and get it wrong);
- ``GET /metrics`` (with ``--metrics``): ``llamacpp:requests_processing`` and ``llamacpp:requests_deferred``,
  its load as it sees it, which counts the requests of other clients (another gateway replica) too;
- ``GET /slots`` (on by default): one entry per slot with ``is_processing``; the load when /metrics is off.

Garbage yields None: a backend that answers something unexpected is treated as one that said nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

PROPS_PATH = "/props"
METRICS_PATH = "/metrics"
SLOTS_PATH = "/slots"

_PROCESSING = "llamacpp:requests_processing"
_DEFERRED = "llamacpp:requests_deferred"


@dataclass(frozen=True, slots=True)
class ReportedLoad:
    processing: int  # requests in a slot now
    deferred: int  # requests waiting for a slot


def total_slots(body: bytes) -> int | None:
    try:
        props = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    slots = props.get("total_slots") if isinstance(props, dict) else None
    return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots >= 1 else None


def load_from_metrics(text: bytes) -> ReportedLoad | None:
    """The two gauges from Prometheus' text format; None unless both are there."""
    values: dict[str, int] = {}
    for line in text.decode(errors="replace").splitlines():
        name, _, value = line.partition(" ")
        if name in (_PROCESSING, _DEFERRED):
            try:
                values[name] = int(float(value.split()[0]))
            except (ValueError, IndexError):
                return None
    if len(values) != 2:
        return None
    return ReportedLoad(values[_PROCESSING], values[_DEFERRED])


def load_from_slots(body: bytes) -> ReportedLoad | None:
    """Busy slots from /slots (which knows nothing of deferred requests: those count as 0)."""
    try:
        slots = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(slots, list) or not all(isinstance(slot, dict) for slot in slots):
        return None
    return ReportedLoad(sum(slot.get("is_processing") is True for slot in slots), 0)
