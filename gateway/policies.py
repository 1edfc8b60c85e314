"""Load-balancing policies: which member of a tier of equally good backends takes the next request.

Each policy is a small object with one method, chosen once when the balancer is built (sglang-router's
``LoadBalancingPolicy::select_worker``). It is handed the tier and a load function and returns its choice; it
keeps only its own bookkeeping (a turn counter, current weights) and never changes a backend's state.

    round robin          equal weights: the first, then the second... (a plain rotation)
    smooth weighted      nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c
    least outstanding    the lowest load per unit of weight, ties taken in turn
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.backend_state import BackendState
from gateway.settings import BackendKind, RoutingStrategy

Load = Callable[[BackendState], float]


class Policy(Protocol):
    def select(self, tier: Sequence[BackendState], load: Load) -> BackendState:
        """One of ``tier`` (never empty, at least two members) for the next request."""
        ...


class RoundRobin:
    def __init__(self) -> None:
        self._turns = itertools.count()

    def select(self, tier: Sequence[BackendState], load: Load) -> BackendState:
        return tier[next(self._turns) % len(tier)]  # the first backend first, as round robin is expected to


class SmoothWeighted:
    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def select(self, tier: Sequence[BackendState], load: Load) -> BackendState:
        current = self._current
        total = 0
        chosen = tier[0]
        for state in tier:
            current[state.name] = current.get(state.name, 0) + state.weight
            total += state.weight
            if current[state.name] > current.get(chosen.name, 0):
                chosen = state
        current[chosen.name] -= total
        return chosen


class LeastOutstanding:
    def __init__(self) -> None:
        self._turn = 0

    def select(self, tier: Sequence[BackendState], load: Load) -> BackendState:
        # Rotate the starting point so that equally loaded backends take turns instead of the first always
        # winning ties (which would leave the second idle at low concurrency).
        self._turn += 1
        offset = self._turn % len(tier)
        rotated = [*tier[offset:], *tier[:offset]]
        return min(rotated, key=load)


def policy_for(routing: RoutingStrategy, states: Sequence[BackendState]) -> Policy:
    """``auto``: least outstanding when every backend has a known capacity (``max_concurrency``), since a CPU
    llama.cpp server serves one request at a time; otherwise (smooth weighted) round robin."""
    if routing is RoutingStrategy.LEAST_OUTSTANDING or (
        routing is RoutingStrategy.AUTO
        # (a llama-server backend's capacity is its /props total_slots, read by the health checks)
        and all(s.max_concurrency is not None or s.config.kind is BackendKind.LLAMA_SERVER for s in states)
    ):
        return LeastOutstanding()
    if len({s.weight for s in states}) <= 1:
        return RoundRobin()  # equal weights make smooth weighted round robin a plain rotation, at a third the cost
    return SmoothWeighted()
