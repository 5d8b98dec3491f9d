"""Fetch and store the interview results of posting-days: the core of the ``interview_results`` asset (no Dagster).

What is due is read from the store once: finished candidates without results for their current state
(``Store.results_due``). Day after day, newest first, each is one getInterviewData request, taken from the
results' share of the key's budget (``ClientSettings.results_lane``). The answers are gathered into chunks of
whole posting-days, and each chunk is checked against every documented range and key (``interview_results.RANGES``)
and written in one transaction, in a thread, while the next days are fetched: a posting-day with a value out of
range is not published at all (its previous results stay), the others are.

Newest first, because the newest candidates are the ones recruiters are deciding on now: a first backfill of a
large workspace takes hours at the share (30,000 results at 150 a minute: 3 h 20 min), and the results wanted
today arrive in its first minutes. A run that stops (killed, failed) loses nothing: what it stored is current, and
the next run fetches only what is still due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import AuthenticationError, ConfigurationError, HeyMiloError
from heymilo_pipeline.api.results import InterviewAnswer
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.interview_results import StoredResult, doubled_keys_sql, flatten, out_of_range_sql, scrub
from heymilo_pipeline.privacy import Scrubber
from heymilo_pipeline.storage import Store
from heymilo_pipeline.tables import INTERVIEW_RESULTS

log = logging.getLogger("heymilo_pipeline.results")

# Examples of a broken rule kept per posting-day, for the error and the UI.
EXAMPLES = 5
# Results checked and stored together (whole posting-days, newest first): memory holds two such chunks at most
# (one being written, one being gathered), whatever the backlog.
CHUNK = 2_000
# Results fetched together (whole posting-days): a chunk holds at most CHUNK + BATCH + one posting-day of results,
# however many a day holds; requests wait for each other only where batches meet.
BATCH = 250


@dataclass
class PartitionResults:
    """One posting-day of a results run: what was due, and what became of it."""

    posting_id: str
    day: date
    due: int = 0
    stored: int = 0
    not_ready: int = 0
    gone: int = 0
    unexpected: int = 0
    seconds: float = 0.0
    error: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return self.error is None

    def as_metadata(self) -> dict[str, Any]:
        return {
            "results_due": self.due,
            "results_stored": self.stored,
            "results_not_ready": self.not_ready,
            "results_gone": self.gone,
            "results_unexpected": self.unexpected,
        }


@dataclass
class ResultsRun:
    """A whole run: its posting-days (newest first), the requests, and the backlog before and after."""

    partitions: list[PartitionResults] = field(default_factory=list)
    stats: QueryStats = field(default_factory=QueryStats)
    backlog: int = 0  # results due when the run began
    done: int = 0  # of those, answered (stored, not ready, gone, failed)

    @property
    def stored(self) -> int:
        return sum(p.stored for p in self.partitions)

    @property
    def failed(self) -> list[PartitionResults]:
        return [p for p in self.partitions if not p.published]

    @property
    def left(self) -> int:
        """Results still due after the run: not ready yet, of an unexpected shape, or of a failed posting-day."""
        return sum(p.due - p.stored - p.gone for p in self.partitions)


async def sync_results(
    client: HeyMiloClient,
    store: Store,
    keys: Sequence[tuple[str, date]],
    *,
    run_id: str,
    scrubber: Scrubber,
    transcripts: bool,
    concurrency: int = 4,
    on_progress: Callable[[ResultsRun], None] | None = None,
    on_partition: Callable[[PartitionResults, ResultsRun], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> ResultsRun:
    """Fetch and store the results due for the posting-days ``keys``, newest day first. ``on_progress`` hears each
    answer, ``on_partition`` each posting-day once stored (or refused). Raises only what no later request could
    fix (the key, the settings) and storage errors; a posting-day that fails is reported in its ``error``.

    What is due is read once, at the start. Answers are gathered posting-day after posting-day, ``BATCH`` results
    at a time, until ``CHUNK``; then the chunk is checked and written in one transaction, in a thread, while the
    next ones are fetched: a write never holds up the requests, and memory holds two chunks at most, however dense
    the days (a posting-day is never split between chunks)."""
    run = ResultsRun()
    if not keys:
        return run
    wanted = set(keys)
    by_day: dict[date, list[str]] = {}
    for posting_id, day in sorted(wanted):
        by_day.setdefault(day, []).append(posting_id)
    postings = sorted({posting_id for posting_id, _ in wanted})
    # Arrow, newest day first: a day's rows become Python objects only when that day is fetched.
    due = store.results_due(postings, DayRange(min(by_day), max(by_day)))
    offsets: dict[date, tuple[int, int]] = {}  # a day's rows: due.slice(first, end - first)
    run.backlog = 0
    columns = zip(due.column("posting_id").to_pylist(), due.column("created_date").to_pylist(), strict=True)
    for i, (posting_id, day) in enumerate(columns):
        offsets[day] = (offsets.get(day, (i, i))[0], i + 1)
        run.backlog += (posting_id, day) in wanted
    log.info("%d result(s) due over %d posting-day(s)", run.backlog, len(wanted))
    slots = asyncio.Semaphore(concurrency)
    chunk = _Chunk()
    writing: asyncio.Task[None] | None = None
    # Every write on one thread of its own (writes never overlap anyway): what a write frees stays in that
    # thread's allocator caches for the next one, rather than in one pool thread's after another's.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heymilo-results-writer")

    async def flush() -> None:
        """Start checking and writing the chunk, in a thread, once the previous chunk is stored (so memory holds
        at most the chunk being written and the one being gathered); its posting-days are reported once stored."""
        nonlocal chunk, writing
        if writing is not None:
            await writing
        done, chunk = chunk, _Chunk()

        def check_and_write() -> None:
            tables, remove = done.checked()
            if tables[INTERVIEW_RESULTS.name].num_rows or remove:
                store.write_results(tables, remove, run_id)

        async def store_and_report() -> None:
            await asyncio.get_running_loop().run_in_executor(writer, check_and_write)
            for part in done.parts:
                if part.published:
                    part.stored = len(done.results.get((part.posting_id, part.day), ()))
                run.partitions.append(part)
                if on_partition is not None:
                    on_partition(part, run)

        writing = asyncio.create_task(store_and_report())
        await asyncio.sleep(0)  # started; the next days are fetched meanwhile

    batch: list[tuple[PartitionResults, list[dict[str, Any]]]] = []

    async def fetch_batch() -> None:
        """Fetch the batch's posting-days together (requests overlap across them), then add them to the chunk."""
        started = time.monotonic()
        await asyncio.gather(
            *(_fetch(client, row, part, chunk, run, slots, scrubber, transcripts, on_progress, clock)
              for part, rows in batch for row in rows)
        )  # fmt: skip
        for part, _ in batch:
            part.seconds = time.monotonic() - started
            chunk.parts.append(part)
        batch.clear()

    try:
        for day in sorted(by_day, reverse=True):
            first, end = offsets.get(day, (0, 0))
            rows: dict[str, list[dict[str, Any]]] = {}  # the day's rows by posting, in one pass
            for row in due.slice(first, end - first).to_pylist():
                rows.setdefault(row["posting_id"], []).append(row)
            for posting_id in by_day[day]:
                part = PartitionResults(posting_id, day)
                mine = rows.get(posting_id, [])
                part.due = len(mine)
                batch.append((part, mine))
                if sum(len(r) for _, r in batch) >= BATCH:
                    await fetch_batch()
                    if chunk.size >= CHUNK:
                        await flush()
        await fetch_batch()
        await flush()
        if writing is not None:
            await writing
    finally:
        writer.shutdown(wait=False)  # a write under way still ends (never torn: one transaction)
    return run


