"""Every slice rule of quality.RULES fails on planted bad data and passes on good data (no servers, milliseconds)."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest

from heymilo_pipeline import quality
from heymilo_pipeline.api.models import CandidateResponse
from heymilo_pipeline.flatten import flatten
from heymilo_pipeline_tests.factories import record

BOUNDS = quality.ScoreBounds()


def good() -> quality.SliceData:
    candidates, steps = flatten([CandidateResponse.model_validate(record(n)) for n in range(1, 6)])
    return quality.SliceData(candidates, steps, rows_received=5, total_count=5)


def replaced(table: pa.Table, column: str, value: object, row: int = 2) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


PLANTED: dict[str, Callable[[quality.SliceData], quality.SliceData]] = {
    "non_null_keys": lambda d: quality.SliceData(
        replaced(d.candidates, "status", None), d.steps, d.rows_received, d.total_count
    ),
    "score_range": lambda d: quality.SliceData(
        replaced(d.candidates, "score", 100.5), d.steps, d.rows_received, d.total_count
    ),
    "rows_match_total_count": lambda d: quality.SliceData(d.candidates, d.steps, d.rows_received, 7),
    "agent_score_ranges": lambda d: quality.SliceData(
        replaced(d.candidates, "resume_score", -0.5), d.steps, d.rows_received, d.total_count
    ),
    "known_status_values": lambda d: quality.SliceData(
        replaced(d.candidates, "status", "on_hold"), d.steps, d.rows_received, d.total_count
    ),
}


# What each rule says of its planted data: the figure, not just that it said something.
SAID = {
    "non_null_keys": "1 null in candidates.status",
    "score_range": "1 score outside (0.0, 100.0) (observed [78.5, 100.5])",
    "rows_match_total_count": "received 5 rows, the API reported total_count=7",
    "agent_score_ranges": "1 resume_score outside (0.0, 100.0) (observed [-0.5, 3.8])",
    "known_status_values": "unknown status values: {'on_hold': 1}",
}


def test_every_rule_has_a_planted_failure() -> None:
    assert set(PLANTED) == set(SAID) == {rule.name for rule in quality.RULES}


@pytest.mark.parametrize("rule", quality.RULES, ids=lambda r: r.name)
def test_rule_passes_on_good_data_and_fails_on_planted_data(rule: quality.Rule) -> None:
    assert rule.judge(good(), BOUNDS).passed
    finding = rule.judge(PLANTED[rule.name](good()), BOUNDS)
    assert not finding.passed and finding.summary == SAID[rule.name]


def test_undocumented_score_ranges_report_what_they_saw() -> None:
    finding = quality.score_ranges(good().candidates, quality.ScoreBounds(resume_score=(0, 1)), ("resume_score",))
    assert not finding.passed and finding.metadata["observed"]["resume_score"] == [3.8, 3.8]
    assert finding.metadata["examples"]["resume_score"][0]["resume_score"] == 3.8  # interview ids and values only
    assert set(finding.metadata["examples"]["resume_score"][0]) == {"interview_id", "resume_score"}
