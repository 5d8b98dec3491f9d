"""The interview results: one asset, partitioned like raw_candidates and downstream of it, and its checks.

The step fetches what each posting-day's finished candidates lack (``results_sync``), newest day first, under the
results' share of the key's budget (HEYMILO_RESULTS_SHARE), and marks each posting-day materialized once its
results are stored, with its figures and the run's remaining backlog. A posting-day whose results break a
documented range or key is not stored; the blocking check names it, and the run fails once every other posting-day
is stored.
"""

import asyncio
import math
import time
from datetime import date
from typing import Any

import dagster as dg

from heymilo_pipeline import tables
from heymilo_pipeline.api.errors import AuthenticationError, ConfigurationError
from heymilo_pipeline.defs.assets import GROUP, PROGRESS_EVERY_S, EventWriter, column_schema
from heymilo_pipeline.defs.keys import INTERVIEW_RESULTS_KEY, RAW_CANDIDATES_KEY
from heymilo_pipeline.defs.partitions import POSTINGS, key, keys_of
from heymilo_pipeline.defs.resources import HeyMiloAPI, Pipeline, Storage, core_logs_to
from heymilo_pipeline.progress import BOARD
from heymilo_pipeline.results_sync import PartitionResults, ResultsRun, sync_results
from heymilo_pipeline.storage import StorageLockedError
from heymilo_pipeline.terminal import duration

RANGES_CHECK = "results_in_documented_ranges"
# A backfill's results run covers at most a year of one posting's days: years of history are worked off in runs
# that each end, and can be retried, on their own.
RESULTS_PARTITIONS_PER_RUN = 366

_RESULT_TABLE_NAMES = ", ".join(f"`{t.name}`" for t in tables.RESULT_TABLES)


def results_asset(partitions: dg.MultiPartitionsDefinition) -> dg.AssetsDefinition:
    """The step that fetches and stores interview results; its partitions are raw_candidates'."""
    spec = dg.AssetSpec(
        INTERVIEW_RESULTS_KEY,
        deps=[RAW_CANDIDATES_KEY],
        group_name=GROUP,
        kinds={"api", "parquet", "duckdb"},
        skippable=True,
        description="Interview results (GET /api/v2/interviews/{id}/data) of every finished candidate of a posting x "
        "day, fetched once a candidate has finished and again when its status, score, interviewed_at or last "
        "activity changes; newest day first, within HEYMILO_RESULTS_SHARE of the key's budget. Stored as the raw "
        f"results (lake/raw/results) and the tables {_RESULT_TABLE_NAMES}. Materialize raw_candidates first.",
        metadata={
            "dagster/column_schema": column_schema(tables.INTERVIEW_RESULTS),
            "dagster/table_name": tables.INTERVIEW_RESULTS.name,
        },
    )
    check = dg.AssetCheckSpec(
        RANGES_CHECK,
        asset=INTERVIEW_RESULTS_KEY,
        blocking=True,
        description="Before a posting-day's results are stored: every score, confidence and ranking within its "
        "documented range (1-10, 0-100, 0.0-5.0, 0-1, 1-5) and every key once. A posting-day that fails is not "
        "stored (its previous results stay); the failure names the posting, the day and the interviews.",
    )

    @dg.multi_asset(
        name="interview_results_step",
        specs=[spec],
        check_specs=[check],
        partitions_def=partitions,
        # Not raw_candidates' policy (single_run), on purpose: a backfill of both would put the two steps in one
        # run, where Dagster skips this one (raw_candidates is reported per posting-day, never as the step's
        # output). Different policies make Dagster's asset backfill run the results once their candidates are in.
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=RESULTS_PARTITIONS_PER_RUN),
        retry_policy=dg.RetryPolicy(
            max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
    )
    def interview_results_step(
        context: dg.AssetExecutionContext, heymilo: HeyMiloAPI, storage: Storage, pipeline: Pipeline
    ) -> Any:
        registered = set(context.instance.get_dynamic_partitions(POSTINGS))
        keys = [(p, d) for p, d in keys_of(partitions, context.partition_keys) if p in registered]
        yield from fetch_results(context, heymilo, storage, pipeline, keys)

    return interview_results_step


