"""Assets: postings, the raw candidate lake (posting x day), and the DuckDB tables built from it.

``raw_candidates`` fetches and checks; only a slice that passes its blocking checks reaches the
lake. ``candidates`` / ``candidate_workflow_steps`` load the lake into DuckDB in the "duckdb"
pool, so fetching runs in parallel across runs while writes to the one DuckDB file take turns.
"""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from heymilo_pipeline.api.client import CandidatePage
from heymilo_pipeline.api.errors import ConfigurationError, HeyMiloError
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.defs.checks import CANDIDATES, DATA_CHECK_SPECS, RAW_CANDIDATES, data_check_results, score_bounds
from heymilo_pipeline.defs.partitions import candidate_partitions, keys_of, register_postings
from heymilo_pipeline.defs.resources import HeyMiloAPI, Storage, core_logs_to
from heymilo_pipeline.discovery import discover_postings
from heymilo_pipeline.flatten import CANDIDATES as CANDIDATES_TABLE
from heymilo_pipeline.flatten import POSTINGS as POSTINGS_TABLE
from heymilo_pipeline.flatten import WORKFLOW_STEPS, TableSpec
from heymilo_pipeline.ingest import FetchedSlice, evaluate, fetch_slices, slices_from_keys, write_lake
from heymilo_pipeline.settings import PipelineSettings
from heymilo_pipeline.warehouse import SliceFiles, WarehouseLockedError

GROUP = "heymilo"
WORKFLOW_STEPS_KEY = dg.AssetKey("candidate_workflow_steps")
# Columns safe to show in the UI: no names, emails or links (candidate data is personal data).
PREVIEW_COLUMNS = ["interview_id", "posting_id", "status", "score", "created_at", "workflow_current_step_id"]


def column_schema(table: TableSpec) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, type_, description=text) for name, type_, text in table.dagster_columns()]
    )


def _settings() -> PipelineSettings:
    try:
        return PipelineSettings.from_env()
    except ConfigurationError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


def _fail(exc: HeyMiloError) -> dg.Failure:
    """Our errors already name the posting, the days and what to do; retrying a 401 or 404 is pointless."""
    return dg.Failure(str(exc), allow_retries=exc.retryable)


@dg.asset(
    group_name=GROUP,
    kinds={"api", "duckdb"},
    description="Every posting of the workspace (GET /api/v2/postings) as the DuckDB table `postings`; "
    "registers the wanted ones as partitions of the `postings` dimension.",
    metadata={"dagster/column_schema": column_schema(POSTINGS_TABLE), "dagster/table_name": "postings"},
)
def postings(context: dg.AssetExecutionContext, heymilo: HeyMiloAPI, storage: Storage) -> dg.MaterializeResult:
    settings = _settings()
    storage.ensure_writable()
    try:
        found = asyncio.run(discover_postings(heymilo.client(), settings))
    except HeyMiloError as exc:
        raise _fail(exc) from None
    found.new, removed = register_postings(context.instance, found.wanted)
    rows = storage.warehouse(on_wait=context.log.warning).replace_postings(found.table(datetime.now(UTC))).listed
    context.log.info(
        f"{rows} postings listed; {len(found.wanted)} fetched; newly registered: {found.new or 'none'}; "
        f"no longer fetched: {removed or 'none'}"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "postings_by_status": dg.MetadataValue.json(found.by_status()),
            "registered_partitions": len(found.wanted),
            "newly_registered": dg.MetadataValue.json(found.new),
            "unregistered": dg.MetadataValue.json(removed),
            "skipped": dg.MetadataValue.json(found.skipped),
            "requests": found.stats.requests,
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"api", "parquet"},
    partitions_def=candidate_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=DATA_CHECK_SPECS,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    description="Candidates fetched from the API per posting x UTC day (one range query per posting and run), "
    "checked, then written to the lake: the raw records and flattened Parquet.",
)
def raw_candidates(context: dg.AssetExecutionContext, heymilo: HeyMiloAPI, storage: Storage) -> Iterator:
    slices = slices_from_keys(keys_of(context.partition_keys))
    # Configuration problems surface before the first request and before anything is written.
    scrubber = _settings().scrubber()
    storage.ensure_writable()
    # Hidden temp files of writes that a kill interrupted hold personal data; older than an hour, no
    # live writer can still own them.
    removed = storage.lake.clean_temp_files()
    if removed:
        context.log.info(f"removed {len(removed)} temp file(s) left by interrupted writes")
    _migrate_lake(context, storage)
    context.log.info(f"{len(slices)} slice(s) to fetch: " + "; ".join(str(s) for s in slices[:20]))

    def progress(page: CandidatePage, stats: QueryStats) -> None:
        total = stats.total_count if stats.total_count is not None else "?"
        context.log.info(
            f"posting {page.posting_id}, days {page.days}: page {page.number}, {stats.rows}/{total} rows, "
            f"{stats.requests} requests ({stats.retries} retries, {stats.rate_limited} rate-limited)"
        )

    async def fetch() -> list[FetchedSlice]:
        async with heymilo.client() as client:
            return await fetch_slices(client, slices, progress, scrubber)

    try:
        with core_logs_to(context.log):
            fetched = asyncio.run(fetch())
    except HeyMiloError as exc:
        raise _fail(exc) from None
    bounds = score_bounds()
    for item in fetched:
        evaluate(item, bounds)
    results, blocking = data_check_results(fetched)
    if blocking:
        yield from results
        raise dg.Failure(
            "Blocking checks failed, so nothing of this run was published (the previous lake files and DuckDB "
            "rows are untouched):\n- " + "\n- ".join(blocking[:20]),
            allow_retries=False,
        )
    for item in fetched:
        write_lake(storage.lake, item)
    stats = QueryStats()
    for item in fetched:
        stats = stats.add(item.stats)
    yield dg.MaterializeResult(metadata=_fetch_metadata(fetched, stats))
    yield from results


