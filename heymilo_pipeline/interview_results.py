"""Interview results (getInterviewData) -> what is stored of them -> Arrow tables of ``tables.RESULT_TABLES``.

Which candidates need results, and when again: finished candidates (``FINISHED``) whose state (``state_sql``)
differs from the one their stored results were fetched for; the stores answer it (``Store.results_due``).

What is stored: ``scrub`` removes what must never be kept (signed URLs, the integrity service's raw payloads with
their video frames), removes transcripts unless ``HEYMILO_STORE_TRANSCRIPTS`` is on, and applies ``HEYMILO_PII`` to
the personal fields (names, emails, answers, the AI's reasoning about the candidate, transcript text).
The scrubbed record is the raw record the lake keeps, and ``flatten`` builds every table from it alone, so the
tables can be rebuilt without the API and never hold more than the raw record does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pydantic

from heymilo_pipeline.api import models as m
from heymilo_pipeline.flatten import json_text
from heymilo_pipeline.privacy import Scrubber
from heymilo_pipeline.tables import (
    ELIGIBILITY_CRITERIA,
    FORM_QUESTIONS,
    INTEGRITY_SIGNALS,
    INTERVIEW_RESULTS,
    RAW_RESULTS,
    RESULT_TABLES,
    RESUME_CRITERIA,
    SCORECARD,
    SMS_CRITERIA,
    TRANSCRIPTS,
    TableSpec,
)

# Statuses whose results are final enough to fetch: every step has ended and the score is computed. ``evaluating``
# waits for its score (its results would be fetched again a moment later); pending and in_progress are not ready.
FINISHED = frozenset({"completed", "shortlisted", "dismissed", "knocked_out"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def state_sql(alias: str) -> str:
    """The candidate's state as SQL over the ``candidates`` row ``alias``: status, score, interviewed_at and the
    workflow's last activity, one text. Results are fetched for a state; when it changes, they are fetched again.
    Both stores compute it with the same expression, so it never depends on how a record was parsed."""

    def part(expression: str) -> str:
        return f"coalesce(CAST({expression} AS VARCHAR), '-')"

    return (
        f"concat_ws('|', {alias}.status, {part(f'{alias}.score')}, {part(f'epoch_us({alias}.interviewed_at)')}, "
        f"{part(f'epoch_us({alias}.workflow_last_activity_at)')})"
    )


FINISHED_SQL = "(" + ", ".join(f"'{status}'" for status in sorted(FINISHED)) + ")"


# --- what is stored -------------------------------------------------------------------------------------------


def _at(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _copy_at(record: dict[str, Any], *path: str) -> dict[str, Any] | None:
    """record[path] as a copy put in place (the caller's nested dicts stay as they were), or None."""
    node = record
    for key in path:
        child = node.get(key)
        if not isinstance(child, dict):
            return None
        node[key] = child = dict(child)
        node = child
    return node


def _each(node: dict[str, Any], key: str, change: Callable[[dict[str, Any]], None]) -> None:
    items = node.get(key)
    if isinstance(items, list):
        node[key] = copies = [dict(item) if isinstance(item, dict) else item for item in items]
        for item in copies:
            if isinstance(item, dict):
                change(item)


def scrub(raw: Mapping[str, Any], scrubber: Scrubber, transcripts: bool) -> dict[str, Any]:
    """A copy of one ``data`` object of getInterviewData holding only what may be stored (see the module doc)."""
    record = dict(raw)
    personal = scrubber.value

    def text(node: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if key in node:
                node[key] = personal(node[key])

    def texts(node: dict[str, Any], key: str) -> None:
        if isinstance(node.get(key), list):
            node[key] = [] if scrubber.mode == "drop" else [personal(v) for v in node[key]]

    def transcript(node: dict[str, Any], key: str, *fields: str) -> None:
        if key not in node:
            return
        if not transcripts:
            node[key] = []
        else:
            _each(node, key, lambda turn: text(turn, *fields))

    text(record, "name", "email")
    if (web := _copy_at(record, "web_interview")) is not None:
        web["audio_recording_url"] = web["video_recording_url"] = None
        transcript(web, "transcript", "text")

        def question(q: dict[str, Any]) -> None:
            text(q, "evaluation_summary")
            transcript(q, "transcript", "text")

        _each(web, "scorecard", question)
    if (resume := _copy_at(record, "resume")) is not None:
        resume["resume_url"] = None
        _each(resume, "score_criteria", lambda c: texts(c, "reasons"))
        _each(resume, "eligibility_criteria", lambda c: texts(c, "reasons"))
    if (sms := _copy_at(record, "sms")) is not None:
        _each(sms, "criteria", lambda c: texts(c, "reasons"))
        transcript(sms, "transcript", "text")
    if (form := _copy_at(record, "form")) is not None:
        _each(form, "questions", lambda q: text(q, "candidate_answer"))
    if (signals := _copy_at(record, "cheat_detection", "web_interview")) is not None:
        # The integrity service's raw payloads hold video frames and timelines: never kept.
        signals["interview_integrity"] = signals["integrity_analysis_v2"] = None
        # What the candidate said, quoted as evidence, is a transcript by another name.
        for name, key, quote in (
            ("cheat_detection_result", "cheating_instances", "transcript_references"),
            ("llm_detection_result", "llm_detected_segments", "segment_text"),
        ):
            if (detector := _copy_at(signals, name)) is not None:
                _each(detector, key, lambda item, quote=quote: _quote(item, quote, transcripts, personal))
        delays = _copy_at(signals, "unusual_delay_detection")
        # Free-form items quoting questions and answers: kept only where transcripts would be, as they are.
        quoting = not transcripts or scrubber.mode != "keep"
        if delays is not None and isinstance(delays.get("unusual_delay_instances"), list) and quoting:
            delays["unusual_delay_instances"] = [{} for _ in delays["unusual_delay_instances"]]
        if (tabs := _copy_at(signals, "tab_switch_detection")) is not None:
            tabs["events"] = []
    return record


def _quote(item: dict[str, Any], key: str, transcripts: bool, personal: Callable[[Any], Any]) -> None:
    if not transcripts:
        item.pop(key, None)
    elif isinstance(item.get(key), str):
        item[key] = personal(item[key])
    elif isinstance(item.get(key), list):
        item[key] = [{**ref, "text": personal(ref.get("text"))} if isinstance(ref, dict) else ref for ref in item[key]]


# --- tables -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One interview's scrubbed results, as the JSON text the lake keeps, and where they belong.

    Text, not the parsed record: a results run holds thousands of these while it fetches and writes, and the text
    takes a quarter of the memory (2,000 simulated results: 5.5 MiB against 22 MiB as dicts)."""

    record: str
    interview_id: str
    posting_id: str
    created_date: date
    fetched_at: float
    candidate_state: str

    @classmethod
    def of(
        cls, record: Mapping[str, Any], posting_id: str, created_date: date, fetched_at: float, candidate_state: str
    ) -> StoredResult:
        """From a scrubbed record (``scrub``)."""
        return cls(json_text(record), str(record["interview_id"]), posting_id, created_date, fetched_at,
                   candidate_state)  # fmt: skip


def stored_results(raw: pa.Table) -> list[StoredResult]:
    """Rows of RAW_RESULTS back as the records they were made from (what a rebuild flattens again)."""
    return [
        StoredResult(row["record"], row["interview_id"], row["posting_id"], row["created_date"],
                     row["fetched_at"].timestamp(), row["candidate_state"])
        for row in raw.to_pylist()
    ]  # fmt: skip


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else _EPOCH + timedelta(microseconds=round(seconds * 1_000_000))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _unknown(model: m.APIModel, prefix: str = "") -> dict[str, Any]:
    """Fields the models do not declare, by dotted path, in the record and its sections (not inside lists)."""
    found = {f"{prefix}{k}": v for k, v in model.unknown_fields().items()}
    for name in type(model).model_fields:
        child = getattr(model, name)
        if isinstance(child, m.APIModel):
            found |= _unknown(child, f"{prefix}{name}.")
    return found


def _weighted(scorecard: Sequence[m.ScorecardQuestion]) -> float | None:
    scored = [(q.score, q.score_weight) for q in scorecard if not q.not_scored and q.score is not None]
    total = sum(w for _, w in scored if w)
    return round(sum(s * w for s, w in scored if w) / total, 3) if total else None


# signal: its detector in cheat_detection.web_interview, and the detector's verdict, confidence and instances
_DETECTORS = {
    "transcript_cheating": ("cheat_detection_result", "cheating_detected", "cheating_confidence", "cheating_instances"),
    "llm_generated": (
        "llm_detection_result",
        "llm_generated_detected",
        "detection_confidence",
        "llm_detected_segments",
    ),
    "unusual_delay": ("unusual_delay_detection", "delay_detected", "delay_confidence", "unusual_delay_instances"),
}


def _signals(cheat: m.CheatDetection) -> list[dict[str, Any]]:
    web, resume = cheat.web_interview or {}, cheat.resume or {}
    out = []
    for signal, (name, flag, confidence, items) in _DETECTORS.items():
        detector = web.get(name)
        if isinstance(detector, dict):
            found = detector.get(items)
            detected = detector.get(flag)
            out.append(
                {
                    "signal": signal,
                    "detected": detected if isinstance(detected, bool) else None,
                    "confidence": _number(detector.get(confidence)),
                    "events": len(found) if isinstance(found, list) else None,
                }
            )
    tabs = web.get("tab_switch_detection")
    if isinstance(tabs, dict):
        count = tabs.get("total_count")
        count = count if isinstance(count, int) and not isinstance(count, bool) else None
        out.append(
            {
                "signal": "tab_switching",
                "detected": None if count is None else count > 0,
                "confidence": None,
                "events": count,
            }
        )
    documents = _at(resume, "gpt_detection", "documents")
    if isinstance(documents, list):
        probabilities = [
            p
            for d in documents
            if isinstance(d, dict)
            for p in (_number(d.get("completely_generated_prob")), _number(d.get("average_generated_prob")))
            if p is not None
        ]
        out.append(
            {
                "signal": "resume_ai_generated",
                "detected": None,
                "confidence": max(probabilities) if probabilities else None,
                "events": len(documents),
            }
        )
    return out


def flatten(results: Iterable[StoredResult]) -> dict[str, pa.Table]:
    """Every results table (and the raw one) from scrubbed records: ``{table name: Arrow table}``."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _SPECS}
    for stored in results:
        try:
            data = m.InterviewDataResponse.model_validate(json.loads(stored.record))
        except pydantic.ValidationError as exc:  # classify() let it in: a bug, not the API
            raise ValueError(f"interview {stored.interview_id}: results not in the documented shape: {exc}") from None
        keys = {"interview_id": data.interview_id, "posting_id": stored.posting_id, "created_date": stored.created_date}
        fetched = _ts(stored.fetched_at)
        rows[RAW_RESULTS.name].append(
            {
                **keys,
                "fetched_at": fetched,
                "candidate_state": stored.candidate_state,
                "record": stored.record,
            }
        )
        web, resume, sms, form, cheat = data.web_interview, data.resume, data.sms, data.form, data.cheat_detection
        unknown = _unknown(data)
        rows[INTERVIEW_RESULTS.name].append(
            {
                **keys,
                "fetched_at": fetched,
                "candidate_state": stored.candidate_state,
                "status": data.status or "unknown",
                "score": data.score,
                "web_interview_match_score": web and web.match_score,
                "web_interview_speech_score": web and web.speech_score,
                "web_interview_questions": web and len(web.scorecard),
                "web_interview_weighted_score": web and _weighted(web.scorecard),
                "web_interview_highlights": web and web.highlights,
                "web_interview_lowlights": web and web.lowlights,
                "web_interview_tags": web and web.tags,
                "resume_overall_score": resume and resume.overall_score,
                "resume_is_eligible": resume and resume.is_eligible,
                "sms_is_eligible": sms and sms.is_eligible,
                "sms_confidence": sms and sms.confidence,
                "sms_messages_sent": sms and sms.messages_sent,
                "sms_messages_received": sms and sms.messages_received,
                "form_overall_status": form and form.overall_status,
                "integrity_enabled": cheat and cheat.enabled,
                "integrity_overall_ranking": cheat and cheat.overall_ranking,
                "integrity_overall_confidence": cheat and cheat.overall_confidence,
                "integrity_threshold": cheat and cheat.threshold,
                "integrity_types": cheat and cheat.types,
                "extra": json_text(unknown) if unknown else None,
            }
        )
        # The child tables' columns are their items' field names, keys aside: one row per item.
        children = [
            (SCORECARD, web and web.scorecard),
            (RESUME_CRITERIA, resume and resume.score_criteria),
            (ELIGIBILITY_CRITERIA, resume and resume.eligibility_criteria),
            (SMS_CRITERIA, sms and sms.criteria),
            (FORM_QUESTIONS, form and form.questions),
        ]
        for spec, items in children:
            fields = [name for name in spec.names if name not in keys]
            rows[spec.name] += [{**keys, **{f: getattr(item, f) for f in fields}} for item in items or ()]
        if web is not None:
            rows[TRANSCRIPTS.name] += [
                {**keys, "source": "web_interview", "turn": n, "speaker": t.speaker, "text": t.text,
                 "seconds": t.timestamp, "sent_at": None}
                for n, t in enumerate(web.transcript, start=1)
            ]  # fmt: skip
        if sms is not None:
            rows[TRANSCRIPTS.name] += [
                {**keys, "source": "sms", "turn": n, "speaker": t.role, "text": t.text, "seconds": None,
                 "sent_at": _ts(t.timestamp)}
                for n, t in enumerate(sms.transcript, start=1)
            ]  # fmt: skip
        if cheat is not None:
            rows[INTEGRITY_SIGNALS.name] += [{**keys, **signal} for signal in _signals(cheat)]
    return {name: pa.Table.from_pylist(found, schema=_SPECS[name].schema) for name, found in rows.items()}


_SPECS: dict[str, TableSpec] = {t.name: t for t in (*RESULT_TABLES, RAW_RESULTS)}


# --- rules ----------------------------------------------------------------------------------------------------

# Every range the spec documents, per table and column (inclusive). A value outside is an API fault: its posting-day
# is not published (blocking), and the warehouse check finds any that got in.
RANGES: tuple[tuple[str, str, float, float], ...] = (
    (INTERVIEW_RESULTS.name, "score", 0, 100),
    (INTERVIEW_RESULTS.name, "web_interview_match_score", 0, 100),
    (INTERVIEW_RESULTS.name, "web_interview_speech_score", 0, 5),
    (INTERVIEW_RESULTS.name, "resume_overall_score", 0, 100),
    (INTERVIEW_RESULTS.name, "sms_confidence", 0, 1),
    (INTERVIEW_RESULTS.name, "integrity_overall_ranking", 1, 5),
    (INTERVIEW_RESULTS.name, "integrity_overall_confidence", 0, 1),
    (INTERVIEW_RESULTS.name, "integrity_threshold", 0, 100),
    (SCORECARD.name, "score", 1, 10),
    (SCORECARD.name, "score_weight", 1, 10),
    (RESUME_CRITERIA.name, "score", 0, 10),
    (RESUME_CRITERIA.name, "confidence", 0, 1),
    (ELIGIBILITY_CRITERIA.name, "confidence", 0, 1),
    (SMS_CRITERIA.name, "confidence", 0, 1),
    (INTEGRITY_SIGNALS.name, "confidence", 0, 1),
)


def out_of_range_sql(limit: int) -> str:
    """Every value outside its documented range (NaN included), over tables named as ``RESULT_TABLES``: rows of
    (table, column, value, low, high, posting_id, created_date, interview_id), at most ``limit`` per column."""
    parts = [
        f"(SELECT '{table}' AS table_name, '{column}' AS column_name, \"{column}\" AS value, {low} AS low, "
        f'{high} AS high, posting_id, created_date, interview_id FROM "{table}" '
        f'WHERE NOT ("{column}" BETWEEN {low} AND {high}) OR isnan("{column}") ORDER BY ALL LIMIT {limit})'
        for table, column, low, high in RANGES
    ]
    return " UNION ALL ".join(parts)


def doubled_keys_sql(limit: int) -> str:
    """Keys held by more than one row, per results table: (table, key, rows, posting_id, created_date,
    interview_id). A child table's key comes from the API (question and criterion ids): the spec does not promise
    they are unique within an interview."""
    parts = []
    for spec in RESULT_TABLES:
        key = ", ".join(f'"{k}"' for k in spec.primary_key)
        parts.append(
            f"(SELECT '{spec.name}' AS table_name, concat_ws(' / ', {key}) AS key, count(*) AS n, "
            f"any_value(posting_id) AS posting_id, any_value(created_date) AS created_date, "
            f'any_value(interview_id) AS interview_id FROM "{spec.name}" GROUP BY {key} HAVING count(*) > 1 '
            f"ORDER BY ALL LIMIT {limit})"
        )
    return " UNION ALL ".join(parts)