def fetch_results(
    context: dg.AssetExecutionContext,
    heymilo: HeyMiloAPI,
    storage: Storage,
    pipeline: Pipeline,
    keys: list[tuple[str, date]],
) -> Any:
    settings = pipeline.settings()
    connection = heymilo.settings()
    scrubber = settings.scrubber()
    storage.ensure_writable()
    store = storage.store(on_wait=context.log.warning)
    if not store.exists():
        raise dg.Failure(
            f"there are no candidates in {store.description} yet: materialize raw_candidates for these partitions "
            "first; nothing was fetched.",
            allow_retries=False,
        )
    try:
        store.ensure_schema()
    except StorageLockedError as exc:
        raise dg.Failure(f"{exc} Nothing was fetched or written.", allow_retries=False) from None
    share = max(1, int(connection.rate_limit * connection.results_share))
    progress = _Progress(context, share / connection.rate_window_seconds * 60)

    async def run() -> ResultsRun:
        async with heymilo.client() as client:
            return await sync_results(
                client,
                store,
                keys,
                run_id=context.run.run_id,
                scrubber=scrubber,
                transcripts=settings.store_transcripts,
                concurrency=connection.max_concurrency,
                on_progress=progress.answer,
                on_partition=progress.partition,
            )

    try:
        with core_logs_to(context.log), progress:
            done = asyncio.run(run())
    except (AuthenticationError, ConfigurationError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    except StorageLockedError as exc:
        raise dg.Failure(
            f"{exc} Posting-days stored before the wait are marked materialized; rerunning fetches only the rest.",
            allow_retries=False,
        ) from None
    context.log.info(progress.line(done, final=True))
    failed = done.failed
    refused = [p for p in failed if p.problems]
    yield dg.AssetCheckResult(
        check_name=RANGES_CHECK,
        asset_key=INTERVIEW_RESULTS_KEY,
        passed=not refused,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "; ".join(p.error or "" for p in refused[:5])
            if refused
            else f"every result of {len(done.partitions)} posting-day(s) within its documented ranges and keys"
        ),
        metadata={
            "refused_posting_days": dg.MetadataValue.json([f"{p.posting_id} {p.day}" for p in refused][:50]),
            "problems": dg.MetadataValue.json([_plain(x) for p in refused for x in p.problems][:50]),
        },
    )
    if failed:
        raise dg.Failure(
            "\n".join(p.error or "" for p in failed[:20])
            + f"\n({len(failed)} of {len(done.partitions)} posting-day(s) failed: they are not marked materialized and "
            "their previous results are untouched; every other posting-day was stored. Rerunning fetches only what is "
            "still due.)",
            allow_retries=all(not p.problems for p in failed),
            metadata={"failed": dg.MetadataValue.json({f"{p.posting_id} {p.day}": p.error for p in failed[:50]})},
        )


def _plain(problem: dict[str, Any]) -> dict[str, Any]:
    """A problem as JSON holds it: the day as text, a value JSON cannot hold (NaN, infinity) as text."""
    value = problem.get("value")
    shown = value if not isinstance(value, float) or math.isfinite(value) else str(value)
    return {**problem, "created_date": str(problem["created_date"]), "value": shown}


class _Progress:
    """Throttled progress lines, and each posting-day's materialization once stored (``EventWriter``)."""

    def __init__(self, context: dg.AssetExecutionContext, per_minute: float) -> None:
        self.context = context
        self.per_minute = per_minute
        self.writer = EventWriter(context)
        self.last = 0.0
        self.started = time.monotonic()

    def line(self, run: ResultsRun, final: bool = False) -> str:
        left = run.backlog - run.done
        eta = f", about {duration(left * 60 / self.per_minute)} left at the share" if left and not final else ""
        return (
            f"results: {run.done}/{run.backlog} answered, {run.stored} stored, "
            f"{sum(p.not_ready for p in run.partitions)} not ready, {len(run.failed)} posting-day(s) failed; "
            f"{run.stats.requests} requests ({run.stats.retries} retries) in {time.monotonic() - self.started:.0f}s"
            f"{eta}; backlog left: {run.left if final else left}"
        )

    def answer(self, run: ResultsRun) -> None:
        BOARD.results(run.done, run.backlog, run.stats, self.per_minute)  # the terminal's line, under the CLI
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.context.log.info(self.line(run))

    def partition(self, part: PartitionResults, run: ResultsRun) -> None:
        if not part.published:
            self.context.log.warning(part.error or "")
            return
        event = dg.AssetMaterialization(
            asset_key=INTERVIEW_RESULTS_KEY,
            partition=key(part.posting_id, part.day),
            metadata={
                "posting_id": part.posting_id,
                **part.as_metadata(),
                # The run's whole backlog, so the newest materialization says how far the run has come.
                "run_backlog": run.backlog,
                "run_backlog_left": run.backlog - run.done,
            },
        )
        self.writer.submit([event])

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.writer.__exit__(*exc_info)
