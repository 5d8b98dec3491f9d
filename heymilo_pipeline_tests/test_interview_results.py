"""Interview results: which candidates need them, what is stored of them, and their tables (core, no Dagster)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import duckdb
import pytest

from heymilo_pipeline.api.windows import day_of
from heymilo_pipeline.interview_results import FINISHED, StoredResult, flatten, scrub, stored_results
from heymilo_pipeline.privacy import Scrubber
from heymilo_pipeline.simulator import Tenant, TenantSpec
from heymilo_pipeline.storage.reads import results_due
from heymilo_pipeline.tables import CANDIDATES, INTERVIEW_RESULTS, RAW_RESULTS, RESULT_TABLES

FETCHED_AT = 1_767_312_000.25  # 2026-01-02T00:00:00.25Z


@pytest.fixture(scope="module")
def tenant() -> Tenant:
    spec = TenantSpec(
        seed=5, postings=7, start=date(2026, 1, 1), end=date(2026, 1, 31), candidates_per_posting=(80, 160)
    )
    return Tenant(spec)


def finished(tenant: Tenant) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(candidate record, its results as the API sends them) of every candidate whose results are worth fetching."""
    for record in tenant.truth():
        if record["status"] in FINISHED:
            yield record, tenant.interview_data(record["interview_id"])


def stored(tenant: Tenant, scrubber: Scrubber, transcripts: bool) -> list[StoredResult]:
    return [
        StoredResult.of(scrub(data, scrubber, transcripts), r["posting_id"], day_of(r["created_at"]), FETCHED_AT,
                     "state")
        for r, data in finished(tenant)
    ]  # fmt: skip


def everything(tables: dict[str, Any]) -> str:
    return json.dumps({name: table.to_pylist() for name, table in tables.items()}, default=str)


