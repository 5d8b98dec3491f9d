"""Generation of the tenant's postings (PostingResponse documents and their workflow steps)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .fakedata import COMPANIES, INTERVIEWER_NAMES, JOB_TITLES, LOCATIONS, SMS_CRITERIA, digest, slugify

# agent_summary section name of each workflow step type.
SUMMARY_KEY = {"resume": "resume", "web_interview": "web_interview", "conversational_sms": "sms", "form": "form"}
_STEP_ABBR = {"web_interview": "vi", "conversational_sms": "sms", "resume": "rs", "form": "fm"}

# The first four combinations together cover every step type, so any tenant of >= 4 postings with
# candidates exercises every agent_summary section.
_WORKFLOWS = (
    ("resume", "web_interview"),
    ("conversational_sms", "web_interview"),
    ("form", "web_interview"),
    ("resume", "form", "conversational_sms"),
    ("web_interview",),
    ("resume", "conversational_sms", "web_interview"),
    ("form", "resume", "web_interview"),
)


@dataclass(frozen=True, slots=True)
class StepDef:
    step_id: str
    type: str
    order: int
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Company:
    slug: str
    name: str
    company_id: str
    workspace: str


@dataclass(frozen=True)
class PostingDef:
    index: int
    id: str
    status: str
    test_posting: bool
    steps: tuple[StepDef, ...]
    document: dict[str, Any]

    @property
    def accepts_candidates(self) -> bool:
        # Drafts were never published, so nobody could have been invited to them.
        return self.status != "draft"


def make_company(rng: random.Random) -> Company:
    slug, name = rng.choice(COMPANIES)
    return Company(
        slug=slug,
        name=name,
        company_id=f"comp_{rng.getrandbits(48):012x}",
        workspace=f"{rng.getrandbits(24):06X}",
    )


def _statuses(rng: random.Random, count: int) -> tuple[list[str], int]:
    """Every status is always present (so at least 4 postings); exactly one active posting is a test one."""
    statuses = ["draft", "archived", "expired"] + ["active"] * max(1, count - 3)
    rng.shuffle(statuses)
    test_index = rng.choice([i for i, s in enumerate(statuses) if s == "active"])
    return statuses, test_index


def _step_config(rng: random.Random, step_type: str, interviewer: str) -> dict[str, Any]:
    if step_type == "web_interview":
        return {
            "interviewer_name": interviewer,
            "max_duration_minutes": rng.choice((15, 20, 30, 45)),
            "question_count": rng.randint(4, 9),
            "record_video": rng.random() < 0.8,
        }
    if step_type == "conversational_sms":
        return {"criteria": rng.sample(SMS_CRITERIA, rng.randint(3, 5)), "max_messages": 20}
    if step_type == "resume":
        return {"min_score": rng.choice((2.5, 3.0, 3.5)), "knockout": rng.random() < 0.7}
    return {"question_count": rng.randint(5, 12), "knockout_questions": rng.randint(1, 3)}


def _unique_hex_id(rng: random.Random, taken: set[str]) -> str:
    while True:
        candidate = f"{rng.getrandbits(32):08X}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def make_postings(
    rng: random.Random,
    company: Company,
    count: int,
    range_start: float,
    range_end: float,
    extra_fields: bool,
) -> list[PostingDef]:
    """Postings ordered by created_at ascending, which is also the listing order of the API."""
    statuses, test_index = _statuses(rng, count)
    count = len(statuses)
    workflow_offset = rng.randrange(len(_WORKFLOWS))
    taken: set[str] = set()
    titles_used: set[str] = set()
    step_counter = 0
    created_times = sorted(range_start - rng.uniform(3, 120) * 86400 for _ in range(count))
    postings = []
    for index in range(count):
        status = statuses[index]
        posting_id = _unique_hex_id(rng, taken)
        title = rng.choice(JOB_TITLES)
        # Recruiters reuse a title for several locations; titles stay distinct for `search` tests.
        base, suffix = title, 1
        while title in titles_used:
            title = f"{base} - {rng.choice(LOCATIONS)}" if suffix < 20 else f"{base} #{suffix}"
            suffix += 1
        titles_used.add(title)
        interviewer = rng.choice(INTERVIEWER_NAMES)
        steps = []
        for order, step_type in enumerate(_WORKFLOWS[(workflow_offset + index) % len(_WORKFLOWS)], start=1):
            step_counter += 1
            steps.append(
                StepDef(
                    step_id=f"agent_{_STEP_ABBR[step_type]}_{step_counter:03d}",
                    type=step_type,
                    order=order,
                    config=_step_config(rng, step_type, interviewer),
                )
            )
        created_at = round(created_times[index], 3)
        document = _document(
            rng,
            company,
            posting_id,
            title,
            status,
            index == test_index,
            tuple(steps),
            interviewer,
            created_at,
            range_end,
        )
        if extra_fields:
            document["department"] = rng.choice(("Operations", "Engineering", "Support", "Sales"))
            document["hiring_team"] = {"size": rng.randint(1, 6), "lead": {"email_verified": True}}
        postings.append(
            PostingDef(
                index=index,
                id=posting_id,
                status=status,
                test_posting=index == test_index,
                steps=tuple(steps),
                document=document,
            )
        )
    return postings


def _document(
    rng: random.Random,
    company: Company,
    posting_id: str,
    title: str,
    status: str,
    test_posting: bool,
    steps: tuple[StepDef, ...],
    interviewer: str,
    created_at: float,
    range_end: float,
) -> dict[str, Any]:
    slug = slugify(title)
    has_sms = any(s.type == "conversational_sms" for s in steps)
    finalized = status != "draft"
    if status == "expired":
        deadline: float | None = range_end
    elif status == "active" and rng.random() < 0.4:
        deadline = range_end + rng.randint(30, 120) * 86400.0
    else:
        deadline = None
    ats = rng.random() < 0.4
    return {
        "object": "posting",
        "id": posting_id,
        "company_id": company.company_id,
        "title": title,
        "name": slug,
        "description": (
            f"{company.name} is hiring a {title}. You will join a friendly team, follow clear processes "
            "and grow with the company. Competitive pay and benefits."
        ),
        "language": "es" if "Bilingual" in title else "en",
        "interviewer_name": interviewer,
        "status": status,
        "finalized": finalized,
        "archived": status == "archived",
        "test_posting": test_posting,
        "workflow": [{"id": s.step_id, "type": s.type, "order": s.order, "config": s.config} for s in steps],
        "urls": {
            "candidate_url": f"https://candidates.heymilo.io/{company.slug}/{slug}" if finalized else None,
            "ingestion_url_key": digest("ingest", posting_id, size=24)[:45] if finalized else None,
            "review_url": f"https://admin.heymilo.ai/w/{company.workspace}/lab2/{posting_id}/1-details",
        },
        "deadline": deadline,
        "redirect_url": f"https://{company.slug}.com/thank-you" if rng.random() < 0.5 else None,
        "scheduling_url": f"https://cal.com/{company.slug}/interview" if rng.random() < 0.5 else None,
        "max_retakes": rng.choice((None, 0, 1, 2)),
        "allow_sms_comms": has_sms,
        "instructions": "Be warm and concise. Ask one question at a time." if rng.random() < 0.7 else None,
        "company_overview": f"{company.name} operates across North America." if rng.random() < 0.8 else None,
        "job_overview": f"The {title} role is full time." if rng.random() < 0.8 else None,
        "interview_process_overview": "A short AI interview, then a call with the hiring manager.",
        "company_overview_delivery_mode": rng.choice(("verbatim", "summarized", None)),
        "job_overview_delivery_mode": rng.choice(("verbatim", "summarized", None)),
        "interview_process_overview_delivery_mode": rng.choice(("verbatim", "summarized", None)),
        "phone_number_id": f"pn_{rng.getrandbits(40):010x}" if has_sms else None,
        "sender_email_id": f"se_{rng.getrandbits(40):010x}" if rng.random() < 0.6 else None,
        "email_template_group_id": f"etg_{rng.getrandbits(40):010x}" if rng.random() < 0.5 else None,
        "design_template_group_id": f"dtg_{rng.getrandbits(40):010x}" if rng.random() < 0.5 else None,
        "retake_cooldown_days": rng.choice((None, 7.0, 14.0, 0.5)),
        "email_report_to_candidate": rng.random() < 0.2,
        "ats_metadata": (
            {
                "source": "job_sync",
                "ats_name": rng.choice(("workable", "bullhorn", "greenhouse")),
                "ats_job_id": f"WK-{rng.randint(10000, 99999)}",
                "pending_activation": not finalized,
            }
            if ats
            else None
        ),
        "metadata": {"cost_center": f"CC-{rng.randint(100, 999)}"} if rng.random() < 0.5 else None,
        "created_at": created_at,
        "updated_at": round(created_at + rng.uniform(60, 86400 * 3), 3),
    }
