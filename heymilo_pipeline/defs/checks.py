"""Asset checks: the data rules of every fetched slice, and the freshness of the warehouse.

Severities are chosen per rule. A rule whose failure means a wrong or incomplete table (duplicate
or missing keys, a score outside its documented range, fewer rows than the API counted, steps of
unknown candidates) is ERROR and blocking: the slice is not published, so notebook users keep the
previous, correct rows. An undocumented status value is WARN: the rows are right, our enum is old.
"""

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from heymilo_pipeline.defs.partitions import POSTINGS
from heymilo_pipeline.defs.resources import Storage
from heymilo_pipeline.ingest import FetchedSlice
from heymilo_pipeline.quality import ScoreBounds

RAW_CANDIDATES = dg.AssetKey("raw_candidates")
CANDIDATES = dg.AssetKey("candidates")

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN

# name -> (severity, description)
DATA_RULES: dict[str, tuple[dg.AssetCheckSeverity, str]] = {
    "unique_interview_id": (ERROR, "Every interview_id appears once in the fetched slice."),
    "non_null_keys": (ERROR, "interview_id, posting_id, created_date, status and step keys are never null."),
    "score_ranges": (ERROR, "score and web_interview_score within 0..100, resume_score within 0..5 (configurable)."),
    "rows_match_total_count": (ERROR, "Rows received equal the API's pagination.total_count for the query."),
    "steps_reference_candidates": (ERROR, "Every workflow step row belongs to a candidate of the slice."),
    "known_status_values": (WARN, "Candidate statuses are among the documented values."),
}

DATA_CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=RAW_CANDIDATES, description=description, blocking=severity == ERROR)
    for name, (severity, description) in DATA_RULES.items()
]


def score_bounds() -> ScoreBounds:
    """Bounds from HEYMILO_SCORE_MAX / HEYMILO_RESUME_SCORE_MAX when a workspace scores differently."""
    top = float(os.environ.get("HEYMILO_SCORE_MAX", 100))
    resume_top = float(os.environ.get("HEYMILO_RESUME_SCORE_MAX", 5))
    return ScoreBounds(score=(0.0, top), web_interview_score=(0.0, top), resume_score=(0.0, resume_top))


def data_check_results(fetched: Sequence[FetchedSlice]) -> tuple[list[dg.AssetCheckResult], list[str]]:
    """One result per rule over every slice of the run, and the messages of blocking failures."""
    results: list[dg.AssetCheckResult] = []
    blocking: list[str] = []
    for name, (severity, _) in DATA_RULES.items():
        failed = [(item, item.findings[name]) for item in fetched if not item.findings[name].passed]
        for item, finding in failed:
            if severity == ERROR:
                blocking.append(f"{item.slice}: {name}: {finding.summary}")
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                asset_key=RAW_CANDIDATES,
                passed=not failed,
                severity=severity,
                description="; ".join(f"{item.slice}: {f.summary}" for item, f in failed[:5]) or None,
                metadata={
                    "slices_checked": len(fetched),
                    "slices_failed": len(failed),
                    "failures": dg.MetadataValue.json(
                        [{"slice": str(item.slice), **finding.metadata} for item, finding in failed[:20]]
                    ),
                },
            )
        )
    return results, blocking


@dg.asset_check(
    asset=CANDIDATES,
    description=(
        "Every active posting has yesterday's partition loaded once the daily deadline has passed "
        "(HEYMILO_FRESHNESS_DEADLINE_HOUR, UTC, default 6), and reports how recent each posting's newest candidate is."
    ),
    blocking=False,
    pool="duckdb",  # it reads the DuckDB file: take turns with the loads instead of waiting on their lock
)
def freshness(context: dg.AssetCheckExecutionContext, storage: Storage) -> dg.AssetCheckResult:
    tags = context.run.tags
    if "dagster/backfill" in tags or tags.get("heymilo/kind") == "backfill":
        # A backfill is one run per posting; judging all postings from inside one of them would show red
        # while the others are still loading. The daily update (and any run outside a backfill) evaluates it.
        return dg.AssetCheckResult(
            passed=True,
            description="not evaluated inside a backfill run; the daily update evaluates freshness",
            metadata={"evaluated": False},
        )
    deadline_hour = int(os.environ.get("HEYMILO_FRESHNESS_DEADLINE_HOUR", 6))
    now = datetime.now(UTC)
    due = now.date() - timedelta(days=1 if now.hour >= deadline_hour else 2)
    registered = set(context.instance.get_dynamic_partitions(POSTINGS))
    warehouse = storage.warehouse(on_wait=context.log.warning)
    with warehouse.connect(read_only=True) as conn:
        rows = conn.execute(
            """
            SELECT p.posting_id,
                (SELECT max(partition_date) FROM partition_loads l WHERE l.posting_id = p.posting_id),
                (SELECT max(created_at) FROM candidates c WHERE c.posting_id = p.posting_id)
            FROM postings p WHERE p.status = 'active' ORDER BY p.posting_id
            """
        ).fetchall()
    active = [row for row in rows if row[0] in registered]
    stale = {pid: str(loaded) for pid, loaded, _ in active if loaded is None or loaded < due}
    return dg.AssetCheckResult(
        passed=not stale,
        severity=ERROR,
        description=(
            f"{len(stale)} active posting(s) not loaded through {due}: {sorted(stale)[:10]}. "
            "Run the daily update (heymilo-pipeline update) or check the last runs for errors."
            if stale
            else f"every active posting is loaded through {due}"
        ),
        metadata={
            "evaluated": True,
            "due_through": str(due),
            "active_postings": len(active),
            "stale_postings": dg.MetadataValue.json(stale),
            "newest_candidate_by_posting": dg.MetadataValue.json(
                {pid: newest.isoformat() if newest else None for pid, _, newest in active}
            ),
        },
    )
