"""Validated API records -> Arrow tables, and the one declaration of every table's columns.

Each column is declared once (name, Arrow type, description); the Arrow schema (description in the field
metadata), the DuckDB DDL and comments, Dagster's column list and docs/tables.md all derive from it.
Descriptions follow the field descriptions of HeyMilo's OpenAPI document.

Flattening is columnar: a page of records becomes one typed Arrow struct array in one C++ call (which is
also the type check; the pydantic models judge only a page that fails it), then every column, workflow
step, count, day and timestamp is Arrow compute. Python touches each record only for its free-form JSON
(``data``, ``metadata``) and to look for fields the models do not know.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from operator import attrgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pydantic
import pydantic_core

from heymilo_pipeline.api import models as m

SECONDS_PER_DAY = 86_400
DESCRIPTION = b"description"
TIMESTAMP = pa.timestamp("us", tz="UTC")
_S, _F, _B, _I32, _I64, _D = pa.string(), pa.float64(), pa.bool_(), pa.int32(), pa.int64(), pa.date32()
# "element" is the Parquet name of a list item: with it, a schema survives a trip through Parquet unchanged.
_TS, _L = TIMESTAMP, pa.list_(pa.field("element", pa.string()))
_SQL = {_S: "VARCHAR", _F: "DOUBLE", _B: "BOOLEAN", _I32: "INTEGER", _I64: "BIGINT", _TS: "TIMESTAMPTZ", _D: "DATE"}
_SQL[_L] = "VARCHAR[]"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = True
    json: bool = False  # JSON text: a string in Arrow/Parquet, DuckDB's JSON type in the warehouse

    @property
    def sql_type(self) -> str:
        return "JSON" if self.json else _SQL[self.type]

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, self.nullable, {DESCRIPTION: self.description.encode()})


@dataclass(frozen=True)
class TableSpec:
    """A table's ordered columns: as Arrow schema, DuckDB DDL and comments, Dagster columns, Markdown."""

    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property
    def schema(self) -> pa.Schema:
        return pa.schema([c.field for c in self.columns], metadata={DESCRIPTION: self.description.encode()})

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def create_sql(self) -> str:
        lines = [f'"{c.name}" {c.sql_type}{"" if c.nullable else " NOT NULL"}' for c in self.columns]
        if self.primary_key:
            lines.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in self.primary_key) + ")")
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n    ' + ",\n    ".join(lines) + "\n)"

    def comment_sql(self) -> list[str]:
        table = [f'COMMENT ON TABLE "{self.name}" IS {_text(self.description)}']
        return table + [f'COMMENT ON COLUMN "{self.name}"."{c.name}" IS {_text(c.description)}' for c in self.columns]

    def dagster_columns(self) -> list[tuple[str, str, str]]:
        """(name, type, description) per column, for a Dagster ``TableSchema``."""
        return [(c.name, c.sql_type, c.description) for c in self.columns]

    def markdown(self) -> str:
        key = [f"Key: {', '.join(f'`{k}`' for k in self.primary_key)} (unique across the table).", ""]
        head = [f"## `{self.name}`", "", self.description, "", *(key if self.primary_key else [])]
        head += ["| column | type | | description |", "|---|---|---|---|"]
        rows = [
            f"| `{c.name}` | {c.sql_type} | {'' if c.nullable else 'not null'} | {c.description} |"
            for c in self.columns
        ]
        return "\n".join([*head, *(row.replace("\n", " ") for row in rows), ""])


def _text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


NOT_NULL, JSON = "not null", "json"


def spec(name: str, description: str, *columns: tuple[Any, ...], primary_key: tuple[str, ...] = ()) -> TableSpec:
    """A TableSpec from compact rows: (name, type, description[, NOT_NULL | JSON])."""
    cols = [Column(n, t, d, nullable=NOT_NULL not in flag, json=JSON in flag) for n, t, d, *flag in columns]
    return TableSpec(name, description, tuple(cols), primary_key)


