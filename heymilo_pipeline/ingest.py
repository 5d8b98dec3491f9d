"""One run's work without Dagster: fetch slices (posting x day range), check them, publish them.

A slice is fetched with one range query, flattened page by page, checked, and only then written:
the lake files of every day of the range (atomic per file), and after that the DuckDB slice (one
transaction). A slice that fails a blocking rule is not written at all, so the previous data
stays as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa
import pydantic

from heymilo_pipeline import quality
from heymilo_pipeline.api.client import CandidatePage, HeyMiloClient, gather_bounded
from heymilo_pipeline.api.errors import SchemaError
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.flatten import CANDIDATES, WORKFLOW_STEPS, flatten
from heymilo_pipeline.lake import RAW_TEXTS, Lake, MonthFiles, raw_json
from heymilo_pipeline.privacy import Scrubber

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
    files: dict[date, MonthFiles] = field(default_factory=dict)

    @property
    def rows_by_day(self) -> dict[date, int]:
        counts = dict.fromkeys(self.slice.days.days, 0)
        for day in self.candidates["created_date"].to_pylist():
            counts[day] = counts.get(day, 0) + 1
        return counts


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


async def fetch_slice(
    client: HeyMiloClient, item: Slice, on_page: PageCallback | None = None, scrubber: Scrubber | None = None
) -> FetchedSlice:
    """One range query, flattened page by page; ``scrubber`` applies HEYMILO_PII to records and rows alike.

    Records are flattened FLATTEN_BATCH at a time and then dropped: the slice keeps Arrow tables and each
    record's JSON text (for the raw lake), never millions of small Python objects. Those made every
    collection of Python's garbage collector slower, and response objects (reference cycles in httpx)
    waited for the rare full collections, so memory grew with every posting of a long backfill.
    """
    stats = QueryStats()
    tables: list[pa.Table] = []
    step_tables: list[pa.Table] = []
    raw: list[pa.Table] = []
    pending: list[CandidatePage] = []

    def flush() -> None:
        records = [record for page in pending for record in page.raw]
        try:
            candidates, steps = flatten(records, partition_day=item.days.first)
        except pydantic.ValidationError:
            for page in pending:
                page.candidates  # noqa: B018 - the models raise the client's SchemaError, naming slice and record
            raise
        except (pa.ArrowException, OverflowError, UnicodeError) as exc:
            # Valid for the models, yet not storable: an integer beyond 64 bits, a lone surrogate in a name.
            pages = f"pages {pending[0].number}..{pending[-1].number}"
            raise SchemaError(
                f"a candidate record on {pages} cannot be stored ({type(exc).__name__}: {exc}). The pipeline "
                "stops rather than store it wrongly; report it to HeyMilo, or exclude the posting until it is fixed.",
                context=pending[0].context,
            ) from None
        if scrubber is not None:
            records, candidates = scrubber.records(records), scrubber.table(candidates)
        tables.append(candidates)
        step_tables.append(steps)
        raw.append(pa.table({"interview_id": candidates["interview_id"], "record": raw_json(records)}))
        pending.clear()

    async for page in client.candidate_pages(item.posting_id, item.days, stats):
        if page.raw:
            pending.append(page)
            if sum(len(p.raw) for p in pending) >= FLATTEN_BATCH:
                flush()
        if on_page is not None:
            on_page(page, stats)
    if pending:
        flush()
    return FetchedSlice(
        slice=item,
        stats=stats,
        candidates=pa.concat_tables(tables) if tables else CANDIDATES.empty(),
        steps=pa.concat_tables(step_tables) if step_tables else WORKFLOW_STEPS.empty(),
        raw=pa.concat_tables(raw) if raw else RAW_TEXTS.empty_table(),
    )


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
    c, s = fetched.candidates, fetched.steps
    fetched.findings = {
        "unique_interview_id": quality.unique_interview_ids(c),
        "non_null_keys": quality.non_null_keys(c, s),
        "score_ranges": quality.score_ranges(c, bounds),
        "rows_match_total_count": quality.rows_match_total_count(fetched.stats.rows, fetched.stats.total_count),
        "steps_reference_candidates": quality.steps_reference_candidates(c, s),
        "known_status_values": quality.known_statuses(c),
    }
    return fetched.findings


def write_lake(lake: Lake, fetched: FetchedSlice) -> dict[date, MonthFiles]:
    item = fetched.slice
    fetched.files = lake.write_partitions(item.posting_id, item.days, fetched.raw, fetched.candidates, fetched.steps)
    return fetched.files
