"""Completeness against the API: does the warehouse hold as many candidates per posting as the API counts?

One ``limit=1`` range query per posting (``pagination.total_count`` from HEYMILO_START_DATE through the last
due day) against the rows stored for those days. Where they differ, the range is bisected: counting the
left half costs one request and the right half is the difference, so each differing day is found in about
``log2(days)`` requests, within a budget per posting. No Dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from heymilo_pipeline.api.client import HeyMiloClient, gather_bounded
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.storage import Store

# Requests one posting may spend locating differences (beyond its first count).
BISECT_BUDGET = 40


@dataclass
class Difference:
    days: DayRange
    api: int
    stored: int

    def as_dict(self) -> dict[str, object]:
        return {"days": str(self.days), "api": self.api, "stored": self.stored}


@dataclass
class Completeness:
    posting_id: str
    days: DayRange
    api: int | None  # None: the API did not report total_count
    stored: int
    differences: list[Difference] = field(default_factory=list)  # single days, or ranges the budget left whole
    stats: QueryStats = field(default_factory=QueryStats)
    stored_by_day: dict[date, int] = field(default_factory=dict, repr=False)  # days holding rows

    @property
    def complete(self) -> bool:
        return self.api is None or self.api == self.stored

    @property
    def gaps(self) -> list[Difference]:
        """Differences over days that hold no rows at all: a hole in the mirror, not a change since the fetch."""
        return [d for d in self.differences if not any(self.stored_by_day.get(day) for day in d.days.days)]


async def completeness(
    client: HeyMiloClient, store: Store, posting_ids: list[str], days: DayRange, budget: int = BISECT_BUDGET
) -> list[Completeness]:
    """Every posting's count against the API over ``days`` (several postings at once)."""
    stored_by_posting = store.rows_by_day(posting_ids, days)

    async def one(posting_id: str) -> Completeness:
        stored_by_day = stored_by_posting[posting_id]
        stored = _stored(stored_by_day, days)
        result = Completeness(posting_id, days, None, stored, stored_by_day=stored_by_day)
        result.api = await client.count_candidates(posting_id, days, result.stats)
        if result.api is None or result.api == stored:
            return result
        pending = [(days, result.api)]
        spent = 0
        while pending:
            span, api = pending.pop(0)
            here = _stored(stored_by_day, span)
            if api == here:
                continue
            if len(span) == 1 or spent >= budget:
                result.differences.append(Difference(span, api, here))
                continue
            middle = span.first + timedelta(days=len(span) // 2 - 1)
            left, right = DayRange(span.first, middle), DayRange(middle + timedelta(days=1), span.last)
            left_api = await client.count_candidates(posting_id, left, result.stats)
            spent += 1
            if left_api is None:
                result.differences.append(Difference(span, api, here))
                continue
            pending += [(left, left_api), (right, api - left_api)]
        result.differences.sort(key=lambda d: d.days.first)
        return result

    async with client:
        return await gather_bounded([lambda p=p: one(p) for p in posting_ids], client.settings.max_concurrency)


def _stored(by_day: dict[date, int], span: DayRange) -> int:
    return sum(n for day, n in by_day.items() if span.first <= day <= span.last)
