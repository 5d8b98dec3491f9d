"""Records -> Arrow: declared schemas, nulls, timestamps and days, unknown fields, JSON, workflow summary."""

from __future__ import annotations

import copy
import json
import random
import types
import typing
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pydantic
import pytest

from heymilo_pipeline import flatten as fl
from heymilo_pipeline import tables
from heymilo_pipeline.api.models import CandidateResponse, PostingResponse
from heymilo_pipeline.api.windows import day_of, midnight
from heymilo_pipeline_tests.factories import BIG, DAY, T0, record, step


def flat(*docs: dict[str, Any], partition_day: date | None = None) -> tuple[pa.Table, pa.Table]:
    return fl.flatten([CandidateResponse.model_validate(d) for d in docs], partition_day=partition_day)


def row(table: pa.Table, i: int = 0) -> dict[str, Any]:
    return table.slice(i, 1).to_pylist()[0]


def test_tables_have_exactly_the_declared_schemas_with_descriptions() -> None:
    candidates, steps = flat(record(1), record(2, workflow=None, agent_summary=None))
    assert candidates.schema.equals(tables.CANDIDATES.schema, check_metadata=True)
    assert steps.schema.equals(tables.WORKFLOW_STEPS.schema, check_metadata=True)
    for spec in (tables.CANDIDATES, tables.WORKFLOW_STEPS, tables.POSTINGS):
        for field, column in zip(spec.schema, spec.columns, strict=True):
            assert field.metadata[tables.DESCRIPTION].decode() == column.description != ""
    assert candidates.num_rows == 2 and steps.num_rows == 3


def test_empty_input_gives_empty_tables_with_the_full_schema() -> None:
    candidates, steps = fl.flatten([])
    assert candidates.num_rows == steps.num_rows == 0
    assert candidates.schema.equals(tables.CANDIDATES.schema, check_metadata=True)
    assert steps.schema.equals(tables.WORKFLOW_STEPS.schema, check_metadata=True)


def test_a_full_record() -> None:
    candidates, steps = flat(record())
    r = row(candidates)
    assert r["interview_id"] == "0000000000000001" and r["posting_id"] == "P1" and r["candidate_id"] == "cand_1"
    assert r["created_at"] == datetime(2026, 3, 13, 1, 0, 0, 250000, tzinfo=UTC)
    assert r["created_date"] == DAY
    assert r["interviewed_at"] == datetime(2026, 3, 13, 1, 1, 40, 250000, tzinfo=UTC)
    assert r["workflow_all_complete"] is False
    assert r["workflow_last_activity_at"] == datetime(2026, 3, 13, 1, 2, 0, 750000, tzinfo=UTC)
    assert (r["workflow_steps_total"], r["workflow_steps_started"], r["workflow_steps_completed"]) == (3, 2, 1)
    assert r["workflow_steps_knocked_out"] == 0
    assert (r["workflow_current_step_id"], r["workflow_current_step_order"]) == ("vi_2", 2)
    assert (r["resume_score"], r["resume_is_eligible"], r["resume_link"]) == (3.8, True, "https://cdn.heymilo.io/r.pdf")
    assert r["web_interview_score"] == 82.0 and r["web_interview_highlights"] == ["clear", "kind"]
    assert r["web_interview_audio_recording_link"] == "https://a" and r["web_interview_video_recording_link"] is None
    assert r["sms_is_eligible"] is None and r["sms_criteria_passed"] == ["age"] and r["sms_criteria_failed"] == []
    assert r["sms_messages_sent"] == 8
    form = [r[c] for c in ("form_is_complete", "form_is_eligible", "form_questions_answered", "form_total_questions")]
    assert form == [False, None, 5, 7]
    assert r["metadata"] == '{"source":"linkedin","external_id":"x1"}'  # as sent
    assert r["extra"] is None
    assert steps.to_pylist()[1] == {
        "interview_id": "0000000000000001",
        "posting_id": "P1",
        "created_date": DAY,
        "step_id": "vi_2",
        "step_order": 2,
        "status": "in_progress",
        "started": True,
        "completed": False,
        "knocked_out": False,
        "last_updated_at": datetime(2026, 3, 13, 1, 2, 0, 750000, tzinfo=UTC),
        "extra": None,
    }


