"""The interview results of one candidate (``GET /api/v2/interviews/{interview_id}/data``) at simulated time ``now``.

They follow the candidate's plan (``render.plan_candidate``): each agent's section exists once its step has ended,
and agrees with what the candidate listing shows (scores, eligibility, criteria passed and failed, questions
answered). Where the listing says nothing, the details come from an RNG of their own, seeded by (tenant seed,
interview_id), so they never change the listing and never change with ``now`` (only signed URLs do).

Agreement kept: a knocked-out candidate failed a dealbreaker SMS criterion, a knockout form question, or (resume)
an eligibility criterion, at the step that knocked them out. A candidate who has not finished (status ``pending``
or ``in_progress``) gets ``status: "not_ready"`` and no agent sections: the spec says the endpoint "returns status
'not_ready'" without saying where, and this is one shape it allows.
"""

from __future__ import annotations

import random
from typing import Any

from .fakedata import FIRST_NAMES, HIGHLIGHTS, digest, mix64
from .postings import StepDef
from .render import PostingContext, StepPlan, _resume_link, _signed_media_url, plan_candidate, render_candidate

NOT_READY = "not_ready"
UNFINISHED = frozenset({"pending", "in_progress"})
_SALT_RESULTS = 0x5EED_0003
_SALT_POSTING = 0x5EED_0004

_QUESTIONS = (
    "Tell me about yourself and what brought you to this role.",
    "Describe a time you handled a difficult customer.",
    "How do you prioritise when everything is urgent?",
    "Walk me through a project you are proud of.",
    "What would you do in your first 30 days here?",
    "Tell me about a mistake you made and what you learned.",
    "How do you work with a teammate who disagrees with you?",
    "Why are you leaving your current position?",
    "Describe your experience with the tools this job uses.",
    "Where do you want to be in two years?",
    "How do you keep quality up when you are short of time?",
    "What questions do you have for us?",
)
_LOWLIGHTS = (
    "Answers lacked concrete examples",
    "Limited experience with the main tools",
    "Hesitant on scheduling questions",
    "Vague about reasons for leaving",
    "Short answers on teamwork",
)
_TAGS = ("bilingual", "weekend-availability", "management-experience", "customer-facing", "night-shift", "remote")
_RESUME_CRITERIA = (
    "Two or more years of relevant experience",
    "Experience in a customer-facing role",
    "Relevant certification or licence",
    "Stable employment history",
    "Experience with scheduling or inventory software",
    "Team leadership experience",
)
_ELIGIBILITY = ("Authorised to work in the country", "Lives within commuting distance", "Meets the minimum age")
_FORM_TYPES = ("multiple-choice", "number", "textarea", "date", "slider", "file-upload")
_CHEAT_TYPES = ("tab_switching", "ai_scripted_answer", "multiple_people", "multiple_speakers", "unusual_delays")


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def _posting_rng(ctx: PostingContext, step: StepDef) -> random.Random:
    """Details every candidate of the posting shares (its questions, criteria, flags), stable per step."""
    return random.Random(mix64((ctx.seed << 32) ^ int(digest(step.step_id, size=8), 16) ^ _SALT_POSTING))


def _transcript(rng: random.Random, question: str, first_name: str, start: float) -> list[dict[str, Any]]:
    turns = [("Interviewer", question), ("Candidate", f"Sure. As {first_name}, I would say {rng.choice(HIGHLIGHTS)}.")]
    if rng.random() < 0.5:
        turns += [("Interviewer", "Can you give an example?"), ("Candidate", "Yes, in my last job I did exactly that.")]
    out, t = [], start
    for speaker, text in turns:
        out.append({"speaker": speaker, "text": text, "timestamp": round(t, 1), "timestamp_str": _mmss(t)})
        t += rng.uniform(4, 40)
    return out


def _web_interview(
    ctx: PostingContext, step: StepDef, sp: StepPlan, rng: random.Random, iid_hex: str, first: str, now: float
) -> dict[str, Any]:
    v = sp.values
    shared = _posting_rng(ctx, step)
    count = int(step.config.get("question_count", 6))
    texts = shared.sample(_QUESTIONS, min(count, len(_QUESTIONS)))
    weights = [shared.randint(1, 10) for _ in texts]
    informational = shared.random() < 0.5  # the first question is asked but not scored
    scorecard, transcript, t = [], [], 0.0
    for rank, (text, weight) in enumerate(zip(texts, weights, strict=True), start=1):
        turns = _transcript(rng, text, first, t)
        t = turns[-1]["timestamp"] + rng.uniform(5, 20)
        transcript += turns
        score = max(1, min(10, round(v["score"] / 10 + rng.gauss(0, 1.2))))
        scorecard.append(
            {
                "question_id": f"q_{step.step_id}_{rank}",
                "question_text": text,
                "score": score,
                "score_weight": weight,
                "evaluation_summary": f"Answer rated {score}/10: {rng.choice(HIGHLIGHTS).lower()}.",
                "evaluation_criteria": "Relevance, concrete examples, clarity.",
                "score_1_description": "No relevant answer.",
                "score_5_description": "A relevant answer without examples.",
                "not_scored": informational and rank == 1,
                "rank": rank,
                "transcript": turns,
            }
        )
    return {
        "object": "web_interview_result",
        "interview_id": iid_hex,
        "match_score": round(v["score"]),
        "highlights": list(v["highlights"]),
        "lowlights": rng.sample(_LOWLIGHTS, rng.randint(0, 2)),
        "scorecard": scorecard,
        "speech_score": round(min(5.0, max(0.0, rng.gauss(3.4, 0.8))), 1),
        "transcript": transcript,
        "audio_recording_url": _signed_media_url(ctx, iid_hex, "audio.m4a", now),
        "video_recording_url": _signed_media_url(ctx, iid_hex, "video.webm", now) if v["video"] else None,
        "tags": rng.sample(_TAGS, rng.randint(0, 2)),
    }


