"""Which days the daily update fetches again on a given day: the recent days, plus a rolling share of all history.

The API has no "updated after" filter: a candidate invited in March who is shortlisted in May, or erased
in June, is seen only by fetching March again. So every update fetches

- the **recent** days, ``[yesterday - lookback, yesterday]``, where most changes happen, and
- one **share** of the older history ``[start, yesterday - lookback - 1]``, cut into ``N`` contiguous
  shares (``HEYMILO_FULL_REFRESH_DAYS``), so each day costs about ``1/N`` of a full re-fetch, and
- where it pays, the **active** days: the recent window reaches back to the oldest day, at most
  ``HEYMILO_ACTIVE_DAYS`` old, that still holds an unfinished candidate (one a recruiter has not yet
  shortlisted, dismissed or knocked out), because those records still change (interviews, scores,
  decisions up to weeks later) while finished days rarely do. The caller finds that day in the warehouse.

Share ``s = ordinal(as_of) mod N`` runs on ``as_of``. The share length is fixed per cycle of ``N`` days
(cycles start at ordinals divisible by ``N``) from the history the cycle will have reached by its last
day, and the last share always runs to the end of the history. Hence any ``N`` consecutive updates
fetch every day that existed before the first of them at least once: within a cycle the shares tile
the history, and across two cycles the later cycle's shares are at least as long, so they reach at
least as far. ``heymilo_pipeline_tests/test_refresh.py`` checks this over years of days in milliseconds.

Pure functions of the date and the settings; no Dagster, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from heymilo_pipeline.api.windows import DayRange

if TYPE_CHECKING:
    from heymilo_pipeline.settings import PipelineSettings
    from heymilo_pipeline.storage import Store


@dataclass(frozen=True)
class RefreshPlan:
    """What the update of ``as_of`` fetches: ``recent`` and ``share`` (either may be None: nothing)."""

    as_of: date
    recent: DayRange | None
    share: DayRange | None
    share_index: int
    shares: int

    @property
    def ranges(self) -> list[DayRange]:
        """The day ranges to fetch, one query each per posting; touching or overlapping ranges become one."""
        parts = [r for r in (self.share, self.recent) if r is not None]
        if len(parts) == 2 and parts[0].last + timedelta(days=1) >= parts[1].first:
            return [DayRange(min(parts[0].first, parts[1].first), parts[1].last)]
        return parts

    @property
    def days(self) -> int:
        return sum(len(r.days) for r in self.ranges)

    def describe(self) -> str:
        share = f"share {self.share_index + 1}/{self.shares}: {self.share}" if self.share else "no older days"
        return f"recent and active days {self.recent or 'none'}; {share}"


def plan(
    as_of: date, start: date, lookback_days: int, full_refresh_days: int, active_from: date | None = None
) -> RefreshPlan:
    """The days the update on ``as_of`` fetches (see the module docstring); ``active_from``, the oldest day
    still holding unfinished candidates, stretches the recent days back to it."""
    if full_refresh_days < 1:
        raise ValueError("full_refresh_days must be at least 1")
    yesterday = as_of - timedelta(days=1)
    recent_first = max(start, yesterday - timedelta(days=lookback_days))
    if active_from is not None:
        recent_first = max(start, min(recent_first, active_from))
    recent = DayRange(recent_first, yesterday) if recent_first <= yesterday else None
    n = full_refresh_days
    index = as_of.toordinal() % n
    history_end = _history_end(as_of, lookback_days)
    if history_end < start:
        return RefreshPlan(as_of, recent, None, index, n)
    cycle_start = date.fromordinal(as_of.toordinal() - index)
    # The history grows by a day per update; size the shares for the cycle's last day.
    reach = (_history_end(cycle_start + timedelta(days=n - 1), lookback_days) - start).days + 1
    length = max(1, math.ceil(reach / n))
    first = start + timedelta(days=index * length)
    last = history_end if index == n - 1 else min(history_end, first + timedelta(days=length - 1))
    share = DayRange(first, last) if first <= last else None
    return RefreshPlan(as_of, recent, share, index, n)


def todays_plan(as_of: date, settings: PipelineSettings, store: Store | None) -> RefreshPlan:
    """The plan of the update on ``as_of`` under ``settings``, the active days found in ``store``."""
    active = None
    if settings.active_days and store is not None:
        active = store.oldest_unfinished_day(as_of - timedelta(days=1 + settings.active_days))
    return plan(as_of, settings.start_date, settings.lookback_days, settings.full_refresh_days, active)


def _history_end(as_of: date, lookback_days: int) -> date:
    """The last day older than the recent window of the update on ``as_of``."""
    return as_of - timedelta(days=lookback_days + 2)


def requests_per_day(candidates: int, history_days: int, postings: int, lookback_days: int, shares: int) -> float:
    """Expected requests of one update, at 100 candidates a page: the recent days and one share of a
    workspace of ``candidates`` spread evenly over ``history_days``, plus up to one partly filled page
    per query (two queries per posting)."""
    per_day = candidates / max(1, history_days)
    recent = per_day * (lookback_days + 1)
    share = per_day * max(0, history_days - lookback_days - 1) / shares
    return (recent + share) / 100 + 2 * postings