def _migrate_lake(context: dg.AssetExecutionContext, storage: Storage) -> None:
    moved = storage.lake.migrate_day_layout()
    if moved:
        context.log.info(
            f"moved {sum(len(days) for _, days in moved)} posting-day(s) of the earlier lake layout (one file per day) "
            "into month files: " + "; ".join(f"posting {p}, days {d}" for p, d in moved[:20])
        )


def _fetch_metadata(fetched: list[FetchedSlice], stats: QueryStats) -> dict:
    empty_days = sum(1 for item in fetched for n in item.rows_by_day.values() if n == 0)
    return {
        "rows": sum(item.candidates.num_rows for item in fetched),
        "workflow_step_rows": sum(item.steps.num_rows for item in fetched),
        "slices": len(fetched),
        "empty_days": empty_days,
        # One file per table and posting-month: what this run rewrote (days of those months it did not
        # fetch were carried over unchanged).
        "lake_files_written": sum(3 * len(item.files) for item in fetched),
        **{key: value for key, value in stats.as_dict().items() if value is not None},
        "by_slice": dg.MetadataValue.md(
            "| posting | days | rows | requests | retries | 429s | seconds |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {i.slice.posting_id} | {i.slice.days} | {i.candidates.num_rows} | {i.stats.requests} | "
                f"{i.stats.retries} | {i.stats.rate_limited} | {i.stats.seconds:.2f} |"
                for i in fetched[:200]
            )
        ),
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CANDIDATES,
            deps=[RAW_CANDIDATES],
            group_name=GROUP,
            kinds={"duckdb"},
            description="One row per candidate (interview_id), flattened; DuckDB table `candidates`.",
            metadata={"dagster/column_schema": column_schema(CANDIDATES_TABLE), "dagster/table_name": "candidates"},
        ),
        dg.AssetSpec(
            WORKFLOW_STEPS_KEY,
            deps=[RAW_CANDIDATES],
            group_name=GROUP,
            kinds={"duckdb"},
            description="One row per candidate and workflow step; DuckDB table `candidate_workflow_steps`.",
            metadata={
                "dagster/column_schema": column_schema(WORKFLOW_STEPS),
                "dagster/table_name": "candidate_workflow_steps",
            },
        ),
    ],
    partitions_def=candidate_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    check_specs=[
        dg.AssetCheckSpec(
            "matches_lake",
            asset=CANDIDATES,
            description="After the load, DuckDB holds exactly the lake's rows for every slice of the run.",
        )
    ],
)
def warehouse_tables(context: dg.AssetExecutionContext, storage: Storage) -> Iterator:
    slices = slices_from_keys(keys_of(context.partition_keys))
    _migrate_lake(context, storage)
    lake = storage.lake
    plan = []
    for item in slices:
        tables = (CANDIDATES_TABLE, WORKFLOW_STEPS)
        missing = sorted(
            {d for t in tables for d in set(item.days.days) - lake.covered_days(t.name, item.posting_id, item.days)}
        )
        if missing:
            raise dg.Failure(
                f"{item}: the lake lacks {len(missing)} of these days (first {missing[0]}); materialize "
                "raw_candidates for these partitions first.",
                allow_retries=False,
            )
        plan.append(
            SliceFiles(item.posting_id, item.days, *(lake.paths(t.name, item.posting_id, item.days) for t in tables))
        )
    try:
        with core_logs_to(context.log):
            report = storage.warehouse(on_wait=context.log.warning).publish(plan, context.run.run_id, PREVIEW_COLUMNS)
    except WarehouseLockedError as exc:
        raise dg.Failure(
            f"{exc} Nothing was written to DuckDB (the load is one transaction); the lake already holds this run's "
            "files, so rerunning the same partitions publishes them.",
            allow_retries=False,
        ) from None
    inserted, counts, mismatched = report.inserted, report.table_counts, report.differing_from_lake
    context.log.info(f"loaded {inserted} into DuckDB for {len(slices)} slice(s)")
    yield dg.MaterializeResult(
        asset_key=CANDIDATES,
        metadata={
            "rows_loaded": inserted["candidates"],
            "dagster/row_count": counts["candidates"],
            "slices": len(slices),
            "preview": dg.MetadataValue.md(report.preview),
        },
    )
    yield dg.MaterializeResult(
        asset_key=WORKFLOW_STEPS_KEY,
        metadata={
            "rows_loaded": inserted["candidate_workflow_steps"],
            "dagster/row_count": counts["candidate_workflow_steps"],
        },
    )
    yield dg.AssetCheckResult(
        check_name="matches_lake",
        asset_key=CANDIDATES,
        passed=not mismatched,
        metadata={"mismatched_slices": dg.MetadataValue.json(mismatched)},
    )