def strings(tables: dict[str, Any]) -> set[str]:
    """Every string value of every table, the raw records' included."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.add(value)
            if value[:1] in "{[":
                walk(json.loads(value))
        elif isinstance(value, dict):
            [walk(v) for v in value.values()]
        elif isinstance(value, list):
            [walk(v) for v in value]

    for table in tables.values():
        walk(table.to_pylist())
    return found


def test_which_candidates_need_results_and_when_again() -> None:
    """Finished candidates are due until results are stored for their current state; a change of status, score,
    interviewed_at or last activity makes them due again, nothing else does, and unfinished ones never are."""
    with duckdb.connect() as conn:
        for spec in (CANDIDATES, INTERVIEW_RESULTS):
            conn.execute(spec.create_sql())
        conn.execute(
            "INSERT INTO candidates (interview_id, posting_id, status, score, created_date, interviewed_at, "
            "workflow_last_activity_at, shortlisted, dismissed, name) VALUES ('A1', 'P1', 'completed', 71.5, "
            "DATE '2026-01-02', TIMESTAMPTZ '2026-01-02 10:00:00.5+00', TIMESTAMPTZ '2026-01-02 11:00:00+00', false, "
            "false, 'Ada')"
        )

        def due() -> list[str]:
            return results_due(conn)["interview_id"].to_pylist()

        (state,) = results_due(conn)["candidate_state"].to_pylist()
        assert due() == ["A1"]
        conn.execute(
            "INSERT INTO interview_results (interview_id, posting_id, created_date, fetched_at, candidate_state, "
            "status) VALUES ('A1', 'P1', DATE '2026-01-02', now(), ?, 'completed')",
            [state],
        )
        assert due() == []
        conn.execute("UPDATE candidates SET name = 'Ada L.', email = 'a@example.org'")  # not part of the state
        assert due() == []
        for change in (
            "status = 'shortlisted'",
            "score = 72.0",
            "score = NULL",
            "interviewed_at = interviewed_at + INTERVAL 1 SECOND",
            "workflow_last_activity_at = NULL",
        ):
            conn.execute("BEGIN")
            conn.execute(f"UPDATE candidates SET {change}")
            assert due() == ["A1"], change
            conn.execute("ROLLBACK")
        conn.execute("DELETE FROM interview_results")
        for status in ("pending", "in_progress", "evaluating"):
            conn.execute("UPDATE candidates SET status = ?", [status])
            assert due() == [], status


def test_every_table_from_the_simulators_results(tenant: Tenant) -> None:
    results = stored(tenant, Scrubber("keep"), transcripts=False)
    tables = flatten(results)
    assert set(tables) == {t.name for t in (*RESULT_TABLES, RAW_RESULTS)}
    for spec in (*RESULT_TABLES, RAW_RESULTS):
        assert tables[spec.name].schema == spec.schema
        if spec.primary_key:
            keys = tables[spec.name].select(list(spec.primary_key)).to_pylist()
            assert len(keys) == len({tuple(k.values()) for k in keys}), spec.name
    datas = [json.loads(s.record) for s in results]
    assert tables["interview_results"].num_rows == tables["raw_interview_results"].num_rows == len(datas) > 300
    web = [d["web_interview"] for d in datas if d["web_interview"]]
    assert tables["interview_scorecard"].num_rows == sum(len(w["scorecard"]) for w in web)
    sms = [d["sms"] for d in datas if d["sms"]]
    assert tables["interview_sms_criteria"].num_rows == sum(len(s["criteria"]) for s in sms)
    assert tables["interview_form_questions"].num_rows == sum(len(d["form"]["questions"]) for d in datas if d["form"])
    assert tables["interview_integrity_signals"].num_rows > 0 and tables["interview_transcripts"].num_rows == 0
    row = tables["interview_results"].to_pylist()[0]
    source = next(d for d in datas if d["interview_id"] == row["interview_id"])
    assert row["score"] == source["score"] and row["status"] == source["status"]
    # Signed URLs and the transcripts (off by default) are nowhere, not even in the raw records.
    text = everything(tables)
    assert "Signature=" not in text and "X-Amz" not in text and "https://" not in text
    assert '"transcript":[{' not in text and "transcript_references" not in text


def test_personal_data_follows_heymilo_pii_and_transcripts_their_own_setting(tenant: Tenant) -> None:
    originals = [data for _, data in finished(tenant)]
    untouched = copy.deepcopy(originals)
    hashed = flatten(stored(tenant, Scrubber("hash", "k" * 32), transcripts=True))
    assert originals == untouched  # scrub copies, never edits what it was given
    turns = hashed["interview_transcripts"].to_pylist()
    assert turns and all(t["text"].startswith("hmac:") for t in turns)
    assert {t["source"] for t in turns} == {"web_interview", "sms"}
    answers = hashed["interview_form_questions"].column("candidate_answer").to_pylist()
    assert answers and all(a.startswith("hmac:") for a in answers)
    records = [json.loads(r) for r in hashed["raw_interview_results"].column("record").to_pylist()]
    assert all(r["name"].startswith("hmac:") and r["email"].startswith("hmac:") for r in records)
    assert not strings(hashed) & ({d["name"] for d in originals} | {d["email"] for d in originals})
    dropped = flatten(stored(tenant, Scrubber("drop"), transcripts=True))
    assert set(dropped["interview_transcripts"].column("text").to_pylist()) == {None}
    assert set(dropped["interview_scorecard"].column("evaluation_summary").to_pylist()) == {None}


def test_the_tables_rebuild_from_the_raw_records_alone(tenant: Tenant) -> None:
    first = flatten(stored(tenant, Scrubber("keep"), transcripts=True))
    again = flatten(stored_results(first["raw_interview_results"]))
    assert all(again[name].equals(first[name]) for name in first), [n for n in first if not again[n].equals(first[n])]


def test_unknown_fields_are_kept_as_extra() -> None:
    record = {"interview_id": "A1", "status": "completed", "sentiment": "positive",
              "web_interview": {"match_score": 80, "duration_seconds": 900, "scorecard": []}}  # fmt: skip
    tables = flatten([StoredResult.of(record, "P1", date(2026, 1, 1), FETCHED_AT, "s")])
    row = tables["interview_results"].to_pylist()[0]
    assert json.loads(row["extra"]) == {"sentiment": "positive", "web_interview.duration_seconds": 900}
    assert row["web_interview_match_score"] == 80 and row["web_interview_weighted_score"] is None