def test_nulls_where_the_spec_allows_them() -> None:
    minimal = {"interview_id": "M", "posting_id": "P1", "name": "N", "email": "e@x", "status": "pending"}
    sections_null = record(2, agent_summary={"resume": None, "web_interview": None, "sms": None, "form": None})
    empty_lists = record(3, agent_summary={"web_interview": {"highlights": []}, "sms": {"criteria_passed": []}})
    no_workflow = record(1, workflow=None, agent_summary=None)
    candidates, steps = flat(minimal, no_workflow, sections_null, empty_lists, partition_day=DAY)
    section_columns = [
        c for c in tables.CANDIDATES.names if c.startswith(("resume_", "web_interview_", "sms_", "form_"))
    ]
    workflow_columns = [c for c in tables.CANDIDATES.names if c.startswith("workflow_")]
    rows = candidates.to_pylist()
    for r in rows[:3]:
        assert all(r[c] is None for c in section_columns), r
    for r in rows[:2]:
        assert all(r[c] is None for c in workflow_columns), r
    m = rows[0]
    assert m["candidate_id"] is m["score"] is m["created_at"] is m["interviewed_at"] is m["metadata"] is None
    assert m["data"] is None and m["interview_url"] is None and m["created_date"] == DAY
    assert m["shortlisted"] is False and m["dismissed"] is False
    # A section the API sent, with empty lists: [] (not null); the sections it did not send stay null.
    e = rows[3]
    assert e["web_interview_highlights"] == [] and e["web_interview_score"] is None
    assert e["sms_criteria_passed"] == [] and e["sms_criteria_failed"] == []
    assert e["resume_score"] is None and e["form_total_questions"] is None
    assert steps.num_rows == 6  # only the two records with a workflow


def test_workflow_without_steps_counts_zero() -> None:
    candidates, steps = flat(record(workflow={"steps": [], "all_complete": False, "last_activity_at": None}))
    r = row(candidates)
    assert steps.num_rows == 0
    assert (r["workflow_steps_total"], r["workflow_steps_started"], r["workflow_steps_completed"]) == (0, 0, 0)
    assert r["workflow_current_step_id"] is None and r["workflow_current_step_order"] is None


def test_current_step_is_the_first_not_completed_by_order_not_by_position() -> None:
    unordered = [step("c", 3, "not_started"), step("a", 1, "completed"), step("b", 2, "knocked_out")]
    all_done = [step("y", 2, "completed"), step("x", 1, "completed")]
    candidates, steps = flat(
        record(1, workflow={"steps": unordered, "all_complete": False}),
        record(2, workflow={"steps": all_done, "all_complete": True}),
        record(3),
    )
    rows = candidates.to_pylist()
    assert (rows[0]["workflow_current_step_id"], rows[0]["workflow_current_step_order"]) == ("b", 2)
    assert (rows[0]["workflow_steps_completed"], rows[0]["workflow_steps_knocked_out"]) == (1, 1)
    assert rows[0]["workflow_steps_started"] == 2
    assert rows[1]["workflow_current_step_id"] is None and rows[1]["workflow_all_complete"] is True
    assert rows[1]["workflow_steps_completed"] == 2
    assert rows[2]["workflow_current_step_id"] == "vi_2"
    # Steps keep the API's order and belong to the right candidate.
    owners = [s["interview_id"][-1] + s["step_id"] for s in steps.to_pylist()]
    assert owners == ["1c", "1a", "1b", "2y", "2x", "3resume_1", "3vi_2", "3form_3"]


def test_timestamps_round_to_microseconds_and_days_follow_floor_division() -> None:
    midnight_next = midnight(DAY + timedelta(days=1))
    cases = {
        "midnight": midnight(DAY),  # exactly 00:00:00.000 belongs to that day
        "half_second_before": midnight_next - 0.5,  # 23:59:59.5 is still DAY
        "hair_before": midnight_next - 2**-22,  # rounds to the next midnight as a timestamp, yet is DAY
        "fraction": T0 + 0.0000015,
    }
    candidates, _ = flat(*(record(i, created_at=t) for i, t in enumerate(cases.values())))
    got = candidates.select(["created_at", "created_date"]).to_pylist()
    assert [g["created_date"] for g in got] == [DAY, DAY, DAY, DAY]
    assert got[0]["created_at"] == datetime(2026, 3, 13, tzinfo=UTC)
    assert got[1]["created_at"] == datetime(2026, 3, 13, 23, 59, 59, 500000, tzinfo=UTC)
    assert got[2]["created_at"] == datetime(2026, 3, 14, tzinfo=UTC)

    rng = random.Random(7)
    seconds = [rng.uniform(0, 4e9) for _ in range(2000)] + [midnight(DAY) + k / 8 for k in range(-16, 16)]
    seconds += [float(k * 86400) for k in range(20000, 20010)] + [k * 86400 - 1e-6 for k in range(20000, 20010)]
    array = pa.array(seconds, pa.float64())
    micros = fl.timestamps(array).cast(pa.int64()).to_pylist()
    assert micros == [round(s * 1_000_000) for s in seconds]
    assert fl.utc_days(array).to_pylist() == [day_of(s) for s in seconds]


