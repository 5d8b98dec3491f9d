"""Counters of what the simulator served, for tests and benchmarks (GET /_sim/stats)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from .ratelimit import SlidingWindowLog


class SimStats:
    def __init__(self, limiter: SlidingWindowLog) -> None:
        self._lock = threading.Lock()
        self._limiter = limiter
        # Every authenticated attempt, including rejected ones: what the client offered, as opposed to
        # what the limiter let through (limiter.max_in_window).
        self._attempts = SlidingWindowLog(None, limiter.window_s)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests_by_route: Counter[str] = Counter()
            self.statuses: Counter[int] = Counter()
            self.faults: Counter[str] = Counter()
            # Wall-clock times of the first and the latest request served: the span a benchmark's rate is over.
            self.first_at: float | None = None
            self.last_at: float | None = None
            self._attempts.reset_max()
            self._limiter.reset_max()

    def request(self, route: str) -> None:
        now = time.time()
        with self._lock:
            self.requests_by_route[route] += 1
            self.first_at = now if self.first_at is None else self.first_at
            self.last_at = now

    def attempt(self, key: str) -> None:
        self._attempts.hit(key)

    def status(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": sum(self.requests_by_route.values()),
                "requests_by_route": dict(sorted(self.requests_by_route.items())),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "rate_limited": self.statuses.get(429, 0),
                "faults": dict(sorted(self.faults.items())),
                "rate_limit": self._limiter.limit,
                "rate_window_s": self._limiter.window_s,
                "max_requests_in_window": self._limiter.max_in_window,
                "max_attempts_in_window": self._attempts.max_in_window,
                "first_request_at": self.first_at,
                "last_request_at": self.last_at,
            }
