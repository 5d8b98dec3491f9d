"""One run's work without Dagster: fetch slices (posting x day range), check them, publish them, posting by posting.

A slice is fetched with one range query, flattened page by page, checked, and only then written in one write
of the store (``storage.Store.write_slices``: the lake files and then the DuckDB rows, or one transaction of the
shared tables). Postings are isolated (``sync_postings``): one that fails (404,
an invalid record, a blocking rule) publishes nothing and keeps its previous data, and every other
posting of the run is still published. Only errors that no posting can escape (a wrong API key, the
tables held by someone else) stop the run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

import pyarrow as pa
import pydantic

from heymilo_pipeline import quality
from heymilo_pipeline.api.client import CandidatePage, HeyMiloClient, gather_bounded
from heymilo_pipeline.api.errors import (
    AuthenticationError,
    ConfigurationError,
    HeyMiloError,
    NotFoundError,
    SchemaError,
)
from heymilo_pipeline.api.stats import PAGE_SIZE, QueryStats
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.flatten import flatten
from heymilo_pipeline.lake import RAW_TEXTS, raw_json
from heymilo_pipeline.privacy import Scrubber
from heymilo_pipeline.storage import SliceRows, StorageBusyError, StorageLockedError, Store
from heymilo_pipeline.tables import CANDIDATES, WORKFLOW_STEPS

log = logging.getLogger("heymilo_pipeline.ingest")

PageCallback = Callable[[CandidatePage, QueryStats], None]
# Records flattened together: Arrow's per-call cost (~70 compute calls per flatten) spread over enough rows
# to vanish, while the Python objects waiting for it stay few (a page is 100).
FLATTEN_BATCH = 500


@dataclass(frozen=True)
class Slice:
    posting_id: str
    days: DayRange

    def __str__(self) -> str:
        return f"posting {self.posting_id}, days {self.days}"


@dataclass
class FetchedSlice:
    slice: Slice
    stats: QueryStats
    candidates: pa.Table
    steps: pa.Table
    # Each candidate's interview_id and record as the API sent it (JSON text), row for row with ``candidates``.
    raw: pa.Table = field(repr=False, default_factory=lambda: RAW_TEXTS.empty_table())
    findings: dict[str, quality.Finding] = field(default_factory=dict)

    @property
    def rows_by_day(self) -> dict[date, int]:
        counts = dict.fromkeys(self.slice.days.days, 0)
        for day in self.candidates["created_date"].to_pylist():
            counts[day] = counts.get(day, 0) + 1
        return counts


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """While a run fetches, the collector's full passes skip what was alive before it began: the modules and
    Dagster's definitions, hundreds of thousands of objects it would otherwise walk again and again while
    records come and go (about 10 % of a 100,000-candidate backfill here). Only what exists now is frozen, not
    the run's own objects; unfrozen after, so a long-lived process (a test session) collects as before."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def slices_from_keys(keys: Sequence[tuple[str, date]]) -> list[Slice]:
    """Group (posting, day) partition keys into one slice per posting and run of consecutive days."""
    by_posting: dict[str, list[date]] = {}
    for posting_id, day in keys:
        by_posting.setdefault(posting_id, []).append(day)
    out: list[Slice] = []
    for posting_id, days in by_posting.items():
        ordered = sorted(set(days))
        start = prev = ordered[0]
        for day in ordered[1:]:
            if (day - prev).days != 1:
                out.append(Slice(posting_id, DayRange(start, prev)))
                start = day
            prev = day
        out.append(Slice(posting_id, DayRange(start, prev)))
    return out


# A posting is walked one page at a time (the cursor of page k+1 comes from page k), so one large posting
# alone waits out every answer's latency and cannot spend the key's budget (at 300 ms an answer, about 0.6
# of 300/min). A range of at least SPLIT_MIN_PAGES pages is therefore split into day sub-ranges walked at
# once, each with its own cursor: each costs at most one request more than the minimum (its last page).
SPLIT_MIN_PAGES = 40
PAGES_PER_SPLIT = 20  # no more sub-ranges than this many pages each would fill


def split_days(days: DayRange, parts: int) -> list[DayRange]:
    """``days`` cut into at most ``parts`` consecutive sub-ranges of (nearly) equal length."""
    parts = max(1, min(parts, len(days)))
    cuts = [round(i * len(days) / parts) for i in range(parts + 1)]
    return [
        DayRange(days.first + timedelta(days=cuts[i]), days.first + timedelta(days=cuts[i + 1] - 1))
        for i in range(parts)
    ]


def splits_allowed(waiting: int, max_concurrency: int) -> int:
    """Walkers a posting may split into when ``waiting`` postings of the run have not started yet: none while
    they alone keep every walker busy (a split would only cost requests), all once the run's tail is near."""
    return 1 if waiting >= max_concurrency else max_concurrency