@dataclass
class _Chunk:
    """Posting-days whose answers are gathered and not yet stored."""

    parts: list[PartitionResults] = field(default_factory=list)
    results: dict[tuple[str, date], list[StoredResult]] = field(default_factory=dict)
    removed: dict[tuple[str, date], list[str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(found) for found in self.results.values())

    def checked(self) -> tuple[dict[str, pa.Table], list[str]]:
        """The tables to store and the interviews to remove: every posting-day that failed or breaks a documented
        range or key left out (and marked so)."""
        by_key = {(p.posting_id, p.day): p for p in self.parts}
        tables = flatten(r for key, found in self.results.items() if by_key[key].published for r in found)
        refused = _judge(self.parts, tables)
        if refused:
            keys = pa.array([f"{posting_id}|{day}" for posting_id, day in refused], pa.string())
            for name, table in tables.items():
                table_keys = pc.binary_join_element_wise(
                    table["posting_id"], pc.cast(table["created_date"], pa.string()), "|"
                )
                tables[name] = table.filter(pc.invert(pc.is_in(table_keys, value_set=keys)))
        remove = [i for key, ids in self.removed.items() if by_key[key].published for i in ids]
        return tables, remove


async def _fetch(
    client: HeyMiloClient,
    row: dict[str, Any],
    part: PartitionResults,
    chunk: _Chunk,
    run: ResultsRun,
    slots: asyncio.Semaphore,
    scrubber: Scrubber,
    transcripts: bool,
    on_progress: Callable[[ResultsRun], None] | None,
    clock: Callable[[], float],
) -> None:
    async with slots:
        if part.error is not None:
            return  # the posting-day failed already: its answers would not be stored
        try:
            answer = await client.interview_data(row["interview_id"], posting_id=part.posting_id, stats=run.stats)
        except (AuthenticationError, ConfigurationError):
            raise
        except HeyMiloError as exc:
            part.error = f"posting {part.posting_id}, day {part.day}: {exc}"
            return
        finally:
            run.done += 1
    _take(answer, row, part, chunk, scrubber, transcripts, clock)
    if on_progress is not None:
        on_progress(run)


def _take(
    answer: InterviewAnswer,
    row: dict[str, Any],
    part: PartitionResults,
    chunk: _Chunk,
    scrubber: Scrubber,
    transcripts: bool,
    clock: Callable[[], float],
) -> None:
    key = (part.posting_id, part.day)
    if answer.outcome == "ready":
        assert answer.raw is not None
        record = scrub(answer.raw, scrubber, transcripts)
        stored = StoredResult.of(record, part.posting_id, part.day, clock(), row["candidate_state"])
        chunk.results.setdefault(key, []).append(stored)
    elif answer.outcome == "gone":
        # Erased in HeyMilo while the listing still had it: its results leave now, its row with the next listing.
        part.gone += 1
        chunk.removed.setdefault(key, []).append(row["interview_id"])
    else:
        part.not_ready += 1
        if answer.unexpected:
            part.unexpected += 1
            log.warning("posting %s, day %s, interview %s: %s", part.posting_id, part.day, answer.interview_id,
                        answer.note)  # fmt: skip


def _judge(parts: Sequence[PartitionResults], tables: dict[str, pa.Table]) -> set[tuple[str, date]]:
    """Every documented range and key over a chunk's results: a posting-day that breaks one is refused whole.
    Returns the posting-days refused."""
    if not tables[INTERVIEW_RESULTS.name].num_rows:
        return set()
    with duckdb.connect() as conn:
        for name, table in tables.items():
            conn.register(name, table)
        problems = _rows(conn, out_of_range_sql(EXAMPLES)) + _rows(conn, doubled_keys_sql(EXAMPLES))
    by_key = {(p.posting_id, p.day): p for p in parts}
    for problem in problems:
        by_key[(problem["posting_id"], problem["created_date"])].problems.append(problem)
    refused = set()
    for part in parts:
        if part.problems:
            refused.add((part.posting_id, part.day))
            part.error = (
                f"posting {part.posting_id}, day {part.day}: the API sent results outside the documented ranges or "
                "keys, so none of this posting-day's results were stored (its previous results are kept): "
                + "; ".join(_describe(p) for p in part.problems[:EXAMPLES])
                + ". Report the interviews to HeyMilo; the other posting-days were stored, and a rerun fetches these "
                "again."
            )
    return refused


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result = conn.execute(sql)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _describe(problem: dict[str, Any]) -> str:
    if "column_name" in problem:
        return (
            f"interview {problem['interview_id']}: {problem['table_name']}.{problem['column_name']} = "
            f"{problem['value']} (documented {problem['low']:g}..{problem['high']:g})"
        )
    where = f"interview {problem['interview_id']}: {problem['table_name']}"
    return f"{where} holds key {problem['key']} {problem['n']} times"
