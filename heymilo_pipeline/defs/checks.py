"""Asset checks: the data rules of every fetched slice, and the audits of the whole warehouse.

- **Slice rules** (``quality.RULES``) run inside ``candidate_tables`` on what was just fetched, before it is
  published: a blocking rule that fails keeps that posting's previous rows (its partitions fail, the other
  postings are published). One result per rule and run, naming the postings it failed for.
- **Warehouse checks** (``warehouse_checks``) judge what is stored, all days and postings at once, so they
  can see what no single run sees: a missed or failed update (freshness), rows missing or extra against
  the API (completeness), an interview_id stored twice, steps without their candidate, DuckDB drifting
  from the lake. They run on their own (``warehouse_checks_job``, scheduled at the freshness deadline, and
  at the end of ``heymilo-pipeline update``), never inside a partition run, so they are never "not evaluated"
  and reported as passed; the ones that read only what is stored also run after every load (``AFTER_LOADS``,
  the sensor ``checks_after_loads``).
"""

import asyncio
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from heymilo_pipeline import quality
from heymilo_pipeline.api.errors import HeyMiloError
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.audit import completeness
from heymilo_pipeline.defs.keys import CANDIDATES_KEY, INTERVIEW_RESULTS_KEY, RAW_CANDIDATES_KEY, WORKFLOW_STEPS_KEY
from heymilo_pipeline.defs.partitions import POSTINGS
from heymilo_pipeline.defs.resources import HeyMiloAPI, Pipeline, Storage
from heymilo_pipeline.defs.tags import AS_OF_TAG, PARTITION_RUN_TAGS
from heymilo_pipeline.ingest import PostingResult
from heymilo_pipeline.storage import Store

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN

SLICE_CHECK_SPECS = [
    dg.AssetCheckSpec(rule.name, asset=RAW_CANDIDATES_KEY, description=rule.description, blocking=rule.blocking)
    for rule in quality.RULES
]


def slice_results(results: Iterable[PostingResult]) -> Iterator[dg.AssetCheckResult]:
    """One result per rule over every posting of the run that was fetched, naming the postings it failed for."""
    judged = [r for r in results if r.findings]
    for rule in quality.RULES:
        failed = {
            r.posting_id: [(item, found[rule.name]) for item, found in r.findings if not found[rule.name].passed]
            for r in judged
        }
        failed = {posting_id: items for posting_id, items in failed.items() if items}
        yield dg.AssetCheckResult(
            check_name=rule.name,
            asset_key=RAW_CANDIDATES_KEY,
            passed=not failed,
            severity=ERROR if rule.blocking else WARN,
            description=(
                f"failed for posting(s) {sorted(failed)}: "
                + "; ".join(f"{item}: {finding.summary}" for items in failed.values() for item, finding in items[:2])
                if failed
                else f"passed for all {len(judged)} posting(s) fetched"
            ),
            metadata={
                "postings_checked": dg.MetadataValue.json(sorted(r.posting_id for r in judged)),
                "postings_failed": dg.MetadataValue.json(sorted(failed)),
                "failures": dg.MetadataValue.json(
                    [
                        {"posting_id": posting_id, "days": str(item.days), **finding.metadata}
                        for posting_id, items in failed.items()
                        for item, finding in items
                    ][:20]
                ),
            },
        )


