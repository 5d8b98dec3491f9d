"""One rate budget per API key, shared by every thread, task, process and host that uses the key.

HeyMilo allows 300 requests per minute per key. A backfill may run beside the daily schedule, and in a
multi-host deployment runs are processes on different machines, so the budget cannot live in one client:
it lives in shared state that all of them read and advance. On one machine that is a small file guarded
by ``fcntl.flock`` (``SharedRateLimiter``); across hosts it is one row of a PostgreSQL table, advanced by
one row-locking UPDATE (``PostgresRateLimiter``).

The algorithm is GCRA (a virtual-scheduling token bucket without burst): the state holds the earliest
time the next request may start; taking a slot moves it one interval further. Requests come out evenly
spaced, so there is no burst at the start of a minute for a sliding-window server to reject. A 429 with
``Retry-After`` pushes that time forward for everyone, so the others back off too instead of each
discovering the limit on its own.

We wrote this (about 100 lines) rather than use pyrate-limiter: its multiprocess buckets keep one row per
request and sleep in fixed steps, while here the wait is computed exactly and a 429 can move the shared
schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import struct
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from heymilo_pipeline.api.errors import ConfigurationError

# The machine's rate budgets live in this directory under the data directory, one file per key.
RATE_BUDGET_DIR = ".ratelimit"

_STATE = struct.Struct("<d")

# Pacing exactly at the limit leaves no room for network jitter: two requests sent 200 ms apart
# can arrive closer together and make the 301st of some sliding window. We keep 2 % headroom.
DEFAULT_HEADROOM = 0.98
BUDGET_TABLE = "heymilo_rate_budget"
# SQLAlchemy's form (what Dagster's storage takes) is accepted too, so one URL can serve both.
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


def libpq_url(url: str) -> str:
    """``url`` as libpq (psycopg2, DuckDB's postgres extension) takes it: without SQLAlchemy's driver name."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


# A lane is a second budget inside the key's: its requests take a slot of the lane, then one of the key's.
RESULTS_LANE = "results"


def budget_id(api_key: str, base_url: str, lane: str = "") -> str:
    """The budget's name: a hash of key and URL (and the lane's name after it). The same key always meets the same
    budget, and the key itself is never written anywhere."""
    digest = hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:20]
    return f"{digest}-{lane}" if lane else digest


class RateLimiter(ABC):
    """Spaces requests ``window / (limit * headroom)`` seconds apart for everyone sharing the state."""

    def __init__(self, requests_per_window: int, window_seconds: float = 60.0, headroom: float = DEFAULT_HEADROOM):
        if requests_per_window < 1:
            raise ValueError("requests_per_window must be at least 1")
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        self.requests_per_window = requests_per_window
        self.window_seconds = window_seconds
        self.interval = window_seconds / max(1.0, requests_per_window * headroom)

    @abstractmethod
    def _advance(self, step: float, pause: float) -> tuple[float, float]:
        """Atomically: the schedule moves to at least now + ``pause``, then ``step`` further. Returns (the slot's
        start, now), both on the state's own clock."""

    def reserve_slot(self) -> float:
        """Take the next slot; returns its start as epoch seconds (on the state's clock)."""
        return self._advance(self.interval, 0.0)[0]

    def reserve(self) -> float:
        """Take the next slot; returns how many seconds to wait before sending."""
        start, now = self._advance(self.interval, 0.0)
        return max(0.0, start - now)

    async def acquire(self) -> float:
        """Wait for our slot; returns the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        return delay

    def pause_for(self, seconds: float) -> None:
        """After a 429: nobody sharing this budget starts a request in the next ``seconds``."""
        self._advance(0.0, seconds)

    def close(self) -> None:  # noqa: B027 (a hook: only some states hold something open)
        """Let go of what the shared state holds open (a file needs nothing)."""


class SharedRateLimiter(RateLimiter):
    """The budget in a local file: every process of this machine that uses the key shares it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        requests_per_window: int,
        window_seconds: float = 60.0,
        headroom: float = DEFAULT_HEADROOM,
    ) -> None:
        super().__init__(requests_per_window, window_seconds, headroom)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_key(
        cls,
        state_dir: str | os.PathLike[str],
        api_key: str,
        base_url: str,
        requests_per_window: int,
        window_seconds: float = 60.0,
        *,
        lane: str = "",
    ) -> SharedRateLimiter:
        """The limiter every process of this machine using this key against this API shares (or its ``lane``)."""
        path = Path(state_dir) / f"{budget_id(api_key, base_url, lane)}.gcra"
        return cls(path, requests_per_window, window_seconds)

    def _advance(self, step: float, pause: float) -> tuple[float, float]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _STATE.size, 0)
            next_free = _STATE.unpack(raw)[0] if len(raw) == _STATE.size else 0.0
            now = time.time()
            start = max(next_free, now + pause)
            os.pwrite(fd, _STATE.pack(start + step), 0)
            return start, now
        finally:
            os.close(fd)  # closing releases the flock


