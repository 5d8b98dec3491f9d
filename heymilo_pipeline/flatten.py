"""Validated API records -> Arrow tables with the columns ``tables`` declares.

Flattening is columnar: a page of records becomes one typed Arrow struct array in one C++ call (which is
also the type check; the pydantic models judge only a page that fails it), then every column, workflow
step, count, day and timestamp is Arrow compute. Python touches each record only for its free-form JSON
(``data``, ``metadata``) and to look for fields the models do not know.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pydantic
import pydantic_core

from heymilo_pipeline.api import models as m
from heymilo_pipeline.tables import CANDIDATES, POSTINGS, TIMESTAMP, WORKFLOW_STEPS

SECONDS_PER_DAY = 86_400
# For what the pipeline composes (unknown fields, posting metadata): sorted keys make the text independent
# of the order things were found in; Python ints have no width, so ids beyond 64 bits stay exact.
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode


def json_text(value: Any) -> str:
    """A value parsed from the API's JSON, as compact JSON text exactly as sent: key order, floats, big ints.

    pydantic-core's Rust serializer is several times faster than json.dumps and as exact; json.dumps takes
    over for what it refuses but JSON allows (a lone surrogate from a "\\ud800" escape).
    """
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError:
        return json.dumps(value, separators=(",", ":"))  # \u-escapes keep the text valid UTF-8


def timestamps(seconds: pa.Array) -> pa.Array:
    """Epoch seconds (float64) -> timestamp[us, UTC], exactly ``round(ts * 1_000_000)`` (half to even)."""
    micros = pc.round(pc.multiply(seconds, 1_000_000.0), round_mode="half_to_even")
    return micros.cast(pa.int64()).cast(TIMESTAMP)


def utc_days(seconds: pa.Array) -> pa.Array:
    """Epoch seconds -> date32, exactly ``seconds // 86400`` like windows.day_of, which chose the fetch window."""
    days = pc.floor(pc.divide(seconds, float(SECONDS_PER_DAY)))
    # The division rounds, so a hair before midnight it can reach the next day: step back then.
    days = pc.if_else(pc.greater(pc.multiply(days, float(SECONDS_PER_DAY)), seconds), pc.subtract(days, 1.0), days)
    return days.cast(pa.int32()).cast(pa.date32())


# The record's fields that are columns as they are, then those that need work.
_AS_IS = ("interview_id", "posting_id", "candidate_id", "name", "email", "status", "score", "interview_url")
_AS_IS += ("shortlisted", "dismissed")
# agent_summary attribute -> fields; the column is "<attribute>_<field>" unless the field is prefixed already
_SECTIONS = {
    "resume": ("resume_score", "is_eligible", "resume_link"),
    "web_interview": ("score", "highlights", "audio_recording_link", "video_recording_link"),
    "sms": ("is_eligible", "criteria_passed", "criteria_failed", "messages_sent"),
    "form": ("is_complete", "is_eligible", "questions_answered", "total_questions"),
}
_STEP = ("step_id", "order", "status", "started", "completed", "knocked_out", "last_updated_at")
# What the spec requires (null or absent: the record is checked by the models, which say what is wrong) and
# what it defaults (absent: the default, as the models fill it in).
_REQUIRED = ("interview_id", "posting_id", "name", "email", "status")
_REQUIRED_STEP = ("step_id", "order", "status", "started", "completed")
_FALSE_BY_DEFAULT = ("shortlisted", "dismissed")
_EMPTY_BY_DEFAULT = {"web_interview": ("highlights",), "sms": ("criteria_passed", "criteria_failed")}


def _section_column(section: str, field: str) -> str:
    return field if field.startswith(section) else f"{section}_{field}"


def _record_type() -> pa.StructType:
    """The Arrow type of a candidate record: every field the models declare, except free-form JSON."""
    column = CANDIDATES.schema.field
    step_type = {f: WORKFLOW_STEPS.schema.field("step_order" if f == "order" else f).type for f in _STEP}
    step = pa.struct(step_type | {"last_updated_at": pa.float64()})  # epoch seconds, as sent
    workflow = pa.struct([("steps", pa.list_(step)), ("all_complete", pa.bool_()), ("last_activity_at", pa.float64())])
    sections = [(s, pa.struct([(f, column(_section_column(s, f)).type) for f in fs])) for s, fs in _SECTIONS.items()]
    top = [(name, column(name).type) for name in _AS_IS] + [
        ("object", pa.string()),
        ("created_at", pa.float64()),
        ("interviewed_at", pa.float64()),
    ]
    return pa.struct([*top, ("workflow", workflow), ("agent_summary", pa.struct(sections))])