WAREHOUSE_CHECKS = {
    "freshness": (
        CANDIDATES_KEY,
        "Every registered posting is loaded through the last due day: yesterday once the deadline "
        "(HEYMILO_FRESHNESS_DEADLINE_HOUR, UTC) has passed. Fails when the update did not run or failed for a posting.",
    ),
    "completeness": (
        CANDIDATES_KEY,
        "Per posting, the rows stored from HEYMILO_START_DATE through the last due day equal the API's "
        "total_count for that range (one request per posting); where not, the differing days are found by bisection.",
    ),
    "unique_interview_id": (
        CANDIDATES_KEY,
        "No interview_id is stored twice: not in DuckDB (where it is the key) and not across the lake's files.",
    ),
    "steps_reference_candidates": (
        WORKFLOW_STEPS_KEY,
        "Every workflow step row belongs to a candidate stored under the same posting and day.",
    ),
    "matches_lake": (
        CANDIDATES_KEY,
        "DuckDB's candidates and steps equal the lake's Parquet files, row for row, over every posting and day.",
    ),
    "results_complete": (
        INTERVIEW_RESULTS_KEY,
        "Every candidate that finished (last activity) more than HEYMILO_RESULTS_GRACE_DAYS ago has results fetched "
        "for its current state; fails naming the postings and interviews still waiting.",
    ),
    "results_in_ranges": (
        INTERVIEW_RESULTS_KEY,
        "Every stored score, confidence and ranking of the results tables within its documented range (1-10, "
        "0-100, 0.0-5.0, 0-1, 1-5); fails naming the posting and interview of each value outside.",
    ),
    "results_unique_and_referenced": (
        INTERVIEW_RESULTS_KEY,
        "Every results table holds each key once, every result belongs to a candidate stored under the same "
        "posting and day, and every child row has its interview's row in interview_results.",
    ),
}


def due_day(as_of: datetime, deadline_hour: int) -> date:
    """The newest day that must be loaded at ``as_of``: yesterday once the deadline has passed."""
    return as_of.date() - timedelta(days=1 if as_of.hour >= deadline_hour else 2)


def _as_of(context: dg.AssetCheckExecutionContext) -> datetime:
    """The run's day (``heymilo/as_of``, set by the schedule and ``heymilo-pipeline update``): checks judge the
    warehouse as of the end of that day's update, after the deadline; otherwise now."""
    tagged = context.run.tags.get(AS_OF_TAG)
    if tagged:
        return datetime.combine(date.fromisoformat(tagged), datetime.max.time(), UTC)
    return datetime.now(UTC)


