"""Assets: postings, and the candidates of each posting x day (the lake's raw records and the DuckDB tables).

``candidate_tables`` is one step for the three partitioned assets, because a posting is published whole or
not at all: fetched, checked, written to the lake, loaded into DuckDB, and only then marked materialized,
partition by partition, with that posting-day's own figures. A posting that fails (404, an invalid record,
a blocking check) fails only its own partitions; the run ends failed naming those postings.
"""

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from heymilo_pipeline import tables
from heymilo_pipeline.api.client import CandidatePage
from heymilo_pipeline.api.errors import AuthenticationError, ConfigurationError, HeyMiloError, NotFoundError
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.defs.checks import SLICE_CHECK_SPECS, slice_results
from heymilo_pipeline.defs.keys import CANDIDATES_KEY, RAW_CANDIDATES_KEY, WORKFLOW_STEPS_KEY
from heymilo_pipeline.defs.partitions import POSTINGS, key, keys_of, register_postings
from heymilo_pipeline.defs.resources import HeyMiloAPI, Pipeline, Storage, core_logs_to
from heymilo_pipeline.discovery import Discovery, discover_postings
from heymilo_pipeline.ingest import PostingResult, Slice, slices_from_keys, startup_objects_frozen, sync_postings
from heymilo_pipeline.progress import BOARD
from heymilo_pipeline.storage import StorageLockedError, Store

GROUP = "heymilo"
# Progress lines in the run log: at most one per this many seconds (every page would be thousands of events).
PROGRESS_EVERY_S = 5.0


def column_schema(table: tables.TableSpec) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, type_, description=text) for name, type_, text in table.dagster_columns()]
    )


def _fail(exc: HeyMiloError) -> dg.Failure:
    """Our errors already name the posting, the days and what to do; retrying a 401 or 404 is pointless."""
    return dg.Failure(str(exc), allow_retries=exc.retryable)


@dg.asset(
    group_name=GROUP,
    kinds={"api", "duckdb"},
    description="Every posting of the workspace (GET /api/v2/postings) as the DuckDB table `postings`; "
    "registers the wanted ones as partitions of the `postings` dimension, marks the ones the API no longer "
    "lists (vanished_at) and, under HEYMILO_VANISHED_POSTINGS=delete, removes their candidates.",
    metadata={"dagster/column_schema": column_schema(tables.POSTINGS), "dagster/table_name": "postings"},
)
def postings(
    context: dg.AssetExecutionContext, heymilo: HeyMiloAPI, storage: Storage, pipeline: Pipeline
) -> dg.MaterializeResult:
    settings = pipeline.settings()
    storage.ensure_writable()
    try:
        found = asyncio.run(discover_postings(heymilo.client(), settings))
    except HeyMiloError as exc:
        raise _fail(exc) from None
    found.new, removed = register_postings(context.instance, found.wanted)
    store = storage.store(on_wait=context.log.warning)
    change = store.replace_postings(found.table(datetime.now(UTC)))
    deleted = {}
    if settings.vanished_postings == "delete" and change.vanished:
        # Only postings that still hold rows: one confirming request each, once, not at every listing.
        candidates = sorted(set(change.vanished) & store.postings_with_rows())
        for posting_id in asyncio.run(_confirmed_gone(heymilo, candidates)) if candidates else []:
            removed_rows = store.delete_posting(posting_id)
            if any(removed_rows.values()):
                deleted[posting_id] = removed_rows
    context.log.info(
        f"{change.listed} postings listed; {len(found.wanted)} fetched; newly registered: {found.new or 'none'}; "
        f"no longer fetched: {removed or 'none'}; vanished from the API: {change.newly_vanished or 'none'} "
        f"(all vanished: {len(change.vanished)}); candidates deleted for: {sorted(deleted) or 'none'}"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": change.listed + len(change.vanished),
            "postings": dg.MetadataValue.md(_postings_table(found, change.vanished)),
            "postings_by_status": dg.MetadataValue.json(found.by_status()),
            "registered_partitions": len(found.wanted),
            "newly_registered": dg.MetadataValue.json(found.new),
            "unregistered": dg.MetadataValue.json(removed),
            "skipped": dg.MetadataValue.json(found.skipped),
            "vanished": dg.MetadataValue.json(change.vanished),
            "newly_vanished": dg.MetadataValue.json(change.newly_vanished),
            "deleted_rows": dg.MetadataValue.json(deleted),
            "requests": found.stats.requests,
        }
    )


