"""Data factories shared by the fast tests: candidate records as the API sends them, and client settings.

No Dagster and no servers, so the fast tier imports it in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from heymilo_pipeline.api.settings import ClientSettings
from heymilo_pipeline.api.windows import DayRange, midnight
from heymilo_pipeline.simulator import asgi_transport

CLIENT_KEY = "sk_test_CLIENT-KEY-5f1e9a"
SIM_KEY = "sk_test_sim-7c1d2e3f4a5b"
SIM_BASE_URL = "http://heymilo.sim"
DAY = date(2026, 3, 13)
T0 = midnight(DAY) + 3600.25  # 01:00:00.25 UTC
BIG = 2**64 + 12345


def step(step_id: str, order: int, status: str, updated: float | None = None) -> dict[str, Any]:
    return {
        "step_id": step_id,
        "order": order,
        "status": status,
        "started": status != "not_started",
        "completed": status == "completed",
        "knocked_out": status == "knocked_out",
        "last_updated_at": updated,
    }


def record(n: int = 1, created_at: float | None = T0, **overrides: Any) -> dict[str, Any]:
    """One candidate as the API sends it, every section filled (tests override what they need)."""
    interview_id = f"{n:016X}"
    doc: dict[str, Any] = {
        "object": "candidate",
        "interview_id": interview_id,
        "candidate_id": f"cand_{n}",
        "posting_id": "P1",
        "name": "Jane Smith",
        "email": "jane.smith@example.com",
        "score": 78.5,
        "status": "in_progress",
        "interview_url": f"https://candidates.heymilo.io/acme/i/{interview_id}",
        "workflow": {
            "steps": [
                step("resume_1", 1, "completed", T0 + 60),
                step("vi_2", 2, "in_progress", T0 + 120.5),
                step("form_3", 3, "not_started"),
            ],
            "all_complete": False,
            "last_activity_at": T0 + 120.5,
        },
        "agent_summary": {
            "resume": {"resume_score": 3.8, "is_eligible": True, "resume_link": "https://cdn.heymilo.io/r.pdf"},
            "web_interview": {
                "score": 82.0,
                "highlights": ["clear", "kind"],
                "audio_recording_link": "https://a",
                "video_recording_link": None,
            },
            "sms": {"is_eligible": None, "criteria_passed": ["age"], "criteria_failed": [], "messages_sent": 8},
            "form": {"is_complete": False, "is_eligible": None, "questions_answered": 5, "total_questions": 7},
        },
        "shortlisted": False,
        "dismissed": False,
        "metadata": {"source": "linkedin", "external_id": "x1"},
        "data": {"phone": "+15125550100", "ats": {"application_id": BIG}, "tags": ["a", 1, True, None, 2.5]},
        "interviewed_at": T0 + 100,
        "created_at": created_at,
    }
    doc.update(overrides)
    return doc


DAYS = DayRange(DAY, DAY + timedelta(days=2))


def fetched(posting_id: str = "P1", per_day: tuple[int, ...] = (3, 0, 2), first: int = 0) -> list[dict[str, Any]]:
    """Raw records of one posting: ``per_day[i]`` candidates created on DAY + i."""
    docs, n = [], first
    for offset, count in enumerate(per_day):
        for k in range(count):
            n += 1
            docs.append(
                record(n, created_at=midnight(DAY + timedelta(days=offset)) + 3600 * k + 0.5, posting_id=posting_id)
            )
    return docs


def fetched_on(first_day: date, per_day: tuple[int, ...], first: int = 0) -> list[dict[str, Any]]:
    """Like fetched, from ``first_day`` on."""
    docs, n = [], first
    for offset, count in enumerate(per_day):
        for k in range(count):
            n += 1
            docs.append(record(n, created_at=midnight(first_day + timedelta(days=offset)) + 60 * k, posting_id="P1"))
    return docs


def client_settings(tmp_path: Path, **overrides: Any) -> ClientSettings:
    """Client settings for in-process tests against the simulator: no pacing, millisecond backoff."""
    values: dict[str, Any] = dict(
        api_key=CLIENT_KEY,
        base_url="http://heymilo.sim",
        rate_limit=1_000_000,  # in-process tests do not need pacing; test_limits covers it
        backoff_initial=0.001,
        backoff_max=0.01,
        state_dir=tmp_path / "ratelimit",
    )
    values.update(overrides)
    return ClientSettings.build(**values)


# --- the simulator, called in process ---------------------------------------------------------------

SimGet = Callable[..., httpx.Response]


async def sim_requests(app: Starlette, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Run (method, path, httpx kwargs) calls in order through the in-process transport."""
    async with httpx.AsyncClient(transport=asgi_transport(app), base_url=SIM_BASE_URL) as client:
        return [await client.request(method, path, **kwargs) for method, path, kwargs in calls]


def make_get(app: Starlette) -> SimGet:
    def get(
        path: str, params: dict[str, Any] | None = None, key: str | None = SIM_KEY, **kwargs: Any
    ) -> httpx.Response:
        headers = {"X-API-KEY": key} if key is not None else {}
        headers.update(kwargs.pop("headers", {}))
        return asyncio.run(sim_requests(app, [("GET", path, {"params": params, "headers": headers, **kwargs})]))[0]

    return get
