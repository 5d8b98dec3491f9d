"""Per-query statistics, kept by the client and shown as Dagster metadata later."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

PAGE_SIZE = 100  # the most candidates the API returns per request


@dataclass
class QueryStats:
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    pages: int = 0  # pages accepted
    rows: int = 0  # records received in accepted pages
    kept: int = 0  # records yielded (after dropping repeats and next-day boundary rows)
    bytes: int = 0  # response bytes, error bodies included
    seconds: float = 0.0
    waited_seconds: float = 0.0  # time spent waiting for the shared rate budget
    total_count: int | None = None  # pagination.total_count of the first page
    duplicates: int = 0  # a candidate seen twice within one query
    next_day_boundary: int = 0  # created exactly at the exclusive upper bound: the next day's row
    out_of_range: int = 0  # returned although outside the requested days (an API fault)
    undated: int = 0  # created_at null, so no day can be derived from it

    def add(self, other: QueryStats) -> QueryStats:
        """Sum of two queries' figures (``total_count`` adds up when both are known)."""
        merged = QueryStats()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "total_count":
                setattr(merged, f.name, None if a is None or b is None else a + b)
            else:
                setattr(merged, f.name, a + b)
        return merged

    def as_dict(self) -> dict[str, int | float | None]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        out["waited_seconds"] = round(self.waited_seconds, 3)
        return out


def minimum_requests(counts: Iterable[int], page_size: int = PAGE_SIZE) -> int:
    """The fewest requests that page through queries of these sizes: one per ``page_size`` candidates, and at
    least one per query (an empty range still takes a request to learn that it is empty)."""
    return sum(max(1, math.ceil(n / page_size)) for n in counts)