# The checks that read only what is stored (no API request) are evaluated after every load: once candidates or
# its steps are newly materialized and no raw_candidates partition is in progress (a load half done would look
# like a difference), ``checks_after_loads`` requests them. Freshness judges the day against its deadline and
# completeness costs a request per posting, so the daily audit alone evaluates those two.
AFTER_LOADS = ("unique_interview_id", "steps_reference_candidates", "matches_lake")
# eager, but not held back by partitions never loaded (days before a posting existed, a posting that failed):
# the checks judge what is stored.
AFTER_A_LOAD = (
    dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()).with_label("after a load")
)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            name,
            asset=asset,
            description=description
            + (" Evaluated after every load." if name in AFTER_LOADS else " Evaluated by the daily audit."),
            blocking=False,
            additional_deps=[RAW_CANDIDATES_KEY] if name in AFTER_LOADS else None,
            automation_condition=AFTER_A_LOAD if name in AFTER_LOADS else None,
        )
        for name, (asset, description) in WAREHOUSE_CHECKS.items()
    ],
    can_subset=True,
)
def warehouse_checks(
    context: dg.AssetCheckExecutionContext, heymilo: HeyMiloAPI, storage: Storage, pipeline: Pipeline
) -> Iterator[dg.AssetCheckResult]:
    tags = context.run.tags
    if any(t in tags for t in PARTITION_RUN_TAGS):
        # A UI materialization of the candidate assets brings their checks along. Judged from inside one
        # posting's run, the whole warehouse looks half-loaded; no result here leaves the check "skipped" in
        # this run, never "passed". The daily audit (warehouse_checks_job) evaluates it.
        context.log.info("warehouse checks skipped inside a partition run; warehouse_checks_job evaluates them")
        return
    settings = pipeline.settings()
    selected = {k.name for k in context.selected_asset_check_keys}
    as_of = _as_of(context)
    due = due_day(as_of, settings.freshness_deadline_hour)
    registered = sorted(context.instance.get_dynamic_partitions(POSTINGS))
    store = storage.store(on_wait=context.log.warning)
    store.ensure_schema()
    span = DayRange(settings.start_date, due) if due >= settings.start_date else None
    if "freshness" in selected:
        yield _freshness(registered, store.loaded_through(), due)
    if "completeness" in selected:
        yield _completeness(context, heymilo, store, registered, span)
    if "unique_interview_id" in selected:
        found = store.duplicate_interview_ids()
        doubled = {where: f["count"] for where, f in found.items() if f["count"]}
        yield dg.AssetCheckResult(
            check_name="unique_interview_id",
            asset_key=CANDIDATES_KEY,
            passed=not doubled,
            description=f"interview_id(s) stored more than once: {doubled}" if doubled else "every interview_id once",
            metadata={where: dg.MetadataValue.json(f) for where, f in found.items()},
        )
    if "steps_reference_candidates" in selected:
        orphans = store.orphan_steps()
        yield dg.AssetCheckResult(
            check_name="steps_reference_candidates",
            asset_key=WORKFLOW_STEPS_KEY,
            passed=orphans["rows"] == 0,
            description=(
                f"{orphans['rows']} step row(s) of {orphans['candidates']} interview_id(s) without their candidate, "
                f"by posting: {orphans['by_posting']}"
                if orphans["rows"]
                else "every step row has its candidate"
            ),
            metadata={"orphans": dg.MetadataValue.json(orphans)},
        )
    if "results_complete" in selected:
        yield _results_complete(store, as_of - timedelta(days=settings.results_grace_days))
    if {"results_in_ranges", "results_unique_and_referenced"} & selected:
        problems = store.results_problems()
        if "results_in_ranges" in selected:
            yield _results_problems("results_in_ranges", problems, ("out_of_range",))
        if "results_unique_and_referenced" in selected:
            kinds = ("doubled_keys", "without_candidate", "without_interview_row")
            yield _results_problems("results_unique_and_referenced", problems, kinds)
    if "matches_lake" in selected:
        differences = store.lake_differences()
        postings = sorted({d["posting_id"] for d in differences})
        yield dg.AssetCheckResult(
            check_name="matches_lake",
            asset_key=CANDIDATES_KEY,
            passed=not differences,
            description=(
                f"DuckDB differs from the lake for posting(s) {postings}; `heymilo-pipeline rebuild` reloads DuckDB "
                "from the lake"
                if differences
                else "DuckDB equals the lake for every posting"
            ),
            metadata={"differences": dg.MetadataValue.json(differences[:50])},
        )


def _results_complete(store: Store, finished_before: datetime) -> dg.AssetCheckResult:
    waiting = store.results_due(finished_before=finished_before)
    by_posting: dict[str, int] = {}
    for posting_id in waiting["posting_id"].to_pylist():
        by_posting[posting_id] = by_posting.get(posting_id, 0) + 1
    examples = [
        {"posting_id": r["posting_id"], "day": str(r["created_date"]), "interview_id": r["interview_id"]}
        for r in waiting.slice(0, 20).to_pylist()
    ]
    return dg.AssetCheckResult(
        check_name="results_complete",
        asset_key=INTERVIEW_RESULTS_KEY,
        passed=not waiting.num_rows,
        severity=WARN,
        description=(
            f"{waiting.num_rows} candidate(s) finished before {finished_before:%Y-%m-%d %H:%M} UTC without current "
            f"results, by posting: {dict(sorted(by_posting.items())[:10])}; e.g. "
            + ", ".join(f"{e['interview_id']} ({e['posting_id']}, {e['day']})" for e in examples[:3])
            + ". Materialize interview_results for their days (results_job), or read its last runs for errors."
            if waiting.num_rows
            else f"every candidate finished before {finished_before:%Y-%m-%d %H:%M} UTC has current results"
        ),
        metadata={
            "finished_before": finished_before.isoformat(),
            "waiting": waiting.num_rows,
            "waiting_by_posting": dg.MetadataValue.json(by_posting),
            "examples": dg.MetadataValue.json(examples),
        },
    )


