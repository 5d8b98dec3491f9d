"""Sliding-window-log rate limiting per API key (the documented 300 requests / minute / key)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # whole seconds until the oldest counted request leaves the window
    retry_after_s: int  # only meaningful when not allowed


class SlidingWindowLog:
    """Counts the timestamps of accepted requests in the last ``window_s`` seconds.

    Also used without a limit, purely to measure: ``max_in_window`` is the largest number of
    timestamps that ever shared one window.
    """

    def __init__(self, limit: int | None, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._logs: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self.max_in_window = 0

    def hit(self, key: str) -> RateDecision:
        """Count one request for ``key`` unless it is over the limit (rejections are not counted)."""
        now = self._clock()
        with self._lock:
            log = self._logs.setdefault(key, deque())
            cutoff = now - self.window_s
            while log and log[0] <= cutoff:
                log.popleft()
            limit = self.limit
            if limit is not None and len(log) >= limit:
                wait = max(1, math.ceil(log[0] + self.window_s - now))
                return RateDecision(False, limit, 0, wait, wait)
            log.append(now)
            self.max_in_window = max(self.max_in_window, len(log))
            reset = max(0, math.ceil(log[0] + self.window_s - now))
            if limit is None:
                return RateDecision(True, 0, 0, reset, 0)
            return RateDecision(True, limit, limit - len(log), reset, 0)

    def reset_max(self) -> None:
        """Restart the measurement; the window itself is kept so limiting stays correct."""
        with self._lock:
            self.max_in_window = 0