def _postings_table(found: Discovery, vanished: list[str]) -> str:
    """Which posting id is which: partition keys are ids, people know postings by their titles."""
    rows = ["| posting | title | status | fetched |", "|---|---|---|---|"]
    for posting in sorted(found.listed, key=lambda p: (p.status, p.title or "", p.id)):
        fetched = "yes" if posting.id in found.wanted else found.skipped.get(posting.id, "no")
        title = (posting.title or "").replace("|", "\\|")
        rows.append(f"| `{posting.id}` | {title} | {posting.status} | {fetched} |")
    rows += [f"| `{posting_id}` | (no longer listed) | vanished | no |" for posting_id in vanished]
    return "\n".join(rows)


async def _confirmed_gone(heymilo: HeyMiloAPI, posting_ids: list[str]) -> list[str]:
    """Of postings missing from the listing, those whose candidates answer 404 too: two answers of the API agree,
    so neither a listing glitch nor a single 404 ever deletes data."""
    gone = []
    today = DayRange.single(datetime.now(UTC).date())
    async with heymilo.client() as client:
        for posting_id in posting_ids:
            try:
                await client.count_candidates(posting_id, today)
            except NotFoundError:
                gone.append(posting_id)
            except HeyMiloError:
                continue  # not confirmed: keep its rows
    return gone


def table_specs(deadline_hour: int) -> list[dg.AssetSpec]:
    """The DuckDB tables ``candidates`` and ``candidate_workflow_steps``, whole: every posting and day that
    raw_candidates has published, with their declared columns.

    Not partitioned, and not run on their own: the step of raw_candidates publishes a posting's rows into them in
    the same transaction as nothing else can, and records one materialization of each per run. Their per-partition
    history is raw_candidates' (a grid of three identical assets cost three event-log writes a posting-day).

    Each has a ``FreshnessPolicy`` (``freshness_policy``: the UI's freshness state), beside the per-posting
    freshness check, which says which posting is late.
    """

    def spec(key: dg.AssetKey, table: tables.TableSpec, description: str) -> dg.AssetSpec:
        return dg.AssetSpec(
            key,
            deps=[RAW_CANDIDATES_KEY],
            group_name=GROUP,
            kinds={"duckdb"},
            description="To load it, materialize raw_candidates partitions: this table has no run of its own. "
            f"{description}; DuckDB table `{table.name}`, written posting by posting with the lake.",
            metadata={"dagster/column_schema": column_schema(table), "dagster/table_name": table.name},
            freshness_policy=freshness_policy(deadline_hour),
        )

    return [
        spec(CANDIDATES_KEY, tables.CANDIDATES, "One row per candidate (interview_id, the table's key), flattened"),
        spec(WORKFLOW_STEPS_KEY, tables.WORKFLOW_STEPS, "One row per candidate and workflow step"),
    ]


def freshness_policy(deadline_hour: int) -> dg.FreshnessPolicy:
    """Loaded at least once in the day before each freshness deadline (HEYMILO_FRESHNESS_DEADLINE_HOUR, UTC): the
    daily update at 03:00 loads the tables, so a missed or failed update turns them stale at the deadline."""
    return dg.FreshnessPolicy.cron(
        deadline_cron=f"0 {deadline_hour} * * *", lower_bound_delta=timedelta(hours=24), timezone="UTC"
    )


