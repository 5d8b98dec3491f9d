"""Data-quality rules over the Arrow tables of one fetched slice. No Dagster here.

Each rule returns a ``Finding``; the Dagster layer turns findings into asset check results with
the severity chosen there. Rules run on what was just fetched, before anything is published, so a
failing blocking rule leaves the previous lake files and DuckDB rows untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from heymilo_pipeline.api.models import CANDIDATE_STATUSES


@dataclass(frozen=True)
class ScoreBounds:
    """Documented ranges: ``score`` and ``web_interview.score`` are 0..100; resume scores 0..5."""

    score: tuple[float, float] = (0.0, 100.0)
    web_interview_score: tuple[float, float] = (0.0, 100.0)
    resume_score: tuple[float, float] = (0.0, 5.0)


@dataclass
class Finding:
    passed: bool
    summary: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _examples(table: pa.Table, mask: pa.Array, columns: Sequence[str], limit: int = 5) -> list[dict[str, Any]]:
    return table.filter(mask).select(list(columns)).slice(0, limit).to_pylist()


def unique_interview_ids(candidates: pa.Table) -> Finding:
    ids = candidates["interview_id"]
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    dupes = [entry["values"] for entry in repeated.to_pylist()[:5]]
    return Finding(
        passed=len(repeated) == 0,
        summary=f"{len(repeated)} interview_id(s) appear more than once"
        if len(repeated)
        else "every interview_id once",
        metadata={"rows": len(ids), "duplicated_ids": len(repeated), "examples": dupes},
    )


def non_null_keys(candidates: pa.Table, steps: pa.Table) -> Finding:
    nulls = {
        f"candidates.{name}": candidates[name].null_count
        for name in ("interview_id", "posting_id", "created_date", "status")
    } | {f"candidate_workflow_steps.{name}": steps[name].null_count for name in ("interview_id", "step_id")}
    bad = {name: count for name, count in nulls.items() if count}
    return Finding(
        passed=not bad,
        summary=", ".join(f"{n} null in {c}" for c, n in bad.items()) if bad else "no null keys",
        metadata={"null_counts": nulls},
    )


def score_ranges(candidates: pa.Table, bounds: ScoreBounds = ScoreBounds()) -> Finding:
    outside: dict[str, int] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    for column, (low, high) in (
        ("score", bounds.score),
        ("web_interview_score", bounds.web_interview_score),
        ("resume_score", bounds.resume_score),
    ):
        values = candidates[column]
        mask = pc.fill_null(pc.or_(pc.less(values, low), pc.greater(values, high)), False)
        count = pc.sum(mask).as_py() or 0
        if count:
            outside[column] = count
            examples[column] = _examples(candidates, mask, ("interview_id", column))
    return Finding(
        passed=not outside,
        summary=(
            "; ".join(f"{n} {c} outside {getattr(bounds, c)}" for c, n in outside.items())
            if outside
            else "all scores within their documented ranges"
        ),
        metadata={"outside": outside, "examples": examples, "bounds": bounds.__dict__},
    )


def rows_match_total_count(rows_received: int, total_count: int | None) -> Finding:
    if total_count is None:
        return Finding(True, "the API did not report total_count; nothing to compare", {"rows": rows_received})
    return Finding(
        passed=rows_received == total_count,
        summary=f"received {rows_received} rows, the API reported total_count={total_count}",
        metadata={"rows": rows_received, "total_count": total_count},
    )


def steps_reference_candidates(candidates: pa.Table, steps: pa.Table) -> Finding:
    known = candidates["interview_id"].combine_chunks() if candidates.num_rows else pa.array([], pa.string())
    orphan = pc.invert(pc.is_in(steps["interview_id"], value_set=known))
    count = pc.sum(orphan).as_py() or 0
    return Finding(
        passed=count == 0,
        summary=f"{count} workflow step row(s) without their candidate" if count else "every step has its candidate",
        metadata={"orphan_steps": count, "examples": _examples(steps, orphan, ("interview_id", "step_id"))},
    )


def known_statuses(candidates: pa.Table) -> Finding:
    counts = {e["values"]: e["counts"] for e in pc.value_counts(candidates["status"]).to_pylist()}
    unknown = {status: n for status, n in counts.items() if status not in CANDIDATE_STATUSES}
    return Finding(
        passed=not unknown,
        summary=f"unknown status values: {unknown}" if unknown else "every status is documented",
        metadata={"status_counts": counts, "unknown": unknown},
    )