def _resume(
    ctx: PostingContext, step: StepDef, sp: StepPlan, rng: random.Random, iid_hex: str, now: float
) -> dict[str, Any]:
    v = sp.values
    shared = _posting_rng(ctx, step)
    scored = shared.sample(_RESUME_CRITERIA, shared.randint(3, 5))
    eligibility = shared.sample(_ELIGIBILITY, shared.randint(1, 3))
    failed = rng.randrange(len(eligibility)) if not v["is_eligible"] else None
    overall = round(v["resume_score"] * 20, 1)
    return {
        "object": "resume_result",
        "interview_id": iid_hex,
        "overall_score": overall,
        "is_eligible": v["is_eligible"],
        "score_criteria": [
            {
                "criteria_id": f"rc_{step.step_id}_{i}",
                "criteria_text": text,
                "score": round(min(10.0, max(0.0, overall / 10 + rng.gauss(0, 1.5))), 1),
                "confidence": round(rng.uniform(0.55, 0.99), 2),
                "reasons": [f"The resume {'shows' if overall >= 50 else 'does not clearly show'} this."],
            }
            for i, text in enumerate(scored, start=1)
        ],
        "eligibility_criteria": [
            {
                "criteria_id": f"ec_{step.step_id}_{i}",
                "criteria_text": text,
                "passed": i - 1 != failed,
                "confidence": round(rng.uniform(0.6, 0.99), 2),
                "reasons": ["Stated on the resume." if i - 1 != failed else "Not met according to the resume."],
            }
            for i, text in enumerate(eligibility, start=1)
        ],
        "resume_url": _resume_link(ctx, v["key"], now),
    }


def _sms(step: StepDef, sp: StepPlan, rng: random.Random, iid_hex: str, knocked_out: bool) -> dict[str, Any]:
    v = sp.values
    criteria = list(step.config.get("criteria", ()))
    sent = v["messages"]
    transcript: list[dict[str, Any]] = []
    t = sp.start
    for i in range(sent):  # the agent's messages, every other one answered
        roles = ("agent", "candidate") if i < sent // 2 else ("agent",)
        for role in roles:
            text = "Next question." if role == "agent" else "Yes, that works for me."
            transcript.append({"role": role, "text": text, "timestamp": round(t, 3)})
            t += rng.uniform(30, 900)
    return {
        "object": "sms_result",
        "interview_id": iid_hex,
        "is_eligible": not knocked_out,
        "confidence": round(rng.uniform(0.6, 0.99), 2),
        "criteria": [
            {
                "criteria_id": f"sc_{i}",
                "criteria_text": text,
                "passed": text not in v["failed"],
                # Failing a dealbreaker knocks out: the criteria that knocked this candidate out are dealbreakers,
                # one a candidate failed and got past is not, and the others are as the posting sets them.
                "is_dealbreaker": knocked_out if text in v["failed"] else i % 2 == 1,
                "confidence": round(rng.uniform(0.6, 0.99), 2),
                "reasons": ["Answered by text message."],
            }
            for i, text in enumerate(criteria, start=1)
        ],
        "transcript": transcript,
        "messages_sent": sent,
        "messages_received": sent // 2,
    }


def _form(ctx: PostingContext, step: StepDef, sp: StepPlan, rng: random.Random, iid_hex: str) -> dict[str, Any]:
    v = sp.values
    shared = _posting_rng(ctx, step)
    total, answered = v["total"], v["answered"]
    knockouts = min(int(step.config.get("knockout_questions", 1)), total)  # the form's first questions
    types = [shared.choice(_FORM_TYPES) for _ in range(total)]
    knocked_out = answered < total
    failed = (min(answered, knockouts) - 1) if knocked_out else None
    questions = []
    for i in range(answered):
        knockout = i < knockouts
        passed = i != failed
        questions.append(
            {
                "question_id": f"fq_{step.step_id}_{i + 1}",
                "question_text": f"Question {i + 1} of the application form",
                "question_type": types[i],
                "is_knockout": knockout,
                "passed": passed,
                "candidate_answer": ("yes" if passed else "no") if knockout else str(rng.randint(0, 10)),
                "expected_answer": "yes" if knockout else None,
            }
        )
    return {
        "object": "form_result",
        "interview_id": iid_hex,
        "overall_status": "failed" if knocked_out else "passed",
        "questions": questions,
    }