_UNKNOWN = "Fields the API sent that the models do not know (yet), as JSON keyed by dotted path, e.g. "
_UNKNOWN += "agent_summary.web_interview.sentiment_score; null when there are none."

# fmt: off
CANDIDATES = spec("candidates", "One row per candidate (interview) of a posting, as the API last returned it.",
    ("interview_id", _S, "Unique interview identifier: one per candidate-posting pair.", NOT_NULL),
    ("posting_id", _S, "ID of the posting this candidate belongs to.", NOT_NULL),
    ("candidate_id", _S, "Candidate identifier, shared across postings within the workspace."),
    ("name", _S, "Candidate's full name (personal data; null or a keyed hash under HEYMILO_PII=drop|hash)."),
    ("email", _S, "Candidate's email address (personal data; null or a keyed hash under HEYMILO_PII=drop|hash)."),
    ("status", _S, "pending, in_progress, evaluating (all steps done, final score still being computed), "
                   "completed, shortlisted, dismissed or knocked_out.", NOT_NULL),
    ("score", _F, "Overall match score (0-100), aggregated across all completed workflow steps."),
    ("interview_url", _S, "URL the candidate uses to access the interview."),
    ("shortlisted", _B, "Whether a recruiter has shortlisted this candidate.", NOT_NULL),
    ("dismissed", _B, "Whether a recruiter has dismissed this candidate.", NOT_NULL),
    ("created_at", _TS, "When the candidate was ingested (UTC, microseconds)."),
    ("created_date", _D, "UTC day of created_at: the partition day (the day fetched for if created_at is null).",
     NOT_NULL),
    ("interviewed_at", _TS, "When the candidate completed the interview (UTC)."),
    ("workflow_all_complete", _B, "True when every workflow step has been completed; null without a workflow."),
    ("workflow_last_activity_at", _TS, "The candidate's most recent interaction with any workflow step (UTC)."),
    ("workflow_steps_total", _I32, "Number of workflow steps; null when the API sent no workflow."),
    ("workflow_steps_started", _I32, "Number of workflow steps the candidate has started."),
    ("workflow_steps_completed", _I32, "Number of workflow steps the candidate has completed."),
    ("workflow_steps_knocked_out", _I32, "Number of workflow steps at which the candidate was disqualified."),
    ("workflow_current_step_id", _S, "First step (by order) not yet completed; null when all are or without workflow."),
    ("workflow_current_step_order", _I64, "Position (1-based) of workflow_current_step_id in the workflow."),
    ("resume_score", _F, "Resume screening: resume match score."),
    ("resume_is_eligible", _B, "Resume screening: whether the candidate meets the eligibility criteria."),
    ("resume_link", _S, "Resume screening: URL of the uploaded resume (signed; expires)."),
    ("web_interview_score", _F, "Web interview: overall interview score."),
    ("web_interview_highlights", _L, "Web interview: candidate strengths identified by the AI."),
    ("web_interview_audio_recording_link", _S, "Web interview: signed URL of the audio recording (expires)."),
    ("web_interview_video_recording_link", _S, "Web interview: signed URL of the video recording (expires)."),
    ("sms_is_eligible", _B, "SMS screening: whether the candidate passed."),
    ("sms_criteria_passed", _L, "SMS screening: criteria the candidate passed."),
    ("sms_criteria_failed", _L, "SMS screening: criteria the candidate failed."),
    ("sms_messages_sent", _I64, "SMS screening: total messages sent by the agent."),
    ("form_is_complete", _B, "Form screening: whether the candidate completed the form."),
    ("form_is_eligible", _B, "Form screening: whether the candidate passed all knockout questions."),
    ("form_questions_answered", _I64, "Form screening: number of questions answered."),
    ("form_total_questions", _I64, "Form screening: total number of questions on the form."),
    ("metadata", _S, "Key-value pairs (strings) stored with the candidate, as JSON.", JSON),
    ("data", _S, "Additional candidate data supplied at ingestion time, as JSON (as sent: key order, big numbers).",
     JSON),
    ("extra", _S, _UNKNOWN + " Unknown step fields are in candidate_workflow_steps.extra.", JSON),
    primary_key=("interview_id",),
)
WORKFLOW_STEPS = spec("candidate_workflow_steps", "One row per candidate and workflow step.",
    ("interview_id", _S, "The candidate's interview_id.", NOT_NULL),
    ("posting_id", _S, "ID of the posting the candidate belongs to.", NOT_NULL),
    ("created_date", _D, "The candidate's created_date (partition day).", NOT_NULL),
    ("step_id", _S, "Workflow step identifier.", NOT_NULL),
    ("step_order", _I64, "Position of the step in the workflow (1-based).", NOT_NULL),
    ("status", _S, "Step status: not_started, in_progress, completed or knocked_out.", NOT_NULL),
    ("started", _B, "Whether the candidate has started this step.", NOT_NULL),
    ("completed", _B, "Whether the candidate has completed this step.", NOT_NULL),
    ("knocked_out", _B, "Whether the candidate was disqualified at this step.", NOT_NULL),
    ("last_updated_at", _TS, "Last status change of the step (UTC)."),
    ("extra", _S, "Step fields the pipeline's models do not know (yet), as JSON; null when none.", JSON),
)
POSTINGS = spec("postings", "One row per posting of the workspace, as of the latest listing.",
    ("posting_id", _S, "Unique posting identifier.", NOT_NULL),
    ("company_id", _S, "ID of the company that owns this posting.", NOT_NULL),
    ("title", _S, "Job title displayed to candidates.", NOT_NULL),
    ("name", _S, "URL-friendly slug of the posting."),
    ("status", _S, "Posting status: draft, active, expired or archived.", NOT_NULL),
    ("finalized", _B, "Whether the posting has been finalized (activated).", NOT_NULL),
    ("archived", _B, "Whether the posting is archived.", NOT_NULL),
    ("test_posting", _B, "Whether this is a test posting.", NOT_NULL),
    ("language", _S, "BCP-47 language code."),
    ("interviewer_name", _S, "Display name of the AI interviewer."),
    ("workflow_step_types", _L, "Types of the posting's workflow steps, in workflow order.", NOT_NULL),
    ("deadline", _TS, "Deadline of the posting (UTC)."),
    ("created_at", _TS, "When the posting was created (UTC)."),
    ("updated_at", _TS, "When the posting was last updated (UTC)."),
    ("metadata", _S, "Key-value pairs (strings) stored with the posting, as JSON.", JSON),
    ("extra", _S, _UNKNOWN, JSON),
    ("listed_at", _TS, "When the posting was last seen in the API's listing (UTC).", NOT_NULL),
    ("vanished_at", _TS, "When the pipeline first found the posting missing from the API's listing (deleted in "
                         "HeyMilo); null while it is listed. The row keeps its last listed state."),
)
RAW_RECORDS = spec("raw_candidates", "The lake's copy of every candidate record exactly as the API sent it "
                                     "(lake/raw/candidates; not loaded into DuckDB): enough to rebuild the tables.",
    ("interview_id", _S, "The candidate's interview_id.", NOT_NULL),
    ("posting_id", _S, "ID of the posting the candidate belongs to.", NOT_NULL),
    ("created_date", _D, "The candidate's created_date (partition day).", NOT_NULL),
    ("record", _S, "The candidate object as the API returned it (JSON: its keys, order and numbers as sent).",
     NOT_NULL, JSON),
)
# fmt: on
LAKE_TABLES = (CANDIDATES, WORKFLOW_STEPS, RAW_RECORDS, POSTINGS)


