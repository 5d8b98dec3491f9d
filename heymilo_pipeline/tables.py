"""Every table the pipeline writes, declared once: columns, types, descriptions, keys.

Each column is declared once (name, Arrow type, description); the Arrow schema (description in the field
metadata), the DuckDB DDL and comments, Dagster's column list and docs/tables.md all derive from it.
Descriptions follow the field descriptions of HeyMilo's OpenAPI document. Flattening, the lake, the
warehouse and the docs import these; nothing else declares a column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pyarrow as pa

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
    # Whether DuckDB enforces the key with an index. The results tables' keys are not indexed: an index is held
    # whole in memory by every write that touches the table, so a results run's memory grew with the store
    # (bench section 9). Their keys are checked before every write instead (a posting-day with a key twice is not
    # stored), and audited by the check results_unique_and_referenced; one process writes a DuckDB file at a time.
    indexed: bool = True

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property
    def schema(self) -> pa.Schema:
        return pa.schema([c.field for c in self.columns], metadata={DESCRIPTION: self.description.encode()})

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def create_sql(self, primary_key: bool = True) -> str:
        """CREATE TABLE IF NOT EXISTS; ``primary_key`` False for engines without keys (DuckLake)."""
        lines = [f'"{c.name}" {c.sql_type}{"" if c.nullable else " NOT NULL"}' for c in self.columns]
        if self.primary_key and self.indexed and primary_key:
            lines.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in self.primary_key) + ")")
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n    ' + ",\n    ".join(lines) + "\n)"

    def comment_sql(self) -> list[str]:
        table = [f'COMMENT ON TABLE "{self.name}" IS {_text(self.description)}']
        return table + [f'COMMENT ON COLUMN "{self.name}"."{c.name}" IS {_text(c.description)}' for c in self.columns]

    def changed_comments(self, existing: Mapping[str | None, str | None]) -> list[str]:
        """The comment statements whose text differs from ``existing`` (column name, or None for the table, to
        its comment now). Each is a write to the catalog: an unchanged schema writes nothing."""
        wanted = [(None, self.description)] + [(c.name, c.description) for c in self.columns]
        return [sql for (name, text), sql in zip(wanted, self.comment_sql(), strict=True) if existing.get(name) != text]

    def dagster_columns(self) -> list[tuple[str, str, str]]:
        """(name, type, description) per column, for a Dagster ``TableSchema``."""
        return [(c.name, c.sql_type, c.description) for c in self.columns]

    def markdown(self) -> str:
        unique = "unique across the table" + ("" if self.indexed else "; checked before each write, not indexed")
        key = [f"Key: {', '.join(f'`{k}`' for k in self.primary_key)} ({unique}).", ""]
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


def spec(
    name: str, description: str, *columns: tuple[Any, ...], primary_key: tuple[str, ...] = (), indexed: bool = True
) -> TableSpec:
    """A TableSpec from compact rows: (name, type, description[, NOT_NULL | JSON])."""
    cols = [Column(n, t, d, nullable=NOT_NULL not in flag, json=JSON in flag) for n, t, d, *flag in columns]
    return TableSpec(name, description, tuple(cols), primary_key, indexed)


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
RAW_RECORDS = spec("raw_candidates", "Every candidate record exactly as the API sent it, enough to rebuild the "
                                     "tables: the lake's Parquet under lake/raw/candidates (not in the DuckDB file), "
                                     "or this table of the shared tables (production profile).",
    ("interview_id", _S, "The candidate's interview_id.", NOT_NULL),
    ("posting_id", _S, "ID of the posting the candidate belongs to.", NOT_NULL),
    ("created_date", _D, "The candidate's created_date (partition day).", NOT_NULL),
    ("record", _S, "The candidate object as the API returned it (JSON: its keys, order and numbers as sent).",
     NOT_NULL, JSON),
)
# fmt: on

# fmt: off
PARTITION_LOADS = spec(
    "partition_loads",
    "One row per posting x UTC day loaded into the warehouse: what was loaded, when and by which run.",
    ("posting_id", _S, "The posting.", NOT_NULL),
    ("partition_date", _D, "The UTC day (candidates.created_date).", NOT_NULL),
    ("rows", _I64, "Candidates loaded for the day (0: fetched, and there were none).", NOT_NULL),
    ("loaded_at", _TS, "When the day was last loaded (UTC).", NOT_NULL),
    ("run_id", _S, "The run (e.g. Dagster run id) that loaded it."),
    primary_key=("posting_id", "partition_date"),
)
# fmt: on

# --- interview results (getInterviewData) ---------------------------------------------------------------
# Every table is keyed by interview and carries the posting and the candidate's created_date, the partition its
# candidate belongs to, so a posting-day's results are replaced together with its candidates.

_RESULT_KEYS = (
    ("interview_id", _S, "The candidate's interview_id.", NOT_NULL),
    ("posting_id", _S, "ID of the posting the candidate belongs to.", NOT_NULL),
    ("created_date", _D, "The candidate's created_date (partition day).", NOT_NULL),
)
_PERSONAL = "personal data; null or a keyed hash under HEYMILO_PII=drop|hash"

# fmt: off
INTERVIEW_RESULTS = spec(
    "interview_results",
    "One row per interview whose results HeyMilo has ready (getInterviewData): scores, verdicts and the integrity "
    "ranking, as of the candidate state they were fetched for.",
    *_RESULT_KEYS,
    ("fetched_at", _TS, "When the results were fetched (UTC).", NOT_NULL),
    ("candidate_state", _S, "The candidate's listing state the results were fetched for (status, score, "
                            "interviewed_at, last activity); a change of it fetches the results again.", NOT_NULL),
    ("status", _S, "The candidate's status when the results were fetched.", NOT_NULL),
    ("score", _F, "Overall match score (0-100) when the results were fetched."),
    ("web_interview_match_score", _F, "Web interview: overall match score (0-100)."),
    ("web_interview_speech_score", _F, "Web interview: communication and speech score (0.0-5.0)."),
    ("web_interview_questions", _I32, "Web interview: questions in the scorecard (null without a web interview)."),
    ("web_interview_weighted_score", _F, "Web interview: the scorecard's scores (1-10) averaged by their weights, "
                                         "informational questions left out."),
    ("web_interview_highlights", _L, "Web interview: candidate strengths identified by the AI."),
    ("web_interview_lowlights", _L, "Web interview: areas for improvement."),
    ("web_interview_tags", _L, "Web interview: tags extracted from the interview."),
    ("resume_overall_score", _F, "Resume: weighted score across all criteria (0.0-100.0)."),
    ("resume_is_eligible", _B, "Resume: whether the candidate meets all eligibility criteria."),
    ("sms_is_eligible", _B, "SMS screening: the overall eligibility verdict."),
    ("sms_confidence", _F, "SMS screening: the AI's confidence in the verdict (0.0-1.0)."),
    ("sms_messages_sent", _I64, "SMS screening: messages sent by the agent."),
    ("sms_messages_received", _I64, "SMS screening: messages received from the candidate."),
    ("form_overall_status", _S, "Form screening: passed, failed or pending."),
    ("integrity_enabled", _B, "Whether cheat detection is enabled for the posting; null when not configured."),
    ("integrity_overall_ranking", _F, "Integrity: severity ranking, 1 (no cheating) to 5 (highly detected)."),
    ("integrity_overall_confidence", _F, "Integrity: aggregate confidence across all signals (0.0-1.0)."),
    ("integrity_threshold", _F, "Integrity: the posting's detection threshold (0-100)."),
    ("integrity_types", _L, "Integrity: the detection types enabled for the posting."),
    ("extra", _S, "Fields of the results the pipeline's models do not know (yet), as JSON keyed by dotted path; "
                  "null when there are none.", JSON),
    primary_key=("interview_id",),
    indexed=False,
)
SCORECARD = spec("interview_scorecard", "One row per web-interview question of an interview's scorecard.",
    *_RESULT_KEYS,
    ("question_id", _S, "Unique question identifier.", NOT_NULL),
    ("rank", _I64, "Order in which the question was asked (1-based)."),
    ("question_text", _S, "The question as asked to the candidate."),
    ("score", _F, "Score (1-10): 1 weak, 10 exceptional; null when not_scored."),
    ("score_weight", _F, "Importance weight of the question (1-10)."),
    ("not_scored", _B, "True when the question was informational only.", NOT_NULL),
    ("evaluation_summary", _S, f"The AI's summary of the candidate's answer ({_PERSONAL})."),
    ("evaluation_criteria", _S, "Criteria used to evaluate the question."),
    primary_key=("interview_id", "question_id"),
    indexed=False,
)
RESUME_CRITERIA = spec("interview_resume_criteria", "One row per resume scoring criterion of an interview.",
    *_RESULT_KEYS,
    ("criteria_id", _S, "Unique criterion identifier.", NOT_NULL),
    ("criteria_text", _S, "The criterion as defined by the recruiter."),
    ("score", _F, "Score (0.0-10.0)."),
    ("confidence", _F, "The AI's confidence (0.0-1.0)."),
    ("reasons", _L, f"The AI's reasoning for the score ({_PERSONAL})."),
    primary_key=("interview_id", "criteria_id"),
    indexed=False,
)
ELIGIBILITY_CRITERIA = spec("interview_eligibility_criteria",
    "One row per resume eligibility criterion of an interview.",
    *_RESULT_KEYS,
    ("criteria_id", _S, "Unique criterion identifier.", NOT_NULL),
    ("criteria_text", _S, "The criterion description."),
    ("passed", _B, "Whether the candidate meets the criterion."),
    ("confidence", _F, "The AI's confidence (0.0-1.0)."),
    ("reasons", _L, f"The AI's reasoning for the pass or fail ({_PERSONAL})."),
    primary_key=("interview_id", "criteria_id"),
    indexed=False,
)
SMS_CRITERIA = spec("interview_sms_criteria", "One row per SMS screening criterion of an interview.",
    *_RESULT_KEYS,
    ("criteria_id", _S, "Unique criterion identifier.", NOT_NULL),
    ("criteria_text", _S, "The question asked by SMS."),
    ("passed", _B, "Whether the candidate passed the criterion."),
    ("is_dealbreaker", _B, "Whether failing the criterion disqualifies the candidate.", NOT_NULL),
    ("confidence", _F, "The AI's confidence (0.0-1.0)."),
    ("reasons", _L, f"The AI's reasoning ({_PERSONAL})."),
    primary_key=("interview_id", "criteria_id"),
    indexed=False,
)
FORM_QUESTIONS = spec("interview_form_questions", "One row per form question an interview's candidate answered.",
    *_RESULT_KEYS,
    ("question_id", _S, "Unique question identifier.", NOT_NULL),
    ("question_text", _S, "The question displayed on the form."),
    ("question_type", _S, "Form field type: textarea, number, multiple-choice, file-upload, slider or date."),
    ("is_knockout", _B, "Whether the question is a knockout (pass/fail) question."),
    ("passed", _B, "Whether the candidate's answer passed validation."),
    ("candidate_answer", _S, f"The candidate's answer ({_PERSONAL})."),
    ("expected_answer", _S, "The expected answer (knockout questions)."),
    primary_key=("interview_id", "question_id"),
    indexed=False,
)
INTEGRITY_SIGNALS = spec("interview_integrity_signals",
    "One row per integrity signal of an interview's cheat detection: transcript_cheating, llm_generated, "
    "unusual_delay and tab_switching (web interview), resume_ai_generated (resume).",
    *_RESULT_KEYS,
    ("signal", _S, "The detector.", NOT_NULL),
    ("detected", _B, "Whether the detector flagged the interview (null when it gives no verdict)."),
    ("confidence", _F, "The detector's confidence or probability (0.0-1.0)."),
    ("events", _I64, "Instances, segments or events the detector reported."),
    primary_key=("interview_id", "signal"),
    indexed=False,
)
TRANSCRIPTS = spec("interview_transcripts",
    "One row per turn of an interview's transcripts (web interview and SMS); stored only when "
    "HEYMILO_STORE_TRANSCRIPTS is on.",
    *_RESULT_KEYS,
    ("source", _S, "web_interview or sms.", NOT_NULL),
    ("turn", _I64, "Position of the turn in its transcript (1-based).", NOT_NULL),
    ("speaker", _S, "Interviewer, Candidate or System (web interview); agent or candidate (SMS).", NOT_NULL),
    ("text", _S, f"What was said or written ({_PERSONAL})."),
    ("seconds", _F, "Web interview: seconds from the start of the interview."),
    ("sent_at", _TS, "SMS: when the message was sent (UTC)."),
    primary_key=("interview_id", "source", "turn"),
    indexed=False,
)
RAW_RESULTS = spec("raw_interview_results",
    "Every interview's results as the API sent them (signed URLs removed; personal data and transcripts as the "
    "settings say), enough to rebuild the results tables: the lake's Parquet under lake/raw/results, or this table "
    "of the shared tables.",
    *_RESULT_KEYS,
    ("fetched_at", _TS, "When the results were fetched (UTC).", NOT_NULL),
    ("candidate_state", _S, "The candidate's listing state the results were fetched for.", NOT_NULL),
    ("record", _S, "The results object (data) as the API returned it, scrubbed (JSON).", NOT_NULL, JSON),
)
# fmt: on

RESULT_TABLES = (INTERVIEW_RESULTS, SCORECARD, RESUME_CRITERIA, ELIGIBILITY_CRITERIA, SMS_CRITERIA, FORM_QUESTIONS)
RESULT_TABLES += (INTEGRITY_SIGNALS, TRANSCRIPTS)

WAREHOUSE_TABLES = (CANDIDATES, WORKFLOW_STEPS, POSTINGS, PARTITION_LOADS, *RESULT_TABLES)  # DuckDB