# One statement, so one row lock for the read and the advance; the database's clock, because hosts' clocks
# disagree by more than the 200 ms between two requests, and the spacing is what must hold.
_ADVANCE = f"""
UPDATE {BUDGET_TABLE} AS b SET next_free = greatest(b.next_free, c.now + %(pause)s) + %(step)s
  FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) AS c
 WHERE b.budget = %(budget)s
RETURNING b.next_free - %(step)s, c.now
"""
_CREATE = f"CREATE TABLE IF NOT EXISTS {BUDGET_TABLE} (budget text PRIMARY KEY, next_free float8 NOT NULL)"
_ENSURE = f"INSERT INTO {BUDGET_TABLE} (budget, next_free) VALUES (%s, 0) ON CONFLICT (budget) DO NOTHING"


class PostgresRateLimiter(RateLimiter):
    """The budget in one row of a PostgreSQL table (``heymilo_rate_budget``, made when missing): every host
    that reaches the database shares it. Needs psycopg2 (the ``production`` extra)."""

    def __init__(
        self,
        url: str,
        budget: str,
        requests_per_window: int,
        window_seconds: float = 60.0,
        headroom: float = DEFAULT_HEADROOM,
    ) -> None:
        super().__init__(requests_per_window, window_seconds, headroom)
        self._url = libpq_url(url)  # a password, maybe: never shown
        self.budget = budget
        self._lock = threading.Lock()
        self._conn: Any = None

    def __repr__(self) -> str:
        return f"PostgresRateLimiter(budget={self.budget!r}, interval={self.interval:.3f})"

    @classmethod
    def for_key(
        cls,
        url: str,
        api_key: str,
        base_url: str,
        requests_per_window: int,
        window_seconds: float = 60.0,
        *,
        lane: str = "",
    ) -> PostgresRateLimiter:
        return cls(url, budget_id(api_key, base_url, lane), requests_per_window, window_seconds)

    def _connect(self) -> Any:
        try:
            import psycopg2
        except ImportError:
            raise ConfigurationError(
                "HEYMILO_RATE_BUDGET_URL is set, but psycopg2 is missing: pip install 'heymilo-pipeline[production]'"
            ) from None
        try:
            conn = psycopg2.connect(self._url, connect_timeout=10, application_name="heymilo-rate-budget")
            conn.autocommit = True
            with conn.cursor() as cursor:
                with contextlib.suppress(psycopg2.errors.UniqueViolation):  # another host made it just now
                    cursor.execute(_CREATE)
                cursor.execute(_ENSURE, (self.budget,))
            return conn
        except psycopg2.Error as exc:
            # psycopg2 names the host, port and user, never the password; the URL itself is not repeated.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigurationError(
                f"the shared rate budget's database (HEYMILO_RATE_BUDGET_URL) cannot be used: {reason}. "
                "Check that PostgreSQL is up and the URL's user may create a table; no request was sent."
            ) from None

    def _advance(self, step: float, pause: float) -> tuple[float, float]:
        import psycopg2

        with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                try:
                    with self._conn.cursor() as cursor:
                        cursor.execute(_ADVANCE, {"step": step, "pause": pause, "budget": self.budget})
                        start, now = cursor.fetchone()
                    return start, now
                except psycopg2.OperationalError:
                    self.close()  # the server restarted or the connection dropped: once more on a new one
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def acquire(self) -> float:
        # A round trip to the database: off the event loop, so requests in flight are not held up.
        delay = await asyncio.to_thread(self.reserve)
        if delay > 0:
            await asyncio.sleep(delay)
        return delay

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
