"""Fetch and store the interview results of posting-days: the core of the ``interview_results`` asset (no Dagster).

For each day, newest first, the store says which finished candidates lack results for their current state
(``Store.results_due``); each is one getInterviewData request, taken from the results' share of the key's budget
(``ClientSettings.results_lane``). A day's answers are checked against every documented range and key
(``interview_results.RANGES``) and written in one transaction: a posting-day with a value out of range is not
published at all (its previous results stay), the others are.

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
    fix (the key, the settings) and storage errors; a posting-day that fails is reported in its ``error``."""
    run = ResultsRun()
    if not keys:
        return run
    by_day: dict[date, list[str]] = {}
    for posting_id, day in keys:
        by_day.setdefault(day, []).append(posting_id)
    postings = sorted({posting_id for posting_id, _ in keys})
    backlog = store.results_backlog(postings, DayRange(min(by_day), max(by_day)))
    wanted = set(keys)
    backlog = {k: n for k, n in backlog.items() if k in wanted}
    run.backlog = sum(backlog.values())
    log.info("%d result(s) due over %d posting-day(s)", run.backlog, len(wanted))
    slots = asyncio.Semaphore(concurrency)
    for day in sorted(by_day, reverse=True):
        parts = {posting_id: PartitionResults(posting_id, day) for posting_id in sorted(set(by_day[day]))}
        if any(backlog.get((posting_id, day)) for posting_id in parts):
            await _day(client, store, day, parts, run, slots, run_id, scrubber, transcripts, on_progress, clock)
        run.partitions.extend(parts.values())
        for part in parts.values():
            if on_partition is not None:
                on_partition(part, run)
    return run


async def _day(
    client: HeyMiloClient,
    store: Store,
    day: date,
    parts: dict[str, PartitionResults],
    run: ResultsRun,
    slots: asyncio.Semaphore,
    run_id: str,
    scrubber: Scrubber,
    transcripts: bool,
    on_progress: Callable[[ResultsRun], None] | None,
    clock: Callable[[], float],
) -> None:
    """One day of every posting in ``parts``: fetch what is due, check it, store it in one transaction."""
    started = time.monotonic()
    due = store.results_due(list(parts), DayRange.single(day)).to_pylist()
    results: dict[str, list[StoredResult]] = {posting_id: [] for posting_id in parts}
    removed: dict[str, list[str]] = {posting_id: [] for posting_id in parts}

    async def one(row: dict[str, Any]) -> None:
        part = parts[row["posting_id"]]
        async with slots:
            if part.error is not None:
                return  # the posting-day failed already: its answers would not be stored
            try:
                answer = await client.interview_data(row["interview_id"], posting_id=part.posting_id, stats=run.stats)
            except (AuthenticationError, ConfigurationError):
                raise
            except HeyMiloError as exc:
                part.error = f"posting {part.posting_id}, day {day}: {exc}"
                return
            finally:
                run.done += 1
        _take(answer, row, part, results, removed, scrubber, transcripts, clock)
        if on_progress is not None:
            on_progress(run)

    for row in due:
        parts[row["posting_id"]].due += 1
    await asyncio.gather(*(one(row) for row in due))
    tables = flatten(r for posting_id, found in results.items() if parts[posting_id].published for r in found)
    refused = _judge(parts, tables)
    if refused:
        tables = {name: t.filter(pc.invert(pc.is_in(t["posting_id"], value_set=refused))) for name, t in tables.items()}
    remove = [i for posting_id, ids in removed.items() if parts[posting_id].published for i in ids]
    if tables[INTERVIEW_RESULTS.name].num_rows or remove:
        store.write_results(tables, remove, run_id)
    for part in parts.values():
        part.seconds = time.monotonic() - started
        if part.published:
            part.stored = len(results[part.posting_id])


def _take(
    answer: InterviewAnswer,
    row: dict[str, Any],
    part: PartitionResults,
    results: dict[str, list[StoredResult]],
    removed: dict[str, list[str]],
    scrubber: Scrubber,
    transcripts: bool,
    clock: Callable[[], float],
) -> None:
    if answer.outcome == "ready":
        assert answer.raw is not None
        record = scrub(answer.raw, scrubber, transcripts)
        stored = StoredResult(record, part.posting_id, part.day, clock(), row["candidate_state"])
        results[part.posting_id].append(stored)
    elif answer.outcome == "gone":
        # Erased in HeyMilo while the listing still had it: its results leave now, its row with the next listing.
        part.gone += 1
        removed[part.posting_id].append(row["interview_id"])
    else:
        part.not_ready += 1
        if answer.unexpected:
            part.unexpected += 1
            log.warning("posting %s, day %s, interview %s: %s", part.posting_id, part.day, answer.interview_id,
                        answer.note)  # fmt: skip


def _judge(parts: dict[str, PartitionResults], tables: dict[str, pa.Table]) -> pa.Array:
    """Every documented range and key over the day's results: a posting-day that breaks one is refused whole.
    Returns the postings refused."""
    if not tables[INTERVIEW_RESULTS.name].num_rows:
        return pa.array([], pa.string())
    with duckdb.connect() as conn:
        for name, table in tables.items():
            conn.register(name, table)
        problems = _rows(conn, out_of_range_sql(EXAMPLES)) + _rows(conn, doubled_keys_sql(EXAMPLES))
    for problem in problems:
        part = parts[problem["posting_id"]]
        part.problems.append(problem)
    for part in parts.values():
        if part.problems:
            part.error = (
                f"posting {part.posting_id}, day {part.day}: the API sent results outside the documented ranges or "
                "keys, so none of this posting-day's results were stored (its previous results are kept): "
                + "; ".join(_describe(p) for p in part.problems[:EXAMPLES])
                + ". Report the interviews to HeyMilo; the other posting-days were stored, and a rerun fetches these "
                "again."
            )
    return pa.array(sorted(p.posting_id for p in parts.values() if p.problems), pa.string())


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
