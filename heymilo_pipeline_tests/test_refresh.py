"""Which days the daily update fetches: a pure function of the date and the settings, checked over years."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.refresh import plan, requests_per_day

START = date(2025, 1, 1)


def fetched(as_of: date, lookback: int, n: int, start: date = START) -> set[date]:
    return {d for r in plan(as_of, start, lookback, n).ranges for d in r.days}


@pytest.mark.parametrize(("lookback", "n"), [(7, 7), (7, 1), (0, 3), (3, 30), (7, 10), (14, 5)])
def test_any_n_consecutive_updates_fetch_every_day_that_existed_before_them(lookback: int, n: int) -> None:
    days = [START + timedelta(days=i) for i in range(1, 800)]
    covered = [fetched(d, lookback, n) for d in days]
    for i in range(len(days) - n + 1):
        existing = set(DayRange(START, days[i] - timedelta(days=1)).days)
        union = set().union(*covered[i : i + n])
        assert existing <= union, (days[i], n, sorted(existing - union)[:5])


@pytest.mark.parametrize(("lookback", "n"), [(7, 7), (7, 30), (0, 4)])
def test_each_update_costs_about_one_share_plus_the_recent_days(lookback: int, n: int) -> None:
    for as_of in (date(2025, 9, 1) + timedelta(days=i) for i in range(60)):
        p = plan(as_of, START, lookback, n)
        history = (as_of - START).days - lookback - 1
        assert len(p.ranges) <= 2  # one query per posting for the recent days, one for the share
        assert p.recent == DayRange(as_of - timedelta(days=lookback + 1), as_of - timedelta(days=1))
        assert p.share is not None and len(p.share.days) <= history / n + 2, (as_of, p)
        assert p.share.last < p.recent.first


def test_full_refresh_every_day_is_one_query_over_everything() -> None:
    p = plan(date(2025, 6, 1), START, 7, 1)
    assert p.ranges == [DayRange(START, date(2025, 5, 31))]


def test_before_the_history_starts() -> None:
    assert plan(START, START, 7, 7).ranges == []  # yesterday is before the first day
    young = plan(START + timedelta(days=3), START, 7, 7)
    assert young.ranges == [DayRange(START, START + timedelta(days=2))] and young.share is None


def test_requests_per_day_formula() -> None:
    # 100,000 candidates over a year in 20 postings: the recent 8 days, 1/7 of the rest, 2 partial pages a posting
    assert requests_per_day(100_000, 365, 20, 7, 7) == pytest.approx(100_000 / 365 * (8 + 357 / 7) / 100 + 40)
    assert requests_per_day(100_000, 365, 20, 7, 1) == pytest.approx(1000 + 40)


def test_days_with_unfinished_candidates_join_the_recent_days() -> None:
    as_of = date(2025, 9, 1)
    base = plan(as_of, START, 7, 7)
    active = plan(as_of, START, 7, 7, active_from=date(2025, 8, 5))
    assert active.recent == DayRange(date(2025, 8, 5), date(2025, 8, 31))
    assert active.share == base.share  # the rotation does not move
    assert plan(as_of, START, 7, 7, active_from=date(2025, 8, 30)).recent == base.recent  # within the lookback
    # a share that overlaps the active days is fetched in the same query
    overlapping = plan(date(2025, 9, 6), START, 7, 7, active_from=date(2025, 7, 1))
    assert overlapping.ranges == [DayRange(date(2025, 7, 1), date(2025, 9, 5))]
