"""Which days the daily update fetches: a pure function of the date and the settings, checked over years, for
every share index and across month, year and leap-day boundaries; and the date logic around it (the schedules,
the partitions, the freshness deadline), each called with the day it is about, never the wall clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import dagster as dg
import pytest

from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.defs.checks import due_day
from heymilo_pipeline.defs.partitions import POSTINGS, candidate_partitions, daily_partitions, key, keys_of
from heymilo_pipeline.defs.schedules import daily_checks, daily_update, update_requests
from heymilo_pipeline.defs.tags import AS_OF_TAG, KIND_TAG
from heymilo_pipeline.refresh import RefreshPlan, plan, requests_per_day

START = date(2025, 1, 1)
# The last day before each boundary: as_of runs across it, so yesterday, the recent days and the shares do too.
BOUNDARIES = {
    "month end": date(2026, 4, 30),
    "February without a leap day": date(2027, 2, 28),
    "year end": date(2027, 12, 31),
    "leap day": date(2028, 2, 29),
}


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


# --- every share index, across month, year and leap-day boundaries -------------------------------------------


def days_of(ranges: list[DayRange | None]) -> set[date]:
    return {d for r in ranges if r is not None for d in r.days}


def check_plan(p: RefreshPlan, start: date, lookback: int, n: int, active_from: date | None = None) -> None:
    """What holds for any update: the recent days (and the active ones), one share, as disjoint sorted ranges."""
    yesterday = p.as_of - timedelta(days=1)
    assert (p.share_index, p.shares) == (p.as_of.toordinal() % n, n)
    recent_first = max(start, min(yesterday - timedelta(days=lookback), active_from or yesterday))
    assert p.recent == (DayRange(recent_first, yesterday) if recent_first <= yesterday else None), p
    if p.share is not None:  # older than the recent window, within the history
        assert start <= p.share.first and p.share.last <= yesterday - timedelta(days=lookback + 1), p
    # sorted, disjoint and apart: ranges that touched or overlapped were merged into one query
    assert all(a.last + timedelta(days=1) < b.first for a, b in pairwise(p.ranges)), p
    assert days_of(p.ranges) == days_of([p.share, p.recent]), p  # merging lost and added nothing
    touching = p.share is not None and p.recent is not None and p.share.last + timedelta(days=1) >= p.recent.first
    assert len(p.ranges) == (1 if touching else len([r for r in (p.share, p.recent) if r is not None])), p
    if p.share is not None and p.share_index == n - 1:
        assert touching and len(p.ranges) == 1, p  # the last share runs to the recent days: one query, not two
    assert p.days == len(days_of(p.ranges))


def day_of_index(boundary: date, index: int, n: int) -> date:
    """The day with share ``index`` among the ``n`` days around ``boundary`` (from n // 2 days before it)."""
    first = boundary - timedelta(days=n // 2)
    return first + timedelta(days=(index - first.toordinal()) % n)


INDEXED = [
    pytest.param(boundary, lookback, n, index, id=f"{name}-lookback {lookback}-share {index + 1} of {n}")
    for name, boundary in BOUNDARIES.items()
    for lookback, n in ((7, 7), (2, 3), (0, 5))
    for index in range(n)
]


@pytest.mark.parametrize(("boundary", "lookback", "n", "index"), INDEXED)
def test_every_share_index_across_the_boundaries(boundary: date, lookback: int, n: int, index: int) -> None:
    as_of = day_of_index(boundary, index, n)
    for start in (START, boundary - timedelta(days=3 * n), boundary, boundary + timedelta(days=1)):
        for active_from in (None, as_of - timedelta(days=lookback + 12)):
            p = plan(as_of, start, lookback, n, active_from)
            assert p.share_index == index
            check_plan(p, start, lookback, n, active_from)
        # Its cycle (the n updates from the ordinal divisible by n): one share each, in order, apart, and together
        # every day older than the recent window of the cycle's first day, each once.
        cycle = [plan(as_of + timedelta(days=i - index), start, lookback, n) for i in range(n)]
        assert [c.share_index for c in cycle] == list(range(n))
        shares = [set(c.share.days) if c.share else set() for c in cycle]
        assert sum(map(len, shares)) == len(set().union(*shares))
        history_end = cycle[0].as_of - timedelta(days=lookback + 2)
        assert set(DayRange(start, history_end).days if start <= history_end else []) <= set().union(*shares)
        # The n updates from this one fetch every day that existed before it.
        fetched = days_of([r for i in range(n) for r in plan(as_of + timedelta(days=i), start, lookback, n).ranges])
        existed = set(DayRange(start, as_of - timedelta(days=1)).days) if start < as_of else set()
        assert existed <= fetched, sorted(existed - fetched)[:5]


@pytest.mark.parametrize("boundary", BOUNDARIES.values(), ids=BOUNDARIES.keys())
@pytest.mark.parametrize(("lookback", "n"), [(7, 7), (7, 30), (0, 1), (14, 5), (3, 2)])
def test_any_n_consecutive_updates_across_a_boundary(boundary: date, lookback: int, n: int) -> None:
    days = [boundary + timedelta(days=i) for i in range(-2 * n - 20, 2 * n + 20)]
    for start in (START, boundary - timedelta(days=n + lookback), boundary):
        covered = []
        for as_of in days:
            p = plan(as_of, start, lookback, n)
            check_plan(p, start, lookback, n)
            covered.append(days_of(p.ranges))
        for i in range(len(days) - n + 1):
            existed = set(DayRange(start, days[i] - timedelta(days=1)).days) if start < days[i] else set()
            assert existed <= set().union(*covered[i : i + n]), (start, days[i], sorted(existed - covered[i])[:5])


@pytest.mark.parametrize(
    ("as_of", "recent"),
    [
        (date(2026, 5, 1), DayRange(date(2026, 4, 23), date(2026, 4, 30))),
        (date(2026, 5, 3), DayRange(date(2026, 4, 25), date(2026, 5, 2))),
        (date(2027, 3, 1), DayRange(date(2027, 2, 21), date(2027, 2, 28))),
        (date(2028, 1, 1), DayRange(date(2027, 12, 24), date(2027, 12, 31))),
        (date(2028, 1, 4), DayRange(date(2027, 12, 27), date(2028, 1, 3))),
        (date(2028, 3, 1), DayRange(date(2028, 2, 22), date(2028, 2, 29))),
        (date(2028, 3, 2), DayRange(date(2028, 2, 23), date(2028, 3, 1))),
    ],
)
def test_the_recent_days_across_a_boundary(as_of: date, recent: DayRange) -> None:
    """Yesterday and the 7 days before it, by the calendar (written out, not computed like the product does)."""
    p = plan(as_of, START, 7, 7)
    assert p.recent == recent and len(recent) == 8
    assert set(recent.days) <= days_of(p.ranges)
    # A history that starts on the boundary's last day: the recent days stop there.
    assert plan(as_of, recent.last, 7, 7).ranges == [DayRange.single(recent.last)]


def test_a_cycle_over_a_leap_day_written_out() -> None:
    """History from 2028-01-01, 7 shares: the cycle of 2028-03-12..18 reaches 2028-03-09 by its last day,
    31 + 29 + 9 = 69 days, so shares of 10 days; the sixth ends on the leap day, the last starts on March 1 and
    runs into the recent days (one range)."""
    cycle = [plan(date(2028, 3, 12) + timedelta(days=i), date(2028, 1, 1), 7, 7) for i in range(7)]
    assert [p.share_index for p in cycle] == list(range(7))
    assert [str(p.share) for p in cycle] == [
        "2028-01-01..2028-01-10",
        "2028-01-11..2028-01-20",
        "2028-01-21..2028-01-30",
        "2028-01-31..2028-02-09",
        "2028-02-10..2028-02-19",
        "2028-02-20..2028-02-29",
        "2028-03-01..2028-03-09",
    ]
    assert cycle[5].ranges == [
        DayRange(date(2028, 2, 20), date(2028, 2, 29)),
        DayRange(date(2028, 3, 9), date(2028, 3, 16)),
    ]
    assert cycle[6].ranges == [DayRange(date(2028, 3, 1), date(2028, 3, 17))]


# --- the schedules, the partitions and the freshness deadline on those days ----------------------------------


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(POSTINGS, ["P0000001", "P0000002", "P0000003"])
        yield instance


AROUND = [
    pytest.param(boundary + timedelta(days=offset), id=f"{name} {offset:+d}")
    for name, boundary in BOUNDARIES.items()
    for offset in range(-3, 5)
]


@pytest.mark.parametrize("as_of", AROUND)
def test_the_schedules_tag_the_day_they_run_for(as_of: date) -> None:
    for hour, schedule in ((3, daily_update), (6, daily_checks(6)), (23, daily_checks(23))):
        context = dg.build_schedule_context(scheduled_execution_time=datetime(*as_of.timetuple()[:3], hour, tzinfo=UTC))
        request = schedule(context)
        assert isinstance(request, dg.RunRequest)
        assert request.tags[AS_OF_TAG] == as_of.isoformat() and as_of.isoformat() in str(request.run_key)


@pytest.mark.parametrize("as_of", AROUND)
def test_the_update_requests_partitions_that_exist_at_its_hour(as_of: date, instance: dg.DagsterInstance) -> None:
    """One run per range of the plan over every posting; its keys name days the daily partitions hold at 03:00 UTC
    on ``as_of`` (through yesterday, across the boundary), and read back as the range's days."""
    start = as_of - timedelta(days=40)
    todo = plan(as_of, start, 7, 7)
    runs = update_requests(instance, as_of, todo)
    assert isinstance(runs, list) and len(runs) == len(todo.ranges) and len({r.run_key for r in runs}) == len(runs)
    partitions = candidate_partitions(start)
    at_three = datetime(*as_of.timetuple()[:3], 3, tzinfo=UTC)
    existing = daily_partitions(start).get_partition_keys(current_time=at_three)
    assert existing[0] == start.isoformat() and existing[-1] == (as_of - timedelta(days=1)).isoformat()
    assert len(existing) == (as_of - start).days  # one a day, the leap day included
    for run, days in zip(runs, todo.ranges, strict=True):
        first, last = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
        assert (first, last) == (key("P0000001", days.first), key("P0000003", days.last))
        assert keys_of(partitions, [first, last]) == [("P0000001", days.first), ("P0000003", days.last)]
        assert {d.isoformat() for d in days.days} <= set(existing)
        assert run.tags[AS_OF_TAG] == as_of.isoformat() and run.tags[KIND_TAG] == "update"


@pytest.mark.parametrize(
    ("at", "deadline", "due"),
    [
        (datetime(2026, 5, 1, 5, 59, tzinfo=UTC), 6, date(2026, 4, 29)),
        (datetime(2026, 5, 1, 6, tzinfo=UTC), 6, date(2026, 4, 30)),
        (datetime(2027, 3, 1, 6, tzinfo=UTC), 6, date(2027, 2, 28)),
        (datetime(2027, 3, 1, 0, tzinfo=UTC), 6, date(2027, 2, 27)),
        (datetime(2028, 1, 1, 0, tzinfo=UTC), 0, date(2027, 12, 31)),
        (datetime(2028, 1, 1, 22, 59, tzinfo=UTC), 23, date(2027, 12, 30)),
        (datetime(2028, 1, 2, 5, tzinfo=UTC), 6, date(2027, 12, 31)),
        (datetime(2028, 2, 29, 6, tzinfo=UTC), 6, date(2028, 2, 28)),
        (datetime(2028, 3, 1, 5, tzinfo=UTC), 6, date(2028, 2, 28)),
        (datetime(2028, 3, 1, 6, tzinfo=UTC), 6, date(2028, 2, 29)),
        (datetime(2028, 3, 1, 23, 59, 59, tzinfo=UTC), 6, date(2028, 2, 29)),
    ],
)
def test_the_freshness_deadline_across_a_boundary(at: datetime, deadline: int, due: date) -> None:
    """The newest day that must be loaded: yesterday once the deadline hour has passed, the day before until then."""
    assert due_day(at, deadline) == due