def _cheat_detection(ctx: PostingContext, rng: random.Random, has_interview: bool, has_resume: bool) -> Any:
    shared = random.Random(mix64(ctx.seed ^ int(digest(ctx.posting_id, size=8), 16) ^ _SALT_POSTING))
    configured, enabled = shared.random() < 0.7, shared.random() < 0.8
    if not configured:
        return None
    threshold = shared.choice((50, 60, 70, 80))
    types = shared.sample(_CHEAT_TYPES, shared.randint(2, 4))
    if not enabled:
        return {"object": "cheat_detection", "enabled": False, "threshold": threshold, "types": types,
                "overall_confidence": None, "overall_ranking": None, "web_interview": None, "resume": None}  # fmt: skip
    ranking = min(5, 1 + int(rng.expovariate(1.6)))
    confidence = round(min(1.0, (ranking - 1) / 4 + rng.uniform(0, 0.2)), 2)
    web = None
    if has_interview:
        detected = ranking >= 3
        web = {
            "cheat_detection_result": {
                "cheating_detected": detected,
                "cheating_confidence": confidence,
                "cheating_instances": [
                    {
                        "reasoning": "Answer read from another screen.",
                        "transcript_references": [
                            {"user_friendly_timestamp": "02:10", "text": "(pause)", "actual_timestamp": 130.0}
                        ],
                    }
                ]
                if detected
                else [],
            },
            "llm_detection_result": {
                "llm_generated_detected": ranking >= 4,
                "detection_confidence": round(rng.uniform(0, 1), 2),
                "llm_detected_segments": [],
                "gptzero_metrics": None,
            },
            "unusual_delay_detection": None,
            "tab_switch_detection": {"total_count": max(0, ranking - 2) * 2, "events": []},
            "interview_integrity": None,
            "integrity_analysis_v2": None,
        }
    resume = None
    if has_resume:
        probability = round(rng.betavariate(1.2, 6), 3)
        resume = {
            "gpt_detection": {
                "version": "2026-01-15-base",
                "scanId": digest(ctx.seed, ctx.posting_id, rng.getrandbits(32), size=16),
                "documents": [{"completely_generated_prob": probability, "average_generated_prob": probability}],
            }
        }
    return {
        "object": "cheat_detection",
        "enabled": True,
        "threshold": threshold,
        "types": types,
        "overall_confidence": confidence,
        "overall_ranking": ranking,
        "web_interview": web,
        "resume": resume,
    }


def render_interview_data(
    ctx: PostingContext, interview_id: int, created_at: float, person_number: int, now: float
) -> dict[str, Any]:
    """The ``data`` of getInterviewData for this candidate at ``now``."""
    plan = plan_candidate(ctx, interview_id, created_at)
    candidate = render_candidate(ctx, interview_id, created_at, person_number, now, plan)
    doc: dict[str, Any] = {
        "object": "interview_data",
        **{k: candidate[k] for k in ("interview_id", "candidate_id", "posting_id", "name", "email", "score")},
        "status": candidate["status"],
        "workflow": candidate["workflow"],
        "web_interview": None,
        "resume": None,
        "sms": None,
        "form": None,
        "cheat_detection": None,
        "metadata": candidate["metadata"],
        "data": candidate["data"],
    }
    if candidate["status"] in UNFINISHED:
        doc["status"] = NOT_READY
        return doc
    rng = random.Random((ctx.seed << 64) | (interview_id ^ _SALT_RESULTS))
    iid_hex = candidate["interview_id"]
    first = candidate["name"].split(" ", 1)[0] if candidate["name"] else FIRST_NAMES[0]
    for step, sp in zip(ctx.steps, plan.steps, strict=False):  # a finished candidate's planned steps have ended
        knocked_out = sp.outcome == "knocked_out"
        if step.type == "web_interview":
            doc["web_interview"] = _web_interview(ctx, step, sp, rng, iid_hex, first, now)
        elif step.type == "resume":
            doc["resume"] = _resume(ctx, step, sp, rng, iid_hex, now)
        elif step.type == "conversational_sms":
            doc["sms"] = _sms(step, sp, rng, iid_hex, knocked_out)
        else:
            doc["form"] = _form(ctx, step, sp, rng, iid_hex)
    doc["cheat_detection"] = _cheat_detection(ctx, rng, doc["web_interview"] is not None, doc["resume"] is not None)
    return doc
