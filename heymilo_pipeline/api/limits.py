"""One rate budget per API key, shared by every thread, task and process that uses the key.

HeyMilo allows 300 requests per minute per key. A backfill launches one Dagster run (process)
per posting and the daily schedule may run beside it, so the budget cannot live in one client:
it lives in a small state file, guarded by ``fcntl.flock``, that all of them read and advance.

The algorithm is GCRA (a virtual-scheduling token bucket without burst): the file holds the
earliest time the next request may start; taking a slot moves it one interval further. Requests
come out evenly spaced, so there is no burst at the start of a minute for a sliding-window
server to reject. A 429 with ``Retry-After`` pushes that time forward for everyone, so the other
processes back off too instead of each discovering the limit on its own.

We wrote this (about 60 lines) rather than use pyrate-limiter: its multiprocess SQLite bucket
keeps one row per request and sleeps in fixed steps, while here the wait is computed exactly
and a 429 can move the shared schedule.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import struct
import time
from pathlib import Path

_STATE = struct.Struct("<d")

# Pacing exactly at the limit leaves no room for network jitter: two requests sent 200 ms apart
# can arrive closer together and make the 301st of some sliding window. We keep 2 % headroom.
DEFAULT_HEADROOM = 0.98


class SharedRateLimiter:
    """Spaces requests ``window / (limit * headroom)`` seconds apart across processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        requests_per_window: int,
        window_seconds: float = 60.0,
        headroom: float = DEFAULT_HEADROOM,
    ) -> None:
        if requests_per_window < 1:
            raise ValueError("requests_per_window must be at least 1")
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.requests_per_window = requests_per_window
        self.window_seconds = window_seconds
        self.interval = window_seconds / max(1.0, requests_per_window * headroom)

    @classmethod
    def for_key(
        cls,
        state_dir: str | os.PathLike[str],
        api_key: str,
        base_url: str,
        requests_per_window: int,
        window_seconds: float = 60.0,
    ) -> SharedRateLimiter:
        """The limiter every process using this key against this API shares.

        The file name is a hash of key and URL: the same key always meets the same budget, and
        the key itself is never written anywhere.
        """
        digest = hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:20]
        return cls(Path(state_dir) / f"{digest}.gcra", requests_per_window, window_seconds)

    def _update(self, reserve: bool, not_before: float | None = None) -> float:
        """Atomically read and advance the shared schedule; returns when our slot starts."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _STATE.size, 0)
            next_free = _STATE.unpack(raw)[0] if len(raw) == _STATE.size else 0.0
            now = time.time()
            if not_before is not None:
                next_free = max(next_free, not_before)
            start = max(next_free, now)
            if reserve:
                next_free = start + self.interval
            os.pwrite(fd, _STATE.pack(next_free), 0)
            return start
        finally:
            os.close(fd)  # closing releases the flock

    def reserve_slot(self) -> float:
        """Take the next slot; returns its start as epoch seconds."""
        return self._update(reserve=True)

    def reserve(self) -> float:
        """Take the next slot; returns how many seconds to wait before sending."""
        return max(0.0, self.reserve_slot() - time.time())

    async def acquire(self) -> float:
        """Wait for our slot; returns the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        return delay

    def pause_until(self, epoch_seconds: float) -> None:
        """After a 429: nobody sharing this key starts a request before ``epoch_seconds``."""
        self._update(reserve=False, not_before=epoch_seconds)
