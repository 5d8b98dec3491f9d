"""Live figures of the fetching done in this process, for a terminal display.

The candidate step reports every page and every finished posting here (cheap: a lock and a few integers);
``heymilo-pipeline`` draws them while its runs execute in the same process. Nobody reads them when the
daemon runs the step, which then costs nothing worth measuring. No Dagster here: the core stays free of it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from heymilo_pipeline.api.stats import PAGE_SIZE, QueryStats


@dataclass
class _Posting:
    requests: int = 0
    retries: int = 0
    pages: int = 0
    rows: int = 0
    total: int | None = None  # the API's total_count for the query
    done: bool = False
    failed: bool = False


@dataclass(frozen=True)
class Snapshot:
    """The figures at one moment: the current stage's postings, and the totals of the whole command."""

    stage: str
    postings: int  # postings the stage covers
    done: int
    failed: int
    pages: int
    rows: int
    expected_rows: int | None  # when every started posting's total_count is known
    requests: int
    retries: int
    elapsed_s: float
    remaining_requests: int | None  # None before any posting has said how big it is
    results: tuple[int, int, float] | None = None  # a results stage: (answered, due, requests a minute at the share)

    def seconds_left(self, requests_per_minute: float) -> float | None:
        """Time the remaining requests take at the key's rate (the API's ceiling, not our speed)."""
        if self.remaining_requests is None:
            return None
        return self.remaining_requests * 60.0 / requests_per_minute


class Board:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stage = ""
        self._expected = 0
        self._current: dict[str, _Posting] = {}
        self._finished = _Posting()  # sums over stages already left
        self._results: tuple[int, int, float] | None = None

    def stage(self, label: str, postings: int) -> None:
        """A new stage (a run, or a backfill of several runs) covering ``postings`` postings."""
        with self._lock:
            for posting in self._current.values():
                self._add(self._finished, posting)
            self._stage, self._expected, self._current = label, postings, {}
            self._results = None

    def results(self, answered: int, due: int, stats: QueryStats, per_minute: float) -> None:
        """The interview results step: ``answered`` of the ``due`` results, one request each at ``per_minute``."""
        with self._lock:
            if self._results is None:  # the results step is a stage of its own
                for posting in self._current.values():
                    self._add(self._finished, posting)
                self._stage, self._expected, self._current = "interview results", 0, {}
            self._results = (answered, due, per_minute)
            self._update("results", stats)

    def page(self, posting_id: str, stats: QueryStats) -> None:
        with self._lock:
            self._update(posting_id, stats)

    def finished(self, posting_id: str, stats: QueryStats, *, failed: bool) -> None:
        with self._lock:
            posting = self._update(posting_id, stats)
            posting.done, posting.failed = True, failed

    def snapshot(self) -> Snapshot:
        with self._lock:
            current = list(self._current.values())
            total = _Posting()
            for posting in (self._finished, *current):
                self._add(total, posting)
            done = [p for p in current if p.done]
            return Snapshot(
                stage=self._stage,
                postings=max(self._expected, len(current)),
                done=len(done),
                failed=sum(p.failed for p in done),
                pages=total.pages,
                rows=total.rows,
                expected_rows=self._expected_rows(current),
                requests=total.requests,
                retries=total.retries,
                elapsed_s=time.monotonic() - self._started,
                remaining_requests=self._remaining(current),
                results=self._results,
            )

    def _update(self, posting_id: str, stats: QueryStats) -> _Posting:
        posting = self._current.setdefault(posting_id, _Posting())
        posting.requests, posting.retries, posting.pages = stats.requests, stats.retries, stats.pages
        posting.rows = stats.rows
        if stats.total_count is not None:  # a posting's summed stats may not know it; its pages did
            posting.total = stats.total_count
        return posting

    @staticmethod
    def _add(into: _Posting, posting: _Posting) -> None:
        into.requests += posting.requests
        into.retries += posting.retries
        into.pages += posting.pages
        into.rows += posting.rows

    def _expected_rows(self, current: list[_Posting]) -> int | None:
        if any(p.total is None for p in current) or len(current) < self._expected:
            return None
        return self._finished.rows + sum(p.total or 0 for p in current)

    def _remaining(self, current: list[_Posting]) -> int | None:
        """Pages still to fetch: what started postings have left, and for postings not started yet what a
        finished posting of this stage took on average (one request when none has finished)."""
        sized = [p for p in current if p.total is not None]
        if not sized:
            return None
        left = sum(0 if p.done else max(0, math.ceil((p.total or 0) / PAGE_SIZE) - p.pages) for p in sized)
        finished = [p for p in sized if p.done]
        per_posting = sum(p.pages for p in finished) / len(finished) if finished else 1.0
        return left + round(per_posting * max(0, self._expected - len(current)))


BOARD = Board()