def _results_problems(name: str, problems: dict[str, list[dict]], kinds: tuple[str, ...]) -> dg.AssetCheckResult:
    found = {kind: problems[kind] for kind in kinds if problems[kind]}

    def one(p: dict) -> str:
        where = f"{p['table_name']}.{p['column_name']} = {p['value']}" if "column_name" in p else p["table_name"]
        return f"interview {p['interview_id']} of posting {p['posting_id']} ({where})"

    described = [f"{kind}: " + ", ".join(one(p) for p in items[:3]) for kind, items in found.items()]
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=INTERVIEW_RESULTS_KEY,
        passed=not found,
        severity=ERROR,
        description="; ".join(described) if found else "passed for every stored result",
        metadata={kind: dg.MetadataValue.json(problems[kind]) for kind in kinds},
    )


def _freshness(registered: list[str], loaded: dict[str, date], due: date) -> dg.AssetCheckResult:
    stale = {p: str(loaded[p]) if p in loaded else None for p in registered if loaded.get(p, date.min) < due}
    return dg.AssetCheckResult(
        check_name="freshness",
        asset_key=CANDIDATES_KEY,
        passed=not stale,
        severity=ERROR,
        description=(
            f"{len(stale)} of {len(registered)} posting(s) not loaded through {due}: {sorted(stale)[:10]}. Run the "
            "daily update (heymilo-pipeline update) or read the last update runs for their errors."
            if stale
            else f"all {len(registered)} registered posting(s) are loaded through {due}"
        ),
        metadata={
            "due_through": str(due),
            "registered_postings": len(registered),
            "stale_postings": dg.MetadataValue.json(stale),
            "loaded_through": dg.MetadataValue.json({p: str(loaded[p]) for p in registered if p in loaded}),
        },
    )


def _completeness(
    context: dg.AssetCheckExecutionContext,
    heymilo: HeyMiloAPI,
    store: Store,
    registered: list[str],
    span: DayRange | None,
) -> dg.AssetCheckResult:
    if span is None or not registered:
        return dg.AssetCheckResult(
            check_name="completeness", asset_key=CANDIDATES_KEY, passed=True, description="nothing due yet"
        )
    try:
        found = asyncio.run(completeness(heymilo.client(), store, registered, span))
    except HeyMiloError as exc:
        return dg.AssetCheckResult(
            check_name="completeness",
            asset_key=CANDIDATES_KEY,
            passed=False,
            severity=WARN,
            description=f"could not ask the API for its counts: {exc}",
        )
    differing = [c for c in found if not c.complete]
    gaps = [c.posting_id for c in differing if c.gaps]
    return dg.AssetCheckResult(
        check_name="completeness",
        asset_key=CANDIDATES_KEY,
        passed=not differing,
        # Days that hold nothing while the API has candidates are a hole in the mirror; other differences are
        # changes since the day was last fetched, which the rolling refresh fetches again.
        severity=ERROR if gaps else WARN,
        description=(
            "; ".join(
                f"posting {c.posting_id}: API {c.api}, stored {c.stored}, differing days "
                + ", ".join(f"{d.days} ({d.api} vs {d.stored})" for d in c.differences[:5])
                for c in differing[:10]
            )
            if differing
            else f"all {len(found)} posting(s) hold the API's count from {span.first} through {span.last}"
        ),
        metadata={
            "days": str(span),
            "requests": sum(c.stats.requests for c in found),
            "by_posting": dg.MetadataValue.json({c.posting_id: {"api": c.api, "stored": c.stored} for c in found}),
            "differences": dg.MetadataValue.json(
                {c.posting_id: [d.as_dict() for d in c.differences] for c in differing}
            ),
        },
    )


checks_after_loads = dg.AutomationConditionSensorDefinition(
    "checks_after_loads",
    target=dg.AssetSelection.checks(*(dg.AssetCheckKey(WAREHOUSE_CHECKS[n][0], n) for n in AFTER_LOADS)),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="After every load (once no raw_candidates partition is in progress): the warehouse checks that read "
    "only what is stored (uniqueness, step references, DuckDB against the lake). On by default, like "
    "update_after_postings: it requests nothing while nothing is loaded.",
)
