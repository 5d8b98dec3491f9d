"""Data rules over the Arrow tables of one fetched slice, in one registry (``RULES``). No Dagster here.

Each rule returns a ``Finding``; ``RULES`` says which ones block: a slice failing a blocking rule is not
published (the previous lake files and DuckDB rows of its posting stay as they were), the others only
warn. Rules run on what was just fetched. Rules about the whole warehouse (uniqueness across all days,
steps without their candidate, lake against DuckDB, completeness against the API, freshness) cannot be
judged from one slice; they are the warehouse checks (``Warehouse`` audits, ``defs/checks.py``).

Score ranges: the spec documents ``score`` as 0..100, so it blocks. It documents no range for
``agent_summary.resume.resume_score`` (its example is 3.8) or ``agent_summary.web_interview.score``,
and elsewhere calls average resume scores 0..100; those only warn, with their observed range, within
bounds a workspace can set (HEYMILO_RESUME_SCORE_MAX, HEYMILO_WEB_INTERVIEW_SCORE_MAX).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from heymilo_pipeline.api.models import CANDIDATE_STATUSES


@dataclass(frozen=True)
class ScoreBounds:
    """``score`` is documented as 0..100 (blocking); the agent scores have no documented range (warning)."""

    score: tuple[float, float] = (0.0, 100.0)
    web_interview_score: tuple[float, float] = (0.0, 100.0)
    resume_score: tuple[float, float] = (0.0, 100.0)


@dataclass
class Finding:
    passed: bool
    summary: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _examples(table: pa.Table, mask: pa.Array, columns: Sequence[str], limit: int = 5) -> list[dict[str, Any]]:
    return table.filter(mask).select(list(columns)).slice(0, limit).to_pylist()


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


def score_ranges(candidates: pa.Table, bounds: ScoreBounds, columns: Sequence[str]) -> Finding:
    """Values of ``columns`` outside their bounds; the metadata reports each column's observed range."""
    outside: dict[str, int] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    observed: dict[str, list[float | None]] = {}
    for column in columns:
        low, high = getattr(bounds, column)
        values = candidates[column]
        least, most = pc.min_max(values).values() if len(values) else (pa.scalar(None), pa.scalar(None))
        observed[column] = [least.as_py(), most.as_py()]
        mask = pc.fill_null(pc.or_(pc.less(values, low), pc.greater(values, high)), False)
        count = pc.sum(mask).as_py() or 0
        if count:
            outside[column] = count
            examples[column] = _examples(candidates, mask, ("interview_id", column))
    return Finding(
        passed=not outside,
        summary=(
            "; ".join(f"{n} {c} outside {getattr(bounds, c)} (observed {observed[c]})" for c, n in outside.items())
            if outside
            else "within " + ", ".join(f"{c} {getattr(bounds, c)} (observed {observed[c]})" for c in columns)
        ),
        metadata={
            "outside": outside,
            "examples": examples,
            "observed": observed,
            "bounds": {c: getattr(bounds, c) for c in columns},
        },
    )


def rows_match_total_count(rows_received: int, total_count: int | None) -> Finding:
    if total_count is None:
        return Finding(True, "the API did not report total_count; nothing to compare", {"rows": rows_received})
    return Finding(
        passed=rows_received == total_count,
        summary=f"received {rows_received} rows, the API reported total_count={total_count}",
        metadata={"rows": rows_received, "total_count": total_count},
    )


def known_statuses(candidates: pa.Table) -> Finding:
    counts = {e["values"]: e["counts"] for e in pc.value_counts(candidates["status"]).to_pylist()}
    unknown = {status: n for status, n in counts.items() if status not in CANDIDATE_STATUSES}
    return Finding(
        passed=not unknown,
        summary=f"unknown status values: {unknown}" if unknown else "every status is documented",
        metadata={"status_counts": counts, "unknown": unknown},
    )


@dataclass(frozen=True)
class SliceData:
    """What the rules judge: one slice's tables and the figures of its query."""

    candidates: pa.Table
    steps: pa.Table
    rows_received: int
    total_count: int | None


@dataclass(frozen=True)
class Rule:
    name: str
    blocking: bool
    description: str
    judge: Callable[[SliceData, ScoreBounds], Finding]


RULES: tuple[Rule, ...] = (
    Rule(
        "non_null_keys",
        True,
        "interview_id, posting_id, created_date, status and step keys are never null.",
        lambda d, b: non_null_keys(d.candidates, d.steps),
    ),
    Rule(
        "score_range",
        True,
        "score within its documented range, 0..100 (HEYMILO_SCORE_MAX changes the top).",
        lambda d, b: score_ranges(d.candidates, b, ("score",)),
    ),
    Rule(
        "rows_match_total_count",
        True,
        "Rows received equal the API's pagination.total_count for the query.",
        lambda d, b: rows_match_total_count(d.rows_received, d.total_count),
    ),
    Rule(
        "agent_score_ranges",
        False,
        "resume_score and web_interview_score, which have no documented range, within 0..100 "
        "(HEYMILO_RESUME_SCORE_MAX / HEYMILO_WEB_INTERVIEW_SCORE_MAX); reports their observed range.",
        lambda d, b: score_ranges(d.candidates, b, ("resume_score", "web_interview_score")),
    ),
    Rule(
        "known_status_values",
        False,
        "Candidate statuses are among the documented values.",
        lambda d, b: known_statuses(d.candidates),
    ),
)


def evaluate(data: SliceData, bounds: ScoreBounds) -> dict[str, Finding]:
    """Every rule of ``RULES`` on one slice, by name."""
    return {rule.name: rule.judge(data, bounds) for rule in RULES}
