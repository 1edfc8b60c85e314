"""An Azure-like tokens-per-minute budget over a rolling window.

Time is passed in (`now`), so tests drive it with their own clock instead of sleeping.
"""

from __future__ import annotations

from collections import deque


class TokenBudget:
    def __init__(self, limit: int, window: float = 60.0) -> None:
        if limit <= 0:
            raise ValueError(f"a token budget must be positive, got {limit}")
        self.limit = limit
        self.window = window
        self._spent: deque[tuple[float, int]] = deque()
        self._used = 0

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] + self.window <= now:
            self._used -= self._spent.popleft()[1]

    def remaining(self, now: float) -> int:
        self._expire(now)
        return max(0, self.limit - self._used)

    def wait_time(self, now: float, cost: int) -> float:
        """Seconds until `cost` tokens fit in the window; 0.0 if they fit now."""
        self._expire(now)
        if self._used + cost <= self.limit:
            return 0.0
        if cost > self.limit:
            # Bigger than the whole budget: admitted alone into an empty window, so that a
            # small test budget cannot lock the fake up forever.
            return 0.0 if not self._spent else self._spent[-1][0] + self.window - now
        missing = self._used + cost - self.limit
        for spent_at, tokens in self._spent:
            missing -= tokens
            if missing <= 0:
                return spent_at + self.window - now
        raise AssertionError("unreachable: the whole window frees enough")

    def spend(self, now: float, cost: int) -> None:
        self._expire(now)
        self._spent.append((now, cost))
        self._used += cost