def tables_markdown(tables: Iterable[TableSpec] = LAKE_TABLES) -> str:
    """docs/tables.md: every table with its columns, types and descriptions (add warehouse.TABLES for all)."""
    return "# Tables\n\n" + "\n".join(t.markdown() for t in tables)


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
    return micros.cast(_I64).cast(TIMESTAMP)


def utc_days(seconds: pa.Array) -> pa.Array:
    """Epoch seconds -> date32, exactly ``seconds // 86400`` like windows.day_of, which chose the fetch window."""
    days = pc.floor(pc.divide(seconds, float(SECONDS_PER_DAY)))
    # The division rounds, so a hair before midnight it can reach the next day: step back then.
    days = pc.if_else(pc.greater(pc.multiply(days, float(SECONDS_PER_DAY)), seconds), pc.subtract(days, 1.0), days)
    return days.cast(pa.int32()).cast(_D)


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
    step = pa.struct(step_type | {"last_updated_at": _F})  # epoch seconds, as sent
    workflow = pa.struct([("steps", pa.list_(step)), ("all_complete", _B), ("last_activity_at", _F)])
    sections = [(s, pa.struct([(f, column(_section_column(s, f)).type) for f in fs])) for s, fs in _SECTIONS.items()]
    top = [(name, column(name).type) for name in _AS_IS] + [("object", _S), ("created_at", _F), ("interviewed_at", _F)]
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
        created_date = pc.fill_null(created_date, pa.scalar(partition_day, _D))
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
    lengths = pc.fill_null(pc.list_value_length(step_lists), 0).cast(_I64)
    flat = pc.list_flatten(step_lists)
    owner = pc.list_parent_indices(step_lists)
    columns = {name: array.take(owner) for name, array in keys.items()} | {"step_order": _field(flat, "order")}
    columns |= {name: _field(flat, name) for name in ("step_id", "status", "started", "completed")}
    columns["knocked_out"] = pc.fill_null(_field(flat, "knocked_out"), False)
    columns["last_updated_at"] = timestamps(_field(flat, "last_updated_at"))
    columns["extra"] = pa.array(step_extra, _S)
    table = pa.Table.from_pydict(columns, schema=WORKFLOW_STEPS.schema)

    # Candidate i owns steps offsets[i]:offsets[i + 1] (the steps are in candidate order).
    offsets = pa.concat_arrays([pa.array([0], _I64), pc.cumulative_sum(lengths)])
    starts, ends = offsets.slice(0, len(lengths)), offsets.slice(1)

    def count(flags: pa.ChunkedArray) -> pa.Array:
        # A candidate's steps are contiguous, so its count is the difference of a running sum at its bounds.
        running = pa.concat_arrays([pa.array([0], _I64), pc.cumulative_sum(flags.cast(_I64)).combine_chunks()])
        return pc.if_else(has_workflow, pc.subtract(running.take(ends), running.take(starts)), None).cast(_I32)

    # Sorted by (candidate, completed, order), a candidate's steps stay at its offsets with the pending step of
    # lowest order first; if even that first step is completed, all are.
    by = [("owner", "ascending"), ("completed", "ascending"), ("step_order", "ascending")]
    ordered = table.take(pc.sort_indices(table.append_column("owner", owner), by))
    first = pc.if_else(pc.greater(lengths, 0), starts, None)
    pending = pc.invert(ordered["completed"].take(first))
    summary = {
        "workflow_all_complete": _field(workflow, "all_complete"),
        "workflow_last_activity_at": timestamps(_field(workflow, "last_activity_at")),
        "workflow_steps_total": pc.if_else(has_workflow, lengths, None).cast(_I32),
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
        columns[name] = timestamps(pa.array([getattr(p, name) for p in postings], _F))
    columns["metadata"] = [None if p.metadata is None else _dumps(p.metadata) for p in postings]
    columns["extra"] = [_dumps(e) if (e := _model_extras(p)) else None for p in postings]
    columns["listed_at"] = pa.array([listed_at.astimezone(UTC)] * len(postings), TIMESTAMP)
    columns["vanished_at"] = pa.nulls(len(postings), TIMESTAMP)
    return pa.Table.from_pydict(columns, schema=POSTINGS.schema)
