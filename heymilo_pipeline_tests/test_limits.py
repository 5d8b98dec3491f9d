"""The shared rate budget: evenly spaced slots across threads and processes, and 429 pauses."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time
from pathlib import Path

import pytest

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.limits import DEFAULT_HEADROOM, PostgresRateLimiter, SharedRateLimiter
from heymilo_pipeline.settings import Settings
from heymilo_pipeline_tests.support import slots_from_processes, smallest_gap


def _take_slots(path: str, count: int, queue: multiprocessing.Queue) -> None:
    limiter = SharedRateLimiter(path, requests_per_window=1200, window_seconds=60.0, headroom=1.0)
    queue.put([limiter.reserve_slot() for _ in range(count)])


def test_slots_are_spaced_by_the_interval(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(tmp_path / "k.gcra", requests_per_window=600, window_seconds=60.0, headroom=1.0)
    slots = [limiter.reserve_slot() for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert all(abs(gap - 0.1) < 1e-6 for gap in gaps), gaps


def test_headroom_keeps_pacing_under_the_limit(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(tmp_path / "k.gcra", requests_per_window=300)
    assert limiter.interval == pytest.approx(60 / (300 * DEFAULT_HEADROOM))  # 2 % under the key's rate
    assert DEFAULT_HEADROOM == 0.98


def test_processes_share_one_budget(tmp_path: Path) -> None:
    """Three processes taking 20 slots each get 60 distinct slots, never closer than the interval."""
    slots = slots_from_processes(_take_slots, str(tmp_path / "shared.gcra"))
    assert len(slots) == 60
    assert smallest_gap(slots) >= 60.0 / 1200 - 1e-6


def test_tasks_in_one_process_share_the_budget(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(tmp_path / "k.gcra", requests_per_window=6000, window_seconds=60.0, headroom=1.0)

    async def main() -> list[float]:
        async def one() -> float:
            await limiter.acquire()
            return time.time()

        return await asyncio.gather(*(one() for _ in range(10)))

    started = time.time()
    times = asyncio.run(main())
    # ten slots 10 ms apart: the last cannot start before 90 ms have passed
    assert max(times) - started >= 0.09 - 1e-3


def test_pause_holds_every_user_of_the_key(tmp_path: Path) -> None:
    a = SharedRateLimiter(tmp_path / "k.gcra", requests_per_window=6000)
    b = SharedRateLimiter(tmp_path / "k.gcra", requests_per_window=6000)
    until = time.time() + 5 - 1e-3
    a.pause_for(5)
    assert b.reserve_slot() >= until
    assert 4 < b.reserve() <= 5.1


def test_one_file_per_key_and_the_key_is_not_in_it(tmp_path: Path) -> None:
    one = SharedRateLimiter.for_key(tmp_path, "sk_live_SECRET", "https://api.heymilo.ai", 300)
    same = SharedRateLimiter.for_key(tmp_path, "sk_live_SECRET", "https://api.heymilo.ai", 300)
    other = SharedRateLimiter.for_key(tmp_path, "sk_live_OTHER", "https://api.heymilo.ai", 300)
    assert one.path == same.path != other.path
    one.reserve_slot()
    assert "SECRET" not in one.path.name
    assert b"SECRET" not in one.path.read_bytes()
    assert (one.path.stat().st_mode & 0o777) == 0o600


def test_a_budget_url_must_be_postgresql_and_is_never_shown() -> None:
    with pytest.raises(ConfigurationError, match="HEYMILO_RATE_BUDGET_URL: Value error, must be a PostgreSQL URL") as e:
        Settings.from_env({"HEYMILO_RATE_BUDGET_URL": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(e.value)
    settings = Settings.from_env({"HEYMILO_RATE_BUDGET_URL": "postgresql://u:hunter2@h/db", "HEYMILO_API_KEY": "k"})
    assert "hunter2" not in repr(settings) and "hunter2" not in repr(settings.client_settings())
    assert isinstance(settings.client_settings().limiter(), PostgresRateLimiter)  # connects on first use only
    assert isinstance(Settings.from_env({"HEYMILO_API_KEY": "k"}).client_settings().limiter(), SharedRateLimiter)