def split_by_counts(days: DayRange, counts: Mapping[date, int], parts: int) -> list[DayRange]:
    """``days`` cut at day boundaries into at most ``parts`` sub-ranges holding about equal ``counts``."""
    total = sum(counts.get(day, 0) for day in days.days)
    if parts <= 1 or total == 0 or len(days) < 2:
        return [days]
    out: list[DayRange] = []
    start, running = days.first, 0
    for day in days.days[:-1]:
        running += counts.get(day, 0)
        if running >= total * (len(out) + 1) / parts and len(out) < parts - 1:
            out.append(DayRange(start, day))
            start = day + timedelta(days=1)
    out.append(DayRange(start, days.last))
    return out


def splits_for(total_count: int | None, has_more: bool, days: DayRange, max_splits: int) -> int:
    """How many sub-ranges to walk a range in, from its first page: 1 unless it is large and spans days."""
    if not has_more or total_count is None or len(days) < 2:
        return 1
    pages = math.ceil(total_count / PAGE_SIZE)
    if pages < SPLIT_MIN_PAGES:
        return 1
    return max(1, min(max_splits, len(days), pages // PAGES_PER_SPLIT))


class _Flattener:
    """Pages in, Arrow out: records are flattened FLATTEN_BATCH at a time and then dropped.

    The slice keeps Arrow tables and each record's JSON text (for the raw lake), never millions of small
    Python objects. Those made every collection of Python's garbage collector slower, and response objects
    (reference cycles in httpx) waited for the rare full collections, so memory grew with every posting of
    a long backfill.
    """

    def __init__(self, item: Slice, scrubber: Scrubber | None) -> None:
        self.item, self.scrubber = item, scrubber
        self.tables: list[pa.Table] = []
        self.step_tables: list[pa.Table] = []
        self.raw: list[pa.Table] = []
        self.pending: list[CandidatePage] = []

    def add(self, page: CandidatePage) -> None:
        if page.raw:
            self.pending.append(page)
            if sum(len(p.raw) for p in self.pending) >= FLATTEN_BATCH:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        records = [record for page in pending for record in page.raw]
        try:
            candidates, steps = flatten(records, partition_day=self.item.days.first)
        except pydantic.ValidationError:
            for page in pending:
                page.candidates  # noqa: B018 - the models raise the client's SchemaError, naming slice and record
            raise
        except (pa.ArrowException, OverflowError, UnicodeError) as exc:
            # Valid for the models, yet not storable: an integer beyond 64 bits, a lone surrogate in a name.
            numbers = sorted(page.number for page in pending)
            raise SchemaError(
                # The exception's text may quote the value (a name, a number): only its kind is shown.
                f"a candidate record on pages {numbers[0]}..{numbers[-1]} cannot be stored ({type(exc).__name__}). "
                "The pipeline stops rather than store it wrongly; report it to HeyMilo, or exclude the posting "
                "until it is fixed.",
                context=pending[0].context,
            ) from None
        if self.scrubber is not None:
            records, candidates = self.scrubber.records(records), self.scrubber.table(candidates)
        self.tables.append(candidates)
        self.step_tables.append(steps)
        self.raw.append(pa.table({"interview_id": candidates["interview_id"], "record": raw_json(records)}))

    def result(self, stats: QueryStats) -> FetchedSlice:
        self.flush()
        return FetchedSlice(
            slice=self.item,
            stats=stats,
            candidates=pa.concat_tables(self.tables) if self.tables else CANDIDATES.empty(),
            steps=pa.concat_tables(self.step_tables) if self.step_tables else WORKFLOW_STEPS.empty(),
            raw=pa.concat_tables(self.raw) if self.raw else RAW_TEXTS.empty_table(),
        )


async def fetch_slice(
    client: HeyMiloClient,
    item: Slice,
    on_page: PageCallback | None = None,
    scrubber: Scrubber | None = None,
    max_splits: int | Callable[[], int] | None = None,
    known: Mapping[date, int] | None = None,
) -> FetchedSlice:
    """One range query, flattened page by page; ``scrubber`` applies HEYMILO_PII to records and rows alike.

    A large range spanning several days is cut into up to twice ``max_splits`` (default: the client's
    max_concurrency; a function is asked when the split is decided) day sub-ranges, ``max_splits`` of them
    walked at once. ``known``: the rows per day this
    posting held at its last load; when they make the range large, the sub-ranges are cut to hold equal
    counts and no request is spent to learn its size. Otherwise the first page tells (total_count): that
    request is then the probe, and its records come again with their sub-range. The slice's figures are the
    sub-ranges' summed (each sub-range's rows equal its own total_count), plus the probe's request.
    """

    def walkers() -> int:
        if max_splits is None:
            return client.settings.max_concurrency
        return max_splits() if callable(max_splits) else max_splits

    out = _Flattener(item, scrubber)
    limit = walkers()
    expected = sum(known.get(day, 0) for day in item.days.days) if known else 0
    # Twice as many sub-ranges as walkers: their sizes differ (by days, or by counts that have changed since),
    # and a walker that finishes early takes the next one instead of idling while the largest one ends alone.
    if known and limit > 1 and (parts := splits_for(expected, True, item.days, 2 * limit)) > 1:
        sub_ranges = split_by_counts(item.days, known, parts)
        return await _walk(client, item, out, sub_ranges, limit, QueryStats(), expected, on_page)
    stats = QueryStats()
    pages = client.candidate_pages(item.posting_id, item.days, stats)
    first = await anext(pages)
    limit = walkers()  # now, after the first answer: other postings may have finished meanwhile
    # One walker: sub-ranges walked one after another would only cost requests.
    parts = splits_for(stats.total_count, first.pagination.has_more, item.days, 2 * limit) if limit > 1 else 1
    if parts == 1:
        out.add(first)
        if on_page is not None:
            on_page(first, stats)
        async for page in pages:
            out.add(page)
            if on_page is not None:
                on_page(page, stats)
        return out.result(stats)
    await pages.aclose()
    # The probe's cost counts; its records do not (they come again with their sub-range).
    probe = QueryStats(
        requests=stats.requests,
        retries=stats.retries,
        rate_limited=stats.rate_limited,
        bytes=stats.bytes,
        seconds=stats.seconds,
        waited_seconds=stats.waited_seconds,
    )
    return await _walk(client, item, out, split_days(item.days, parts), limit, probe, stats.total_count, on_page)


async def _walk(
    client: HeyMiloClient,
    item: Slice,
    out: _Flattener,
    sub_ranges: list[DayRange],
    walkers: int,
    probe: QueryStats,
    expected: int | None,
    on_page: PageCallback | None,
) -> FetchedSlice:
    log.info(
        "posting %s, days %s: ~%s candidates; walking %d day sub-ranges, %d at once (%s)",
        item.posting_id,
        item.days,
        expected,
        len(sub_ranges),
        walkers,
        ", ".join(map(str, sub_ranges)),
    )
    walked = [QueryStats() for _ in sub_ranges]
    seen: set[str] = set()

    async def walk(days: DayRange, part: QueryStats) -> None:
        async for page in client.candidate_pages(item.posting_id, days, part, seen):
            out.add(page)
            if on_page is not None:
                on_page(page, _summed([probe, *walked], expected))  # progress against the expected count

    walks = [lambda days=days, part=part: walk(days, part) for days, part in zip(sub_ranges, walked, strict=True)]
    await gather_bounded(walks, walkers)
    totals = [part.total_count for part in walked]
    return out.result(_summed([probe, *walked], None if None in totals else sum(t or 0 for t in totals)))


def _summed(parts: Sequence[QueryStats], total_count: int | None) -> QueryStats:
    merged = QueryStats()
    for part in parts:
        merged = merged.add(part)
    merged.total_count = total_count
    return merged


async def fetch_slices(
    client: HeyMiloClient,
    items: Sequence[Slice],
    on_page: PageCallback | None = None,
    scrubber: Scrubber | None = None,
) -> list[FetchedSlice]:
    """Every slice, several postings at once (bounded by the client's ``max_concurrency``)."""
    return await gather_bounded(
        [lambda item=item: fetch_slice(client, item, on_page, scrubber) for item in items],
        client.settings.max_concurrency,
    )


def evaluate(fetched: FetchedSlice, bounds: quality.ScoreBounds) -> dict[str, quality.Finding]:
    """Every data rule on one slice (stored on the slice and returned)."""
    data = quality.SliceData(fetched.candidates, fetched.steps, fetched.stats.rows, fetched.stats.total_count)
    fetched.findings = quality.evaluate(data, bounds)
    return fetched.findings


@dataclass
class PostingResult:
    """What became of one posting in a run: published (``error`` None), failed (with why), or gone."""

    posting_id: str
    slices: list[Slice]
    stats: QueryStats = field(default_factory=QueryStats)
    findings: list[tuple[Slice, dict[str, quality.Finding]]] = field(default_factory=list)
    rows_by_day: dict[date, int] = field(default_factory=dict)
    steps_by_day: dict[date, int] = field(default_factory=dict)
    error: str | None = None  # names the posting and the days
    retryable: bool = False
    # 404 for a posting that the latest listing no longer has: deleted in HeyMilo, not a failure.
    gone: bool = False

    @property
    def published(self) -> bool:
        return self.error is None and not self.gone

    @property
    def days(self) -> list[date]:
        return [day for item in self.slices for day in item.days.days]


def group_by_posting(slices: Sequence[Slice]) -> dict[str, list[Slice]]:
    out: dict[str, list[Slice]] = {}
    for item in slices:
        out.setdefault(item.posting_id, []).append(item)
    return out


async def sync_postings(
    client: HeyMiloClient,
    slices: Sequence[Slice],
    store: Store,
    run_id: str,
    *,
    bounds: quality.ScoreBounds,
    scrubber: Scrubber | None = None,
    on_page: PageCallback | None = None,
    on_result: Callable[[PostingResult], None] | None = None,
    is_gone: Callable[[str], bool] | None = None,
    schema_ready: bool = False,
    known: Mapping[str, Mapping[date, int]] | None = None,
) -> list[PostingResult]:
    """Fetch, check and publish every posting's slices, several postings at once; one posting's failure is
    recorded on its result and stops no other. ``on_result`` sees each result as soon as it is final (a
    published posting is then stored). Publishing takes turns (one writer of the store per process).
    ``schema_ready``: the caller already ensured the warehouse schema; otherwise the first posting to publish
    does, once. ``known``: per posting, its rows per day at the last load (how a large posting is split)."""
    turn = asyncio.Lock()
    schema = {"ready": schema_ready}
    groups = group_by_posting(slices)
    unstarted = [len(groups)]

    async def one(posting_id: str, items: list[Slice]) -> PostingResult:
        result = PostingResult(posting_id, items)
        unstarted[0] -= 1
        try:
            counts = (known or {}).get(posting_id)

            def splits() -> int:
                return splits_allowed(unstarted[0], client.settings.max_concurrency)

            fetched = [
                await fetch_slice(client, item, on_page, scrubber, max_splits=splits, known=counts) for item in items
            ]
        except (AuthenticationError, ConfigurationError):
            raise  # the same for every posting: stop the run
        except HeyMiloError as exc:
            result.gone = isinstance(exc, NotFoundError) and is_gone is not None and is_gone(posting_id)
            result.error, result.retryable = str(exc), exc.retryable
            return _done(result, on_result)
        for item in fetched:
            result.stats = result.stats.add(item.stats)
            result.findings.append((item.slice, evaluate(item, bounds)))
        where = f"posting {posting_id}, days {', '.join(str(item.days) for item in items)}"
        blocking = [
            f"{name}: {finding.summary}" + (f" (days {item.days})" if len(items) > 1 else "")
            for item, findings in result.findings
            for name, finding in findings.items()
            if not finding.passed and name in BLOCKING
        ]
        if blocking:
            result.error = (
                f"{where}: " + "; ".join(blocking[:10]) + ". A blocking check failed, so nothing of this posting was "
                "published (its previous rows are untouched)."
            )
            return _done(result, on_result)
        async with turn:
            try:
                if not schema["ready"]:
                    await asyncio.to_thread(store.ensure_schema)
                    schema["ready"] = True
                await asyncio.to_thread(publish, store, fetched, run_id)
            except StorageLockedError:
                raise  # every posting would wait as long again
            except StorageBusyError as exc:  # other hosts' writes won: a later attempt will not meet them
                result.error, result.retryable = str(exc), True  # it names the posting and the days
                return _done(result, on_result)
            except Exception as exc:  # one posting's storage error (a bug, a full disk) must not stop the others
                log.exception("posting %s: publishing failed", posting_id)
                result.error = f"{where}: publishing failed ({type(exc).__name__}: {exc}); its previous rows stay"
                return _done(result, on_result)
        for item in fetched:
            result.rows_by_day.update(item.rows_by_day)
            result.steps_by_day.update(_per_day(item.steps, item.slice.days))
        return _done(result, on_result)

    factories: list[Callable[[], Awaitable[PostingResult]]] = [
        lambda p=p, items=items: one(p, items) for p, items in groups.items()
    ]
    return await gather_bounded(factories, client.settings.max_concurrency)


BLOCKING = frozenset(rule.name for rule in quality.RULES if rule.blocking)


def _done(result: PostingResult, on_result: Callable[[PostingResult], None] | None) -> PostingResult:
    if on_result is not None:
        on_result(result)
    return result


def _per_day(table: pa.Table, days: DayRange) -> dict[date, int]:
    counts = dict.fromkeys(days.days, 0)
    counts.update(Counter(table["created_date"].to_pylist()))
    return counts


def publish(store: Store, fetched: Sequence[FetchedSlice], run_id: str) -> dict[str, int]:
    """One posting's slices, in one write of the store; returns rows inserted per table."""
    rows = [SliceRows(f.slice.posting_id, f.slice.days, f.raw, f.candidates, f.steps) for f in fetched]
    return store.write_slices(rows, run_id)