RECORD_TYPE = _record_type()
_CANDIDATE_LIST = pydantic.TypeAdapter(list[m.CandidateResponse])
# Field names per level, from the models: anything else in a record is an unknown field.
_KNOWN_TOP = frozenset(m.CandidateResponse.model_fields)
_KNOWN_WORKFLOW = frozenset(m.CandidateWorkflow.model_fields)
_KNOWN_STEP = frozenset(m.WorkflowStepStatus.model_fields)
_KNOWN_SUMMARY = frozenset(m.AgentSummary.model_fields)
_KNOWN_SECTION = {
    name: frozenset(model.model_fields)
    for name, model in (
        ("resume", m.AgentResumeSummary),
        ("web_interview", m.AgentWebInterviewSummary),
        ("sms", m.AgentSMSSummary),
        ("form", m.AgentFormSummary),
    )
}


class _NotAsSpecified(Exception):
    """The fast conversion met something only the models can judge (or coerce)."""


def validated_records(records: Sequence[dict[str, Any]]) -> tuple[pa.StructArray, Sequence[dict[str, Any]]]:
    """Candidate records as the API sent them -> one typed Arrow struct array, checked against the spec.

    Arrow converts the whole page at once in C++ (with the record's types, a wrong type fails); required
    fields are then checked column-wise. Only a page that fails either way goes through the pydantic
    models, record by record: they raise ``pydantic.ValidationError`` naming the record and the field,
    or accept what their lax mode coerces (a number sent as a string), and the coerced records are then
    the ones converted (also returned, for the JSON columns). Unknown fields are ignored here.
    """
    try:
        if _misread_by_arrow(records):
            raise _NotAsSpecified("a value Arrow would convert where the models refuse it")
        array = pa.array(records, RECORD_TYPE)
        _check_required(array)
        return array, records
    except (pa.ArrowException, TypeError, ValueError, OverflowError, _NotAsSpecified):
        coerced = [c.model_dump() for c in _CANDIDATE_LIST.validate_python(records)]
        return pa.array(coerced, RECORD_TYPE), coerced


# Where Arrow's conversion is laxer than the models, checked in Python before it runs: a float for an
# integer (Arrow truncates 1.5 to 1), a string for a list (Arrow splits it into characters, and takes ""
# as []), a list for an object (Arrow takes [] as an all-null struct), null where the spec has a default
# but no null (Arrow gives null, which we would fill), and the free-form JSON fields Arrow never sees.
# Everything else Arrow refuses, or converts as the models do (e.g. true -> 1.0 for a number).
_INTEGERS = {"sms": ("messages_sent",), "form": ("questions_answered", "total_questions")}
_STRING_LISTS = {"web_interview": ("highlights",), "sms": ("criteria_passed", "criteria_failed")}


def _misread_by_arrow(records: Sequence[Any]) -> bool:
    for record in records:
        if type(record) is not dict or record.get("object", "candidate") != "candidate":
            return True
        if any(name in record and record[name] is None for name in _FALSE_BY_DEFAULT):
            return True
        metadata, data = record.get("metadata"), record.get("data")
        if metadata is not None and (type(metadata) is not dict or any(type(v) is not str for v in metadata.values())):
            return True
        if data is not None and type(data) is not dict:
            return True
        workflow = record.get("workflow")
        if workflow is not None:
            steps = workflow.get("steps") if type(workflow) is dict else None
            if type(steps) is not list:
                return True
            for step in steps:
                if type(step) is not dict or type(step.get("order")) is float or step.get("knocked_out", 0) is None:
                    return True
        summary = record.get("agent_summary")
        if summary is None:
            continue
        if type(summary) is not dict:
            return True
        for section in _SECTIONS:
            part = summary.get(section)
            if part is None:
                continue
            if type(part) is not dict:
                return True
            if any(type(part.get(name)) is float for name in _INTEGERS.get(section, ())):
                return True
            if any(name in part and type(part[name]) is not list for name in _STRING_LISTS.get(section, ())):
                return True
    return False


def _check_required(array: pa.StructArray) -> None:
    if array.null_count:
        raise _NotAsSpecified("a record is null")
    if any(pc.struct_field(array, name).null_count for name in _REQUIRED):
        raise _NotAsSpecified("a required field is missing")
    workflow = pc.struct_field(array, "workflow")
    present = pc.is_valid(workflow)
    for name in ("steps", "all_complete"):
        if pc.any(pc.and_(present, pc.is_null(pc.struct_field(workflow, name)))).as_py():
            raise _NotAsSpecified(f"workflow.{name} is missing")
    steps = pc.list_flatten(pc.struct_field(workflow, "steps"))
    if steps.null_count or any(pc.struct_field(steps, name).null_count for name in _REQUIRED_STEP):
        raise _NotAsSpecified("a workflow step lacks a required field")
    summary = pc.struct_field(array, "agent_summary")
    for section, names in _STRING_LISTS.items():
        for name in names:
            if pc.list_flatten(_field(summary, section, name)).null_count:
                raise _NotAsSpecified(f"agent_summary.{section}.{name} holds a null")


