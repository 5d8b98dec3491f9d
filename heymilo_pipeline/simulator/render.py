"""The API view of one candidate at simulated time ``now``.

A candidate's whole life (when it starts each workflow step, how each step ends, when it is scored and
when a recruiter acts) is planned from an RNG seeded by (tenant seed, interview_id), independently of
``now``; the view then shows the part of that plan that has happened by ``now``. So the output is a pure
function of (seed, candidate, now), and as the clock advances old candidates change like on the real API.
"""

from __future__ import annotations

import math
import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .fakedata import (
    ATS_STAGES,
    CITIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    HIGHLIGHTS,
    LAST_NAMES,
    SENTIMENTS,
    SKILLS,
    SOURCES,
    digest,
    mix64,
)
from .postings import SUMMARY_KEY, StepDef

_HOUR = 3600.0
_DAY = 86400.0
# Probability that a candidate is knocked out by a step of that type.
_KNOCKOUT = {"resume": 0.08, "conversational_sms": 0.10, "form": 0.08, "web_interview": 0.03}
_ABANDON = 0.05  # starts a step and never finishes it
_NEVER_STARTS = 0.12  # stays pending forever
_STUCK_EVALUATING = 0.02
_RECRUITER_ACTS = 0.5
# Salts of the independent streams used by data-shape faults, so switching a fault on does not change
# any other value of the candidate.
_SALT_NULLS = 0x5EED_0001
_SALT_EXTRA = 0x5EED_0002


@dataclass(frozen=True, slots=True)
class DataShape:
    """Data-shape faults (see TenantSpec)."""

    null_objects_share: float = 0.0
    extra_fields: bool = False
    score_as_string: bool = False


@dataclass(frozen=True, slots=True)
class PostingContext:
    seed: int
    posting_id: str
    company_slug: str
    steps: tuple[StepDef, ...]
    shape: DataShape


@dataclass(slots=True)
class StepPlan:
    start: float
    end: float
    outcome: str  # completed | knocked_out | abandoned
    values: dict[str, Any]


@dataclass(slots=True)
class Plan:
    steps: list[StepPlan]
    done_at: float | None
    scored_at: float | None
    decided_at: float | None
    shortlisted: bool
    score: float
    interviewed_at: float | None
    candidate_id_null: bool
    url_null: bool
    metadata: dict[str, str] | None
    data: dict[str, Any] | None


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _delay(rng: random.Random, median_s: float, sigma: float, cap_s: float) -> float:
    return min(cap_s, median_s * math.exp(sigma * rng.gauss(0.0, 1.0)))


# random.randint/choice cost ~0.7 us each through _randbelow; rendering calls them a dozen times per
# candidate per page, so these float-based versions (uniform enough for fake data) are used instead.
def _randint(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


def _choice(rng: random.Random, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.random() * len(seq))]


def person(seed: int, number: int) -> tuple[str, str, str]:
    """(name, email, candidate_id) of a person; the same person shares them across postings."""
    h = mix64((seed << 32) + number + 0x9E3779B97F4A7C15)
    first = FIRST_NAMES[h % len(FIRST_NAMES)]
    last = LAST_NAMES[(h >> 16) % len(LAST_NAMES)]
    local = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
    local = local.replace("'", "").lower()
    if (h >> 32) % 3:
        local = f"{local}{(h >> 40) % 1000}"
    email = f"{local}@{EMAIL_DOMAINS[(h >> 24) % len(EMAIL_DOMAINS)]}"
    return f"{first} {last}", email, f"cand_{mix64(h):016x}"


def _step_values(rng: random.Random, step: StepDef, quality: float, knocked_out: bool) -> dict[str, Any]:
    if step.type == "resume":
        score = round(_clip(quality / 20 + rng.gauss(0, 0.5), 0, 5), 1)
        if knocked_out:
            score = min(score, round(step.config.get("min_score", 3.0) - 0.1, 1))
        return {"resume_score": max(0.0, score), "is_eligible": not knocked_out, "key": rng.getrandbits(64)}
    if step.type == "web_interview":
        score = round(_clip(quality + rng.gauss(0, 7), 0, 100), 1)
        if knocked_out:
            score = round(min(score, rng.uniform(5, 30)), 1)
        return {
            "score": score,
            "highlights": rng.sample(HIGHLIGHTS, _randint(rng, 1, 4)),
            "video": rng.random() < 0.85 and step.config.get("record_video", True),
        }
    if step.type == "conversational_sms":
        criteria = list(step.config.get("criteria", ()))
        n_failed = _randint(rng, 1, 2) if knocked_out else (1 if rng.random() < 0.15 else 0)
        failed = rng.sample(criteria, min(n_failed, len(criteria)))
        return {
            "passed": [c for c in criteria if c not in failed],
            "failed": failed,
            "messages": _randint(rng, 3, 18),
        }
    total = int(step.config.get("question_count", 7))
    return {"total": total, "answered": _randint(rng, 1, total - 1) if knocked_out else total}