def test_undated_candidates_take_the_partition_day_or_fail() -> None:
    candidates, steps = flat(record(1, created_at=None), record(2), partition_day=date(2026, 3, 20))
    assert candidates["created_date"].to_pylist() == [date(2026, 3, 20), DAY]
    assert candidates["created_at"].to_pylist()[0] is None
    undated_steps = steps.filter(pc.equal(steps["interview_id"], "0000000000000001"))
    assert set(undated_steps["created_date"].to_pylist()) == {date(2026, 3, 20)}
    with pytest.raises(ValueError, match="no partition_day"):
        flat(record(1, created_at=None))


def test_unknown_fields_at_every_level_go_to_extra() -> None:
    doc = record(1, sentiment={"label": "positive", "confidence": 0.93}, source_channel="sms")
    doc["workflow"]["current_step"] = 2
    doc["workflow"]["steps"][0]["attempts"] = 2
    doc["agent_summary"]["model_version"] = "milo-2026.03"
    doc["agent_summary"]["web_interview"]["sentiment_score"] = 0.7
    doc["agent_summary"]["form"]["duration_seconds"] = 300
    candidates, steps = flat(doc, record(2))
    assert json.loads(row(candidates)["extra"]) == {
        "sentiment": {"label": "positive", "confidence": 0.93},
        "source_channel": "sms",
        "workflow.current_step": 2,
        "agent_summary.model_version": "milo-2026.03",
        "agent_summary.web_interview.sentiment_score": 0.7,
        "agent_summary.form.duration_seconds": 300,
    }
    assert row(candidates, 1)["extra"] is None
    assert steps["extra"].to_pylist()[:3] == ['{"attempts":2}', None, None]