def _field(array: pa.Array, *path: str) -> pa.Array:
    for name in path:
        array = pc.struct_field(array, name)  # null where a parent is null
    return array


def _unknown_fields(records: Sequence[dict[str, Any]]) -> tuple[list[str | None], list[str | None]]:
    """Per record, its unknown fields at every level as JSON keyed by dotted path; and per step, its own.

    Almost no record has any, so each level is first tested with a subset check (no allocation)."""
    candidate_extra: list[str | None] = [None] * len(records)
    step_extra: list[str | None] = []
    for i, record in enumerate(records):
        found: dict[str, Any] = {}
        if not record.keys() <= _KNOWN_TOP:
            found.update({k: record[k] for k in record.keys() - _KNOWN_TOP})
        workflow = record.get("workflow")
        if workflow:
            if not workflow.keys() <= _KNOWN_WORKFLOW:
                found.update({f"workflow.{k}": workflow[k] for k in workflow.keys() - _KNOWN_WORKFLOW})
            for step in workflow.get("steps") or ():
                known = step.keys() <= _KNOWN_STEP
                step_extra.append(None if known else _dumps({k: step[k] for k in step.keys() - _KNOWN_STEP}))
        summary = record.get("agent_summary")
        if summary:
            if not summary.keys() <= _KNOWN_SUMMARY:
                found.update({f"agent_summary.{k}": summary[k] for k in summary.keys() - _KNOWN_SUMMARY})
            for section, known_fields in _KNOWN_SECTION.items():
                part = summary.get(section)
                if part and not part.keys() <= known_fields:
                    found.update({f"agent_summary.{section}.{k}": part[k] for k in part.keys() - known_fields})
        if found:
            candidate_extra[i] = _dumps(found)
    return candidate_extra, step_extra


def flatten(
    candidates: Sequence[dict[str, Any]] | Sequence[m.CandidateResponse], *, partition_day: date | None = None
) -> tuple[pa.Table, pa.Table]:
    """(candidates, candidate_workflow_steps) Arrow tables with exactly the declared schemas.

    ``candidates`` are records as the API sent them (parsed JSON), or validated models. Raises
    ``pydantic.ValidationError`` for a record that does not match the spec. ``partition_day`` is the
    created_date of candidates whose created_at is null (the day they were fetched for); without it
    such a candidate is an error: it would belong to no partition.
    """
    if not candidates:
        return CANDIDATES.empty(), WORKFLOW_STEPS.empty()
    records = [c.model_dump() if isinstance(c, m.APIModel) else c for c in candidates]
    array, records = validated_records(records)
    created = _field(array, "created_at")
    created_date = utc_days(created)
    if created_date.null_count:
        if partition_day is None:
            undated = pc.filter(_field(array, "interview_id"), pc.is_null(created)).to_pylist()
            raise ValueError(f"candidates without created_at and no partition_day to file them under: {undated[:5]}")
        created_date = pc.fill_null(created_date, pa.scalar(partition_day, pa.date32()))
    keys = {"interview_id": _field(array, "interview_id"), "posting_id": _field(array, "posting_id")}
    keys["created_date"] = created_date
    columns: dict[str, Any] = {name: _field(array, name) for name in _AS_IS} | keys
    for name in _FALSE_BY_DEFAULT:
        columns[name] = pc.fill_null(columns[name], False)
    columns["created_at"] = timestamps(created)
    columns["interviewed_at"] = timestamps(_field(array, "interviewed_at"))
    candidate_extra, step_extra = _unknown_fields(records)
    steps, workflow_columns = _workflows(_field(array, "workflow"), keys, step_extra)
    columns |= workflow_columns
    summary = _field(array, "agent_summary")
    for section, fields in _SECTIONS.items():
        part = _field(summary, section)
        for name in fields:
            values = _field(part, name)
            if name in _EMPTY_BY_DEFAULT.get(section, ()):  # [] when the section came without the list
                values = pc.if_else(pc.is_valid(part), pc.fill_null(values, pa.scalar([], values.type)), None)
            columns[_section_column(section, name)] = values
    columns["metadata"] = [None if (v := r.get("metadata")) is None else json_text(v) for r in records]
    columns["data"] = [None if (v := r.get("data")) is None else json_text(v) for r in records]
    columns["extra"] = candidate_extra
    return pa.Table.from_pydict(columns, schema=CANDIDATES.schema), steps


