"""Validated API records -> Arrow tables, and the one declaration of every table's columns.

Each column is declared once (name, Arrow type, description); the Arrow schema (description in the field
metadata), the DuckDB DDL and comments, Dagster's column list and docs/tables.md all derive from it.
Descriptions follow the field descriptions of HeyMilo's OpenAPI document.

Flattening is columnar: one C-level pass per attribute over the records, one ``pa.array`` per column;
workflow counts, the current step, days and timestamps are Arrow compute, not Python per record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from itertools import accumulate, chain
from operator import attrgetter, itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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
        head = [f"## `{self.name}`", "", self.description, "", "| column | type | | description |", "|---|---|---|---|"]
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
    ("data", _S, "Additional candidate data supplied at ingestion time, as JSON (keys sorted).", JSON),
    ("extra", _S, _UNKNOWN + " Unknown step fields are in candidate_workflow_steps.extra.", JSON),
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
    ("listed_at", _TS, "When the pipeline listed the postings (the snapshot this row belongs to, UTC).", NOT_NULL),
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


# Sorted keys make the text (so checksums) independent of the API's key order; Python ints have no
# width, so ids beyond 64 bits stay exact. The records came from JSON, so they cannot be circular.
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode


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


def _columns(models: Sequence[m.APIModel | None], names: Sequence[str]) -> list[list[Any]]:
    """The named fields of each model (None for a null model), as one list per field."""
    # A model keeps its field values in __dict__: itemgetter over those dicts runs in C (faster than attribute
    # access), and a dict of Nones stands in for a null model. One list per field, not a tuple per record:
    # millions of small tuples would trigger full GC passes.
    absent = dict.fromkeys(names)
    dicts = [absent if model is None else model.__dict__ for model in models]
    return [list(map(itemgetter(name), dicts)) for name in names]


def _unknown(models: Sequence[m.APIModel | None]) -> list[dict[str, Any] | None]:
    # __pydantic_extra__ directly: unknown_fields() copies, and almost no record has any
    return [None if model is None else model.__pydantic_extra__ for model in models]


def _extras(levels: Sequence[tuple[str, list[dict[str, Any] | None]]]) -> list[str | None]:
    """Per record, the unknown fields of all its levels as one JSON object keyed by dotted path."""
    found: dict[int, dict[str, Any]] = {}
    for prefix, extras in levels:
        for i in [i for i, e in enumerate(extras) if e]:  # nearly always none: no per-record Python work
            found.setdefault(i, {}).update({prefix + k: v for k, v in extras[i].items()})
    out: list[str | None] = [None] * len(levels[0][1])
    for i, fields in found.items():
        out[i] = _dumps(fields)
    return out


# The record's fields that are columns as they are, then those that need work.
_AS_IS = ("interview_id", "posting_id", "candidate_id", "name", "email", "status", "score", "interview_url")
_AS_IS += ("shortlisted", "dismissed")
_TOP = (*_AS_IS, "created_at", "interviewed_at", "workflow", "agent_summary", "metadata", "data")
# agent_summary attribute -> fields; the column is "<attribute>_<field>" unless the field is prefixed already
_SECTIONS = {
    "resume": ("resume_score", "is_eligible", "resume_link"),
    "web_interview": ("score", "highlights", "audio_recording_link", "video_recording_link"),
    "sms": ("is_eligible", "criteria_passed", "criteria_failed", "messages_sent"),
    "form": ("is_complete", "is_eligible", "questions_answered", "total_questions"),
}
_STEP = ("step_id", "order", "status", "started", "completed", "knocked_out", "last_updated_at")


def flatten(
    candidates: Sequence[m.CandidateResponse], *, partition_day: date | None = None
) -> tuple[pa.Table, pa.Table]:
    """(candidates, candidate_workflow_steps) Arrow tables with exactly the declared schemas.

    ``partition_day`` is the created_date of candidates whose created_at is null (the day they were
    fetched for); without it such a candidate is an error: it would belong to no partition.
    """
    if not candidates:
        return CANDIDATES.empty(), WORKFLOW_STEPS.empty()
    top = dict(zip(_TOP, _columns(candidates, _TOP), strict=True))
    created = pa.array(top["created_at"], _F)
    created_date = utc_days(created)
    if created_date.null_count:
        if partition_day is None:
            undated = [i for i, t in zip(top["interview_id"], top["created_at"], strict=True) if t is None]
            raise ValueError(f"candidates without created_at and no partition_day to file them under: {undated[:5]}")
        created_date = pc.fill_null(created_date, pa.scalar(partition_day, _D))
    keys = {"interview_id": pa.array(top["interview_id"], _S), "posting_id": pa.array(top["posting_id"], _S)}
    keys["created_date"] = created_date
    columns: dict[str, Any] = {name: top[name] for name in _AS_IS} | keys
    columns["created_at"] = timestamps(created)
    columns["interviewed_at"] = timestamps(pa.array(top["interviewed_at"], _F))
    steps, workflow_columns, workflow_extra = _workflows(top["workflow"], keys)
    columns |= workflow_columns

    sections = _columns(top["agent_summary"], list(_SECTIONS))
    levels = [
        ("", _unknown(candidates)),
        ("workflow.", workflow_extra),
        ("agent_summary.", _unknown(top["agent_summary"])),
    ]
    for (section, fields), models in zip(_SECTIONS.items(), sections, strict=True):
        levels.append((f"agent_summary.{section}.", _unknown(models)))
        for field, value in zip(fields, _columns(models, fields), strict=True):
            columns[field if field.startswith(section) else f"{section}_{field}"] = value
    columns["metadata"] = [None if v is None else _dumps(v) for v in top["metadata"]]
    columns["data"] = [None if v is None else _dumps(v) for v in top["data"]]
    columns["extra"] = _extras(levels)
    return pa.Table.from_pydict(columns, schema=CANDIDATES.schema), steps


def _workflows(
    workflows: list[m.CandidateWorkflow | None], keys: dict[str, pa.Array]
) -> tuple[pa.Table, dict[str, Any], list[dict[str, Any] | None]]:
    """The steps table, the candidates' workflow columns, and the workflows' unknown fields."""
    step_lists, all_complete, last_activity = _columns(workflows, ("steps", "all_complete", "last_activity_at"))
    sizes = [0 if s is None else len(s) for s in step_lists]
    flat = list(chain.from_iterable(s for s in step_lists if s))
    step = dict(zip(_STEP, _columns(flat, _STEP), strict=True))
    # Candidate i owns steps offsets[i]:offsets[i + 1]; as a list array, its parent indices name each step's owner.
    offsets = pa.array(accumulate(sizes, initial=0), _I64)
    owner = pc.list_parent_indices(pa.LargeListArray.from_arrays(offsets, pa.nulls(len(flat))))
    columns = {name: array.take(owner) for name, array in keys.items()} | {"step_order": step["order"]}
    columns |= {name: step[name] for name in ("step_id", "status", "started", "completed", "knocked_out")}
    columns["last_updated_at"] = timestamps(pa.array(step["last_updated_at"], _F))
    columns["extra"] = [_dumps(e) if e else None for e in _unknown(flat)]
    table = pa.Table.from_pydict(columns, schema=WORKFLOW_STEPS.schema)

    has_workflow = pa.array([s is not None for s in step_lists], _B)
    lengths, starts, ends = pa.array(sizes, _I64), offsets.slice(0, len(sizes)), offsets.slice(1)

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
        "workflow_all_complete": all_complete,
        "workflow_last_activity_at": timestamps(pa.array(last_activity, _F)),
        "workflow_steps_total": pc.if_else(has_workflow, lengths, None).cast(_I32),
        "workflow_steps_started": count(table["started"]),
        "workflow_steps_completed": count(table["completed"]),
        "workflow_steps_knocked_out": count(table["knocked_out"]),
        "workflow_current_step_id": pc.if_else(pending, ordered["step_id"].take(first), None),
        "workflow_current_step_order": pc.if_else(pending, ordered["step_order"].take(first), None),
    }
    return table, summary, _unknown(workflows)


def split_by_day(table: pa.Table) -> dict[date, pa.Table]:
    """Rows grouped by created_date: zero-copy slices of one stable sort, so row order is kept within a day."""
    if table["created_date"].null_count:
        raise ValueError(f"{table['created_date'].null_count} row(s) without created_date cannot be split by day")
    ordered = table.take(pc.sort_indices(table["created_date"]))
    out: dict[date, pa.Table] = {}
    offset = 0
    for entry in pc.value_counts(ordered["created_date"]).to_pylist():
        out[entry["values"]] = ordered.slice(offset, entry["counts"])
        offset += entry["counts"]
    return out


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
    return pa.Table.from_pydict(columns, schema=POSTINGS.schema)