def _model_paths(model: type[pydantic.BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        for arg in [field.annotation, *_flat_args(field.annotation)]:
            if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
                found |= {f"{prefix}{name}", *_model_paths(arg, f"{prefix}{name}.")}
    return found


def _flat_args(annotation: Any) -> list[Any]:
    args = list(typing.get_args(annotation))
    return args + [a for arg in args if isinstance(arg, types.GenericAlias | types.UnionType) for a in _flat_args(arg)]


def test_flatten_scans_every_nested_model_for_unknown_fields() -> None:
    # flatten reads __pydantic_extra__ level by level for speed; if the models gain a nested model,
    # this fails until flatten scans it too.
    scanned = {"workflow", "workflow.steps", "agent_summary", *(f"agent_summary.{s}" for s in fl._SECTIONS)}
    assert _model_paths(CandidateResponse) == scanned


def test_json_columns_keep_big_integers_and_the_key_order_as_sent() -> None:
    data = {"z": {"b": [1, "two", None, {"x": BIG}], "a": -(2**70)}, "a": 1.5, "n": None, "s": "\ud800 é"}
    candidates, _ = flat(record(1, data=data))
    text = candidates["data"].to_pylist()[0]
    assert json.loads(text) == data and list(json.loads(text)) == list(data)
    assert json.loads(text)["z"]["b"][3]["x"] == BIG and json.loads(text)["z"]["a"] == -(2**70)


def test_postings_table() -> None:
    posting = {
        "id": "13D77095",
        "company_id": "comp_1",
        "title": "Engineer",
        "description": "d",
        "status": "active",
        "finalized": True,
        "archived": False,
        "test_posting": False,
        "deadline": 1775174400.5,
        "workflow": [{"type": "web_interview", "order": 2, "budget": 3}, {"type": "resume", "order": 1}],
        "urls": {"candidate_url": "https://c", "qr": "x"},
        "metadata": {"b": "2", "a": "1"},
        "tier": "gold",
    }
    listed_at = datetime(2026, 3, 13, 12, tzinfo=UTC)
    table = fl.postings_table([PostingResponse.model_validate(posting)], listed_at)
    assert table.schema.equals(tables.POSTINGS.schema, check_metadata=True)
    r = row(table)
    assert r["posting_id"] == "13D77095" and r["workflow_step_types"] == ["resume", "web_interview"]
    assert r["language"] == "en" and r["name"] is None and r["listed_at"] == listed_at
    assert r["deadline"] == datetime(2026, 4, 3, 0, 0, 0, 500000, tzinfo=UTC)
    assert r["metadata"] == '{"a":"1","b":"2"}'
    assert json.loads(r["extra"]) == {"tier": "gold", "workflow.0.budget": 3, "urls.qr": "x"}
    with pytest.raises(ValueError, match="timezone-aware"):
        fl.postings_table([], datetime(2026, 3, 13))
    assert fl.postings_table([], listed_at).num_rows == 0


def test_declarations_render_as_ddl_comments_dagster_columns_and_markdown() -> None:
    ddl = tables.CANDIDATES.create_sql()
    assert '"created_at" TIMESTAMPTZ' in ddl and '"data" JSON' in ddl and '"interview_id" VARCHAR NOT NULL' in ddl
    assert '"web_interview_highlights" VARCHAR[]' in ddl and '"created_date" DATE NOT NULL' in ddl
    comments = tables.WORKFLOW_STEPS.comment_sql()
    assert len(comments) == 1 + len(tables.WORKFLOW_STEPS.columns) and comments[0].startswith("COMMENT ON TABLE")
    assert (
        "step_order",
        "BIGINT",
        "Position of the step in the workflow (1-based).",
    ) in tables.WORKFLOW_STEPS.dagster_columns()


def test_input_records_are_not_modified() -> None:
    doc = record(1, sentiment="x")
    before = copy.deepcopy(doc)
    model = CandidateResponse.model_validate(doc)
    dumped = model.model_dump()
    fl.flatten([model])
    assert doc == before and model.model_dump() == dumped


def test_records_as_sent_flatten_exactly_like_their_validated_models() -> None:
    # The pipeline flattens the API's records directly (one Arrow conversion per page); the models are
    # the reference. Absent fields take the models' defaults, unknown ones go to extra either way.
    minimal = {"interview_id": "M", "posting_id": "P1", "name": "N", "email": "e@x", "status": "pending"}
    unknown = record(5, sentiment="x")
    unknown["workflow"]["steps"][1]["attempts"] = 3
    unknown["agent_summary"]["sms"]["carrier"] = "tmo"
    docs = [
        record(1),
        record(2, workflow=None, agent_summary=None, created_at=None),
        minimal,
        record(4, agent_summary={"web_interview": {"highlights": []}, "sms": {}, "form": None}),
        unknown,
        record(6, workflow={"steps": [{k: v for k, v in step("s", 1, "completed").items() if k != "knocked_out"}],
                            "all_complete": True}),
    ]  # fmt: skip
    assert [fl.flatten(docs, partition_day=DAY)[i].to_pylist() for i in (0, 1)] == [
        t.to_pylist() for t in flat(*docs, partition_day=DAY)
    ]


def test_what_arrow_refuses_is_judged_by_the_models() -> None:
    # Lax coercion, as the models do it: a number sent as a string is still a number.
    assert fl.flatten([record(1, score="78.5")])[0].to_pylist() == flat(record(1))[0].to_pylist()
    whole = record(1)
    whole["workflow"]["steps"][0]["order"] = 1.0
    whole["agent_summary"]["sms"]["messages_sent"] = 8.0
    assert fl.flatten([whole])[0].to_pylist() == flat(record(1))[0].to_pylist()
    steps_without_completed = record(3)
    del steps_without_completed["workflow"]["steps"][0]["completed"]
    fractional = record(5)
    fractional["workflow"]["steps"][1]["order"] = 1.5  # Arrow alone would store 1
    text_for_list = record(6)
    text_for_list["agent_summary"]["web_interview"]["highlights"] = "clear"  # Arrow alone: ["c", "l", ...]
    bad = {
        "fraction for an integer": (fractional, "order"),
        "text for a list": (text_for_list, "highlights"),
        "wrong type": (record(1, score="high"), "score"),
        "required field null": (record(2, interview_id=None), "interview_id"),
        "required field absent": ({k: v for k, v in record(2).items() if k != "email"}, "email"),
        "step field absent": (steps_without_completed, "completed"),
        "another object": (record(4, object="posting"), "object"),
    }

    def changed(path: str, value: Any) -> dict[str, Any]:
        doc = record(7)
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key][0] if key == "steps" else node[key]
        node[last] = value
        return doc

    # What Arrow alone would take in (as [], an all-null struct, a default, a stored null) the models refuse.
    for path, value in {
        "workflow.steps": "",
        "agent_summary": [],
        "agent_summary.sms": [],
        "shortlisted": None,
        "workflow.steps.knocked_out": None,
        "agent_summary.web_interview.highlights": None,
        "agent_summary.sms.criteria_passed": ["age", None],
        "metadata": {"k": 1},
        "data": "hello",
        "object": None,
    }.items():
        bad[path] = (changed(path, value), path.split(".")[-1])
    for doc, field in bad.values():
        with pytest.raises(pydantic.ValidationError, match=field):
            fl.flatten([record(9), doc])