def _metadata(rng: random.Random) -> dict[str, str] | None:
    if rng.random() < 0.3:
        return None
    meta = {"external_id": f"ats_{rng.getrandbits(32):08x}", "source": _choice(rng, SOURCES)}
    if rng.random() < 0.4:
        meta["requisition_id"] = f"REQ-{_randint(rng, 1000, 9999)}"
    return meta


def _data(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.2:
        return None
    city, country = _choice(rng, CITIES)
    data: dict[str, Any] = {
        "phone": f"+1{_randint(rng, 2_000_000_000, 9_899_999_999)}",
        "location": {"city": city, "country": country, "postal_code": None if rng.random() < 0.5 else "78701"},
        "resume": {
            "years_experience": _randint(rng, 0, 25),
            "skills": rng.sample(SKILLS, _randint(rng, 0, 4)),
            "education": None if rng.random() < 0.5 else {"degree": "BS", "year": _randint(rng, 1995, 2025)},
        },
    }
    if rng.random() < 0.5:
        data["expected_hourly_rate"] = round(rng.uniform(14, 85), 2)
    if rng.random() < 0.4:
        data["willing_to_relocate"] = rng.random() < 0.5
    if rng.random() < 0.3:
        data["answers"] = [{"q": 1, "a": "yes"}, {"q": 2, "a": _randint(rng, 0, 10)}, {"q": 3, "a": None}]
    if rng.random() < 0.2:
        data["tags"] = ["priority", _randint(rng, 1, 5), True, None, 2.5]
    if rng.random() < 0.3:
        # Some ATSs hand out ids wider than 64 bits; they must survive JSON round trips intact.
        big = rng.random() < 0.05
        data["ats"] = {"application_id": (1 << 64) + rng.getrandbits(40) if big else rng.getrandbits(40)}
    return data


def plan_candidate(ctx: PostingContext, interview_id: int, created_at: float) -> Plan:
    rng = random.Random((ctx.seed << 64) | interview_id)
    quality = _clip(rng.gauss(62, 16), 0, 100)
    steps: list[StepPlan] = []
    if rng.random() >= _NEVER_STARTS:
        t = created_at + _delay(rng, 12 * _HOUR, 1.3, 20 * _DAY)
        for step in ctx.steps:
            if step.type == "web_interview":
                duration = rng.uniform(600, 2700)
            elif step.type == "conversational_sms":
                duration = _delay(rng, 3 * _HOUR, 1.0, 4 * _DAY)
            elif step.type == "form":
                duration = rng.uniform(120, 900)
            else:
                duration = rng.uniform(20, 300)
            u = rng.random()
            outcome = (
                "abandoned" if u < _ABANDON else "knocked_out" if u < _ABANDON + _KNOCKOUT[step.type] else "completed"
            )
            values = _step_values(rng, step, quality, outcome == "knocked_out")
            steps.append(StepPlan(round(t, 3), round(t + duration, 3), outcome, values))
            if outcome != "completed":
                break
            t += duration + _delay(rng, 6 * _HOUR, 1.2, 10 * _DAY)

    all_done = len(steps) == len(ctx.steps) and all(s.outcome == "completed" for s in steps)
    done_at = steps[-1].end if all_done else None
    scored_at = decided_at = None
    shortlisted = False
    if done_at is not None and rng.random() >= _STUCK_EVALUATING:
        scored_at = round(done_at + _delay(rng, 20 * 60, 1.0, 3 * _DAY), 3)
        if rng.random() < _RECRUITER_ACTS:
            decided_at = round(scored_at + _delay(rng, 4 * _DAY, 1.2, 45 * _DAY), 3)
            shortlisted = rng.random() < quality / 100
    interviewed_at = None
    for step, sp in zip(ctx.steps, steps, strict=False):
        if step.type == "web_interview" and sp.outcome != "abandoned":
            interviewed_at = sp.end
    if interviewed_at is None and not any(s.type == "web_interview" for s in ctx.steps):
        interviewed_at = done_at
    return Plan(
        steps=steps,
        done_at=done_at,
        scored_at=scored_at,
        decided_at=decided_at,
        shortlisted=shortlisted,
        score=round(_clip(quality + rng.gauss(0, 4), 0, 100), 1),
        interviewed_at=interviewed_at,
        candidate_id_null=rng.random() < 0.04,
        url_null=rng.random() < 0.01,
        metadata=_metadata(rng),
        data=_data(rng),
    )


@lru_cache(maxsize=16)
def _amz_date(now_s: int) -> tuple[str, str]:
    moment = datetime.fromtimestamp(now_s, UTC)
    return moment.strftime("%Y%m%d"), moment.strftime("%Y%m%dT%H%M%SZ")


def _signed_media_url(ctx: PostingContext, iid_hex: str, kind: str, now: float) -> str:
    # Like real presigned S3 URLs these are re-signed at request time, so they change as `now` moves.
    now_s = int(now)
    day, stamp = _amz_date(now_s)
    signature = digest(ctx.seed, iid_hex, kind, now_s)
    return (
        f"https://heymilo-media.s3.us-east-1.amazonaws.com/{ctx.company_slug}/{iid_hex}/{kind}"
        f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4HEYMILOSIM7EXAM%2F{day}%2Fus-east-1"
        f"%2Fs3%2Faws4_request&X-Amz-Date={stamp}&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        f"&X-Amz-Signature={signature}"
    )


def _resume_link(ctx: PostingContext, key: int, now: float) -> str:
    expires = int(now) + 3600
    signature = digest(ctx.seed, key, expires, size=24)
    return (
        f"https://cdn.heymilo.io/resumes/{key:016x}.pdf?Expires={expires}"
        f"&Signature={signature}&Key-Pair-Id=K2JCJMDEHXQW5F"
    )


def _section(ctx: PostingContext, step: StepDef, sp: StepPlan, state: str, iid_hex: str, now: float) -> dict:
    v = sp.values
    done = state in ("completed", "knocked_out")
    if step.type == "resume":
        return {
            "resume_score": v["resume_score"] if done else None,
            "is_eligible": v["is_eligible"] if done else None,
            "resume_link": _resume_link(ctx, v["key"], now),
        }
    if step.type == "web_interview":
        if not done:
            return {"score": None, "highlights": [], "audio_recording_link": None, "video_recording_link": None}
        return {
            "score": v["score"],
            "highlights": list(v["highlights"]),
            "audio_recording_link": _signed_media_url(ctx, iid_hex, "audio.m4a", now),
            "video_recording_link": _signed_media_url(ctx, iid_hex, "video.webm", now) if v["video"] else None,
        }
    # Partially answered screenings grow with time while the step is in progress.
    progress = 1.0 if done else 0.5 if sp.outcome == "abandoned" else (now - sp.start) / (sp.end - sp.start)
    if step.type == "conversational_sms":
        passed = v["passed"]
        return {
            "is_eligible": (state == "completed") if done else None,
            "criteria_passed": list(passed) if done else passed[: int(len(passed) * progress)],
            "criteria_failed": list(v["failed"]) if done else [],
            "messages_sent": v["messages"] if done else max(1, int(v["messages"] * progress)),
        }
    total = v["total"]
    return {
        "is_complete": state == "completed",
        "is_eligible": (state == "completed") if done else None,
        "questions_answered": v["answered"] if done else int(v["answered"] * progress),
        "total_questions": total,
    }


def render_candidate(
    ctx: PostingContext, interview_id: int, created_at: float, person_number: int, now: float, plan: Plan | None = None
) -> dict[str, Any]:
    """The candidate as the listing shows it at ``now``; ``plan``: its plan, when the caller has made it already."""
    plan = plan or plan_candidate(ctx, interview_id, created_at)
    iid_hex = f"{interview_id:016X}"
    step_views = []
    summary: dict[str, Any] = {"resume": None, "web_interview": None, "sms": None, "form": None}
    started_any = knocked_out = False
    completed_all = True
    last_activity = None
    for i, step in enumerate(ctx.steps):
        sp = plan.steps[i] if i < len(plan.steps) else None
        if sp is None or now < sp.start:
            state, updated = "not_started", None
        elif sp.outcome == "abandoned" or now < sp.end:
            state, updated = "in_progress", sp.start
        else:
            state, updated = ("knocked_out" if sp.outcome == "knocked_out" else "completed"), sp.end
        if state != "not_started":
            started_any = True
            last_activity = updated
            summary[SUMMARY_KEY[step.type]] = _section(ctx, step, sp, state, iid_hex, now)
        knocked_out = knocked_out or state == "knocked_out"
        completed_all = completed_all and state == "completed"
        step_views.append(
            {
                "step_id": step.step_id,
                "order": step.order,
                "status": state,
                "started": state != "not_started",
                "completed": state == "completed",
                "knocked_out": state == "knocked_out",
                "last_updated_at": updated,
            }
        )

    scored = plan.scored_at is not None and now >= plan.scored_at
    decided = scored and plan.decided_at is not None and now >= plan.decided_at
    if knocked_out:
        status = "knocked_out"
    elif not started_any:
        status = "pending"
    elif not completed_all:
        status = "in_progress"
    elif not scored:
        status = "evaluating"
    elif decided:
        status = "shortlisted" if plan.shortlisted else "dismissed"
    else:
        status = "completed"

    name, email, candidate_id = person(ctx.seed, person_number)
    score: float | str | None = plan.score if scored else None
    if score is not None and ctx.shape.score_as_string:
        score = str(score)
    metadata = None
    if plan.metadata is not None:
        metadata = {**plan.metadata, "ats_stage": ATS_STAGES[status]}
    interviewed_at = plan.interviewed_at if plan.interviewed_at is not None and now >= plan.interviewed_at else None
    workflow: dict[str, Any] | None = {
        "steps": step_views,
        "all_complete": completed_all and bool(step_views),
        "last_activity_at": last_activity,
    }
    agent_summary: dict[str, Any] | None = summary if started_any else None
    doc: dict[str, Any] = {
        "object": "candidate",
        "interview_id": iid_hex,
        "candidate_id": None if plan.candidate_id_null else candidate_id,
        "posting_id": ctx.posting_id,
        "name": name,
        "email": email,
        "score": score,
        "status": status,
        "interview_url": None if plan.url_null else f"https://candidates.heymilo.io/{ctx.company_slug}/i/{iid_hex}",
        "workflow": workflow,
        "agent_summary": agent_summary,
        "shortlisted": decided and plan.shortlisted,
        "dismissed": decided and not plan.shortlisted,
        "metadata": metadata,
        "data": plan.data,
        "interviewed_at": interviewed_at,
        "created_at": created_at,
    }
    shape = ctx.shape
    if shape.null_objects_share > 0:
        _apply_nulls(doc, interview_id, shape.null_objects_share)
    if shape.extra_fields:
        _apply_extra_fields(doc, interview_id)
    return doc


def _unit(value: int) -> float:
    return (mix64(value) >> 11) / float(1 << 53)


def _apply_nulls(doc: dict[str, Any], interview_id: int, share: float) -> None:
    if _unit(interview_id ^ _SALT_NULLS) >= share:
        return
    variant = mix64(interview_id + _SALT_NULLS) % 3
    if variant in (0, 2):
        doc["workflow"] = None
    if variant in (1, 2):
        doc["agent_summary"] = None


def _apply_extra_fields(doc: dict[str, Any], interview_id: int) -> None:
    """Fields the spec does not know yet, at the top level and nested, like a newer API release."""
    h = mix64(interview_id ^ _SALT_EXTRA)
    doc["sentiment"] = {"label": SENTIMENTS[h % len(SENTIMENTS)], "confidence": round((h >> 8) % 1000 / 1000, 3)}
    doc["source_channel"] = SOURCES[(h >> 20) % len(SOURCES)]
    workflow = doc["workflow"]
    if workflow is not None:
        workflow["current_step"] = next((s["order"] for s in workflow["steps"] if not s["completed"]), None)
        for step in workflow["steps"]:
            step["attempts"] = 1 + (h >> 30) % 2 if step["started"] else 0
    summary = doc["agent_summary"]
    if summary is not None:
        summary["model_version"] = "milo-2026.03"
        if summary.get("web_interview") is not None:
            summary["web_interview"]["duration_seconds"] = 300 + (h >> 40) % 2400