def _workflows(
    workflow: pa.Array, keys: dict[str, pa.Array], step_extra: list[str | None]
) -> tuple[pa.Table, dict[str, Any]]:
    """The steps table and the candidates' workflow columns."""
    step_lists = _field(workflow, "steps")
    has_workflow = pc.is_valid(workflow)
    lengths = pc.fill_null(pc.list_value_length(step_lists), 0).cast(pa.int64())
    flat = pc.list_flatten(step_lists)
    owner = pc.list_parent_indices(step_lists)
    columns = {name: array.take(owner) for name, array in keys.items()} | {"step_order": _field(flat, "order")}
    columns |= {name: _field(flat, name) for name in ("step_id", "status", "started", "completed")}
    columns["knocked_out"] = pc.fill_null(_field(flat, "knocked_out"), False)
    columns["last_updated_at"] = timestamps(_field(flat, "last_updated_at"))
    columns["extra"] = pa.array(step_extra, pa.string())
    table = pa.Table.from_pydict(columns, schema=WORKFLOW_STEPS.schema)

    # Candidate i owns steps offsets[i]:offsets[i + 1] (the steps are in candidate order).
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(lengths)])
    starts, ends = offsets.slice(0, len(lengths)), offsets.slice(1)

    def count(flags: pa.ChunkedArray) -> pa.Array:
        # A candidate's steps are contiguous, so its count is the difference of a running sum at its bounds.
        running = pa.concat_arrays(
            [pa.array([0], pa.int64()), pc.cumulative_sum(flags.cast(pa.int64())).combine_chunks()]
        )
        return pc.if_else(has_workflow, pc.subtract(running.take(ends), running.take(starts)), None).cast(pa.int32())

    # Sorted by (candidate, completed, order), a candidate's steps stay at its offsets with the pending step of
    # lowest order first; if even that first step is completed, all are.
    by = [("owner", "ascending"), ("completed", "ascending"), ("step_order", "ascending")]
    ordered = table.take(pc.sort_indices(table.append_column("owner", owner), by))
    first = pc.if_else(pc.greater(lengths, 0), starts, None)
    pending = pc.invert(ordered["completed"].take(first))
    summary = {
        "workflow_all_complete": _field(workflow, "all_complete"),
        "workflow_last_activity_at": timestamps(_field(workflow, "last_activity_at")),
        "workflow_steps_total": pc.if_else(has_workflow, lengths, None).cast(pa.int32()),
        "workflow_steps_started": count(table["started"]),
        "workflow_steps_completed": count(table["completed"]),
        "workflow_steps_knocked_out": count(table["knocked_out"]),
        "workflow_current_step_id": pc.if_else(pending, ordered["step_id"].take(first), None),
        "workflow_current_step_order": pc.if_else(pending, ordered["step_order"].take(first), None),
    }
    return table, summary


def _model_extras(model: m.APIModel, prefix: str = "") -> dict[str, Any]:
    """Unknown fields of a model and of every model nested in it (lists too), keyed by dotted path."""
    found = {prefix + k: v for k, v in model.unknown_fields().items()}
    for name in type(model).model_fields:
        value = getattr(model, name)
        nested = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in nested:
            if isinstance(item, m.APIModel):
                found.update(_model_extras(item, f"{prefix}{name}." if i is None else f"{prefix}{name}.{i}."))
    return found


def postings_table(postings: Sequence[m.PostingResponse], listed_at: datetime) -> pa.Table:
    """The postings table, one row per posting, as listed at ``listed_at`` (timezone-aware)."""
    if listed_at.tzinfo is None:
        raise ValueError("listed_at must be timezone-aware")
    plain = ("company_id", "title", "name", "status", "finalized", "archived", "test_posting", "language")
    columns: dict[str, Any] = {name: [getattr(p, name) for p in postings] for name in (*plain, "interviewer_name")}
    columns["posting_id"] = [p.id for p in postings]
    columns["workflow_step_types"] = [[s.type for s in sorted(p.workflow, key=attrgetter("order"))] for p in postings]
    for name in ("deadline", "created_at", "updated_at"):
        columns[name] = timestamps(pa.array([getattr(p, name) for p in postings], pa.float64()))
    columns["metadata"] = [None if p.metadata is None else _dumps(p.metadata) for p in postings]
    columns["extra"] = [_dumps(e) if (e := _model_extras(p)) else None for p in postings]
    columns["listed_at"] = pa.array([listed_at.astimezone(UTC)] * len(postings), TIMESTAMP)
    columns["vanished_at"] = pa.nulls(len(postings), TIMESTAMP)
    return pa.Table.from_pydict(columns, schema=POSTINGS.schema)