def candidate_tables(partitions: dg.MultiPartitionsDefinition) -> dg.AssetsDefinition:
    """The step that fetches and publishes candidates; its partitions start at HEYMILO_START_DATE."""
    raw_candidates = dg.AssetSpec(
        RAW_CANDIDATES_KEY,
        deps=[postings],
        group_name=GROUP,
        kinds={"api", "parquet", "duckdb"},
        skippable=True,
        description="Candidates fetched from the API per posting x UTC day (one range query per posting and run), "
        "checked, written to the lake (the raw records and flattened Parquet), then loaded into the DuckDB tables "
        "candidates and candidate_workflow_steps, posting by posting.",
    )

    @dg.multi_asset(
        specs=[raw_candidates],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=SLICE_CHECK_SPECS,
        retry_policy=dg.RetryPolicy(
            max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
    )
    def candidate_tables(
        context: dg.AssetExecutionContext, heymilo: HeyMiloAPI, storage: Storage, pipeline: Pipeline
    ) -> Iterator:
        yield from publish_candidates(context, heymilo, storage, pipeline, keys_of(partitions, context.partition_keys))

    return candidate_tables


def publish_candidates(
    context: dg.AssetExecutionContext,
    heymilo: HeyMiloAPI,
    storage: Storage,
    pipeline: Pipeline,
    partition_keys: list[tuple[str, date]],
) -> Iterator:
    slices = slices_from_keys(partition_keys)
    # Configuration problems surface before the first request and before anything is written.
    settings = pipeline.settings()
    scrubber = settings.scrubber()
    storage.ensure_writable()
    store = storage.store(on_wait=context.log.warning)
    if removed := store.tidy():
        context.log.info(f"removed {removed} temp file(s) left by interrupted writes")
    # An existing store gets its schema before the first request (a file held elsewhere fails the run at once);
    # a new one is created by the first posting to publish, so a run that fetches nothing leaves no file.
    schema_ready = store.exists()
    if schema_ready:
        try:
            store.ensure_schema()
        except StorageLockedError as exc:
            raise dg.Failure(f"{exc} Nothing was fetched or written.", allow_retries=False) from None
    postings_count = len({s.posting_id for s in slices})
    context.log.info(
        f"{postings_count} posting(s), {len(slices)} slice(s) to fetch: " + "; ".join(str(s) for s in slices[:20])
    )
    progress = _Progress(context, postings_count, store.posting_labels())
    registered = set(context.instance.get_dynamic_partitions(POSTINGS))

    async def run() -> list[PostingResult]:
        async with heymilo.client() as client:
            return await sync_postings(
                client,
                slices,
                store,
                context.run.run_id,
                bounds=settings.score_bounds(),
                scrubber=scrubber,
                on_page=progress.page,
                on_result=progress.done,
                # Deleted in HeyMilo and already unregistered by the latest listing: nothing to fetch any more.
                is_gone=lambda posting_id: posting_id not in registered,
                schema_ready=schema_ready,
                # What each posting held at its last load: a large one is split by counts, with no probe.
                known=_stored(store, slices) if schema_ready else None,
            )

    try:
        with core_logs_to(context.log), progress, startup_objects_frozen():
            results = asyncio.run(run())
    except (AuthenticationError, ConfigurationError) as exc:
        raise _fail(exc) from None
    except StorageLockedError as exc:
        raise dg.Failure(
            f"{exc} Postings published before the wait are stored and marked materialized; rerunning the same "
            "partitions publishes the rest.",
            allow_retries=False,
        ) from None
    for event in progress.tables_loaded(store):
        context.log_event(event)
    yield from slice_results(results)
    failed = [r for r in results if r.error and not r.gone]
    gone = [r.posting_id for r in results if r.gone]
    if gone:
        context.log.info(f"posting(s) {gone} no longer exist in HeyMilo (404, and no longer listed): skipped")
    if failed:
        raise dg.Failure(
            "\n".join(str(r.error) for r in failed[:20])
            + f"\n({len(failed)} of {len(results)} posting(s) failed: their partitions are not marked materialized "
            "and their previous rows are untouched; every other posting was published. Rerunning is safe.)",
            allow_retries=all(r.retryable for r in failed),
            metadata={"failed_postings": dg.MetadataValue.json({r.posting_id: r.error for r in failed})},
        )


def _stored(store: Store, slices: list[Slice]) -> dict[str, dict[date, int]]:
    span = DayRange(min(s.days.first for s in slices), max(s.days.last for s in slices))
    return store.rows_by_day(sorted({s.posting_id for s in slices}), span)


def _span(result: PostingResult) -> str:
    return ", ".join(str(s.days) for s in result.slices)


class EventWriter:
    """A step's materializations, stored by one writer thread: each is a write to Dagster's event log (~9-20 ms on
    the default SQLite storage or on PostgreSQL), which in the step's thread would stall the event loop, and with
    it every request in flight. Leaving the ``with`` block waits for the writer and raises what it raised, so the
    step ends only once every materialization is stored."""

    def __init__(self, context: dg.AssetExecutionContext) -> None:
        self.context = context
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="materializations")
        self.writes: list[Future[None]] = []

    def submit(self, events: list[dg.AssetMaterialization]) -> None:
        self.writes.append(self.pool.submit(self._store, events))

    def _store(self, events: list[dg.AssetMaterialization]) -> None:
        for event in events:
            self.context.log_event(event)

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pool.shutdown(wait=True)
        for write in self.writes:
            write.result()  # a failed write fails the step rather than leave partitions unmarked


class _Progress:
    """Run-log progress (throttled) and, per posting as soon as it is published, its partitions' materializations
    with that posting-day's figures.

    The materializations are stored by an ``EventWriter``: in the step's thread they would stall the event loop for
    seconds after each posting; in the writer they overlap the fetch.

    Not one ranged output with per-partition metadata, which Dagster would write as one batch where
    ``DAGSTER_EVENT_BATCH_SIZE`` is set: ``add_asset_metadata`` checks each partition against the run's whole
    range, expanded anew with the dynamic postings read from the instance at every call, so the batch cost more
    than the writes it saves (the daily update on PostgreSQL: 18 s against 5 s outside the API; bench/ANALYSIS.md).
    """

    def __init__(self, context: dg.AssetExecutionContext, postings: int, labels: dict[str, tuple[str, str]]) -> None:
        self.context = context
        self.writer = EventWriter(context)
        self.published: list[str] = []
        self.steps = 0
        self.postings = postings
        self.labels = labels  # posting id -> (title, status): partition keys are ids, people know titles
        self.finished = 0
        self.rows = 0
        self.requests = 0
        self.last = 0.0

    def page(self, page: CandidatePage, stats: QueryStats) -> None:
        BOARD.page(page.posting_id, stats)  # the terminal's live display, when the CLI runs this step
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            total = stats.total_count if stats.total_count is not None else "?"
            self.context.log.info(
                f"{self.finished}/{self.postings} postings done; now posting {page.posting_id}, days {page.days}: "
                f"page {page.number}, {stats.rows}/{total} rows, {stats.requests} requests"
            )

    def done(self, result: PostingResult) -> None:
        BOARD.finished(result.posting_id, result.stats, failed=not result.published and not result.gone)
        self.finished += 1
        self.requests += result.stats.requests
        log = self.context.log
        if not result.published:
            log.warning(f"not published: {result.error}")
            return
        rows = sum(result.rows_by_day.values())
        self.rows += rows
        title, status = self.labels.get(result.posting_id, ("?", "?"))
        shared = {
            "posting_id": result.posting_id,
            "posting_title": title,
            "posting_status": status,
            "fetched_days": _span(result),
            "posting_requests": result.stats.requests,
        }
        self.published.append(result.posting_id)
        self.steps += sum(result.steps_by_day.values())
        events = [
            dg.AssetMaterialization(
                asset_key=RAW_CANDIDATES_KEY,
                partition=key(result.posting_id, day),
                # Not dagster/row_count: the asset's overview shows the latest event's as the asset's row count,
                # and one posting-day's rows are not what raw_candidates holds.
                metadata={
                    "candidate_rows": result.rows_by_day.get(day, 0),
                    "workflow_step_rows": result.steps_by_day.get(day, 0),
                    **shared,
                },
            )
            for day in result.days
        ]
        self.writer.submit(events)
        log.info(
            f"posting {result.posting_id}, days {_span(result)}: published {rows} candidates "
            f"({result.stats.requests} requests, {result.stats.retries} retries); "
            f"{self.finished}/{self.postings} postings done, {self.rows} candidates, {self.requests} requests so far"
        )

    def tables_loaded(self, store: Store) -> Iterator[dg.AssetMaterialization]:
        """One materialization of each table for the run, once any posting was published into it."""
        if not self.published:
            return
        counts = store.table_counts()
        shared = {"postings_published": dg.MetadataValue.json(sorted(self.published))}
        for asset, table, rows in (
            (CANDIDATES_KEY, tables.CANDIDATES, self.rows),
            (WORKFLOW_STEPS_KEY, tables.WORKFLOW_STEPS, self.steps),
        ):
            metadata = {"dagster/row_count": counts[table.name], "rows_published_by_this_run": rows, **shared}
            yield dg.AssetMaterialization(asset_key=asset, metadata=metadata)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.writer.__exit__(*exc_info)
