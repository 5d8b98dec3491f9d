"""The HeyMilo API simulator: tenant data, clock, HTTP behaviour, faults, admin routes and CLI.

Requests go through the in-process transport (``asgi_transport``) except where real sockets matter
(loopback tests and the CLI smoke test).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from heymilo_pipeline.api.models import CANDIDATE_STATUSES, CandidateResponse, PostingResponse
from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, asgi_transport, create_app, serve_in_thread
from heymilo_pipeline.simulator.cli import main as cli_main
from heymilo_pipeline.simulator.ratelimit import SlidingWindowLog
from heymilo_pipeline_tests.factories import SIM_BASE_URL, SIM_KEY, SimGet, make_get, sim_requests

TINY = TenantSpec(seed=3, postings=4, candidates_per_posting=(60, 120))
DAY = 86400


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def by_posting(tenant: Tenant, as_of: float | None = None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in tenant.truth(as_of):
        out[record["posting_id"]].append(record)
    return dict(out)


def busiest(tenant: Tenant) -> tuple[str, list[dict[str, Any]]]:
    return max(by_posting(tenant).items(), key=lambda item: len(item[1]))


def candidates_path(posting_id: str) -> str:
    return f"/api/v2/postings/{posting_id}/candidates"


def page_all(get: SimGet, posting_id: str, **params: Any) -> tuple[list[dict[str, Any]], list[httpx.Response]]:
    items: list[dict[str, Any]] = []
    responses = []
    cursor = None
    while True:
        query = {**params, **({"starting_after": cursor} if cursor else {})}
        response = get(candidates_path(posting_id), query)
        assert response.status_code == 200, response.text
        responses.append(response)
        body = response.json()
        items.extend(body["data"])
        if not body["pagination"]["has_more"]:
            return items, responses
        cursor = body["data"][-1]["interview_id"]


# --- tenant: determinism, postings, candidates ---------------------------------------------------


def test_same_seed_gives_byte_identical_truth_and_another_seed_differs(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.jsonl.gz" for i in range(3)]
    Tenant(TINY).write_truth(paths[0])
    Tenant(TINY).write_truth(paths[1])
    Tenant(TenantSpec(seed=4, postings=4, candidates_per_posting=(60, 120))).write_truth(paths[2])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()
    assert Tenant(TINY).postings() == Tenant(TINY).postings()


def test_postings_have_every_status_and_exactly_one_test_posting() -> None:
    tenant = Tenant()  # the default spec: 8 postings
    postings = tenant.postings()
    assert len(postings) == 8 and [p["id"] for p in postings] == tenant.posting_ids()
    assert Counter(p["status"] for p in postings)["active"] >= 4
    assert {p["status"] for p in postings} == {"active", "draft", "archived", "expired"}
    assert sum(p["test_posting"] for p in postings) == 1
    assert len({p["id"] for p in postings}) == 8 and len({p["title"] for p in postings}) == 8
    step_types = set()
    for posting in postings:
        PostingResponse.model_validate(posting)
        assert re.fullmatch(r"[0-9A-F]{8}", posting["id"])
        assert posting["archived"] == (posting["status"] == "archived")
        assert posting["finalized"] == (posting["status"] != "draft")
        assert [s["order"] for s in posting["workflow"]] == list(range(1, len(posting["workflow"]) + 1))
        assert all(re.fullmatch(r"agent_[a-z]+_\d{3}", s["id"]) for s in posting["workflow"])
        step_types |= {s["type"] for s in posting["workflow"]}
    assert step_types == {"web_interview", "conversational_sms", "resume", "form"}
    counts = Counter(r["posting_id"] for r in tenant.truth())
    draft = next(p["id"] for p in postings if p["status"] == "draft")
    assert counts[draft] == 0 and all(counts[p["id"]] > 0 for p in postings if p["status"] != "draft")
    # fewer postings than statuses still gets every status
    assert {p["status"] for p in Tenant(TenantSpec(postings=1, candidates_per_posting=(5, 5))).postings()} == {
        "active",
        "draft",
        "archived",
        "expired",
    }


def _check_workflow(record: dict[str, Any], posting: dict[str, Any]) -> None:
    workflow = record["workflow"]
    steps = workflow["steps"]
    assert [s["step_id"] for s in steps] == [s["id"] for s in posting["workflow"]]
    assert [s["order"] for s in steps] == list(range(1, len(steps) + 1))
    for step in steps:
        assert step["started"] == (step["status"] != "not_started")
        assert step["completed"] == (step["status"] == "completed")
        assert step["knocked_out"] == (step["status"] == "knocked_out")
        assert (step["last_updated_at"] is None) == (step["status"] == "not_started")
    assert workflow["all_complete"] == all(s["completed"] for s in steps)
    updates = [s["last_updated_at"] for s in steps if s["last_updated_at"] is not None]
    assert workflow["last_activity_at"] == (max(updates) if updates else None)
    if record["status"] == "pending":
        assert not any(s["started"] for s in steps) and record["agent_summary"] is None
    if record["status"] == "knocked_out":
        assert any(s["knocked_out"] for s in steps)
    if record["status"] in ("evaluating", "completed", "shortlisted", "dismissed"):
        assert workflow["all_complete"]


def _check_summary(record: dict[str, Any], posting: dict[str, Any]) -> None:
    summary = record["agent_summary"]
    if summary is None:
        return
    keys = {"resume": "resume", "web_interview": "web_interview", "conversational_sms": "sms", "form": "form"}
    present = {keys[s["type"]] for s in posting["workflow"]}
    assert {k for k, v in summary.items() if v is not None} <= present
    if summary["resume"] and summary["resume"]["resume_score"] is not None:
        assert 0 <= summary["resume"]["resume_score"] <= 5
    web = summary["web_interview"]
    if web and web["score"] is not None:
        assert 0 <= web["score"] <= 100 and web["highlights"]
        assert "X-Amz-Signature=" in web["audio_recording_link"]
    if summary["form"]:
        assert summary["form"]["questions_answered"] <= summary["form"]["total_questions"]


def test_candidates_look_like_the_api(sim_tenant: Tenant) -> None:
    postings = {p["id"]: p for p in sim_tenant.postings()}
    records = list(sim_tenant.truth())
    ids = [r["interview_id"] for r in records]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[0-9A-F]{16}", i) for i in ids)
    assert {r["status"] for r in records} == CANDIDATE_STATUSES
    postings_of: dict[str, set[str]] = defaultdict(set)
    for record in records:
        CandidateResponse.model_validate(record)
        posting = postings[record["posting_id"]]
        _check_workflow(record, posting)
        _check_summary(record, posting)
        scored = record["status"] in ("completed", "shortlisted", "dismissed")
        assert (record["score"] is not None) == scored
        assert record["shortlisted"] == (record["status"] == "shortlisted")
        assert record["dismissed"] == (record["status"] == "dismissed")
        if record["candidate_id"] is not None:
            assert record["candidate_id"].startswith("cand_")
            postings_of[record["candidate_id"]].add(record["posting_id"])
        if record["interview_url"] is not None:
            assert record["interview_url"].endswith(f"/i/{record['interview_id']}")
        assert record["metadata"] is None or all(isinstance(v, str) for v in record["metadata"].values())
    assert any(r["candidate_id"] is None for r in records)
    assert any(len(p) > 1 for p in postings_of.values()), "some people applied to several postings"
    assert any(r["metadata"] is None for r in records) and any(r["data"] is None for r in records)
    assert any(r["interviewed_at"] is not None for r in records)
    wide = [r for r in records if (r["data"] or {}).get("ats", {}).get("application_id", 0) > 2**64]
    assert wide, "some data carries an integer wider than 64 bits"


def test_created_at_has_bulk_ingests_boundaries_empty_days_and_weekday_seasonality(sim_tenant: Tenant) -> None:
    spec = sim_tenant.spec
    start = spec.start_epoch
    for posting_id, records in by_posting(sim_tenant).items():
        created = [r["created_at"] for r in records]
        assert created == sorted(created)
        assert all(start <= c < spec.end_epoch for c in created)
        # bulk ingests: 20-300 candidates on one whole second (a boundary instant may join one)
        bulk = {t: n for t, n in Counter(created).items() if n >= 20}
        assert bulk and all(n <= 310 and t == int(t) for t, n in bulk.items()), posting_id
        assert max(bulk.values()) > 100, "a bulk ingest bigger than one page"
        assert sum(c != int(c) for c in created) > len(created) / 2  # the rest has microseconds
        seconds_of_day = {round(c - start) % DAY if c == int(c) else None for c in created}
        fractions = {round((c - start) % DAY, 3) for c in created}
        assert 0 in seconds_of_day and 86399.5 in fractions and 86399.999 in fractions
        days = Counter(int((c - start) // DAY) for c in created)
        n_days = (spec.end - spec.start).days + 1
        empty = [d for d in range(n_days) if d not in days]
        assert 0.05 * n_days <= len(empty) <= 0.2 * n_days
        weekday, weekend = [], []
        for d in range(n_days):
            (weekend if date.fromordinal(spec.start.toordinal() + d).weekday() >= 5 else weekday).append(days[d])
        assert sum(weekday) / len(weekday) > 1.5 * sum(weekend) / len(weekend)


def test_clock_advances_candidates_and_reveals_new_ones() -> None:
    tenant = Tenant(TINY)
    assert tenant.now == TINY.end_epoch  # default: midnight after the last day
    mid = epoch("2026-02-10T00:00:00")
    tenant.set_now(mid)
    before = {r["interview_id"]: r for r in tenant.truth()}
    assert before and all(r["created_at"] <= mid for r in before.values())
    assert tenant.advance(14 * DAY) == mid + 14 * DAY
    after = {r["interview_id"]: r for r in tenant.truth()}
    assert len(after) > len(before) and set(before) < set(after)
    changed = [i for i in before if before[i]["status"] != after[i]["status"]]
    newly_scored = [i for i in before if before[i]["score"] is None and after[i]["score"] is not None]
    assert changed and newly_scored
    assert list(tenant.truth(as_of=mid)) == list(before.values())  # a pure function of time


def test_planned_deletions_remove_candidates_on_the_clock_from_every_answer() -> None:
    spec = TenantSpec(seed=3, postings=4, candidates_per_posting=(300, 400), deleted_share=0.2)
    tenant = Tenant(spec)
    early = epoch("2026-01-20T00:00:00")
    created_by_early = {
        r["interview_id"] for r in Tenant(TenantSpec(**{**spec.__dict__, "deleted_share": 0.0})).truth(early)
    }
    at_early = {r["interview_id"] for r in tenant.truth(early)}
    at_end = {r["interview_id"] for r in tenant.truth()}
    gone = at_early - at_end  # existed on Jan 20, erased by the end of March
    assert gone and at_early <= created_by_early and len(at_early) > 0.9 * len(created_by_early)
    get = make_get(create_app(tenant, SIM_KEY))
    posting_id = next(iter({r["posting_id"] for r in tenant.truth()}))
    paged, responses = page_all(get, posting_id, limit=7)
    expected = [r for r in tenant.truth() if r["posting_id"] == posting_id]
    assert paged == expected and responses[0].json()["pagination"]["total_count"] == len(expected)
    # a candidate erased since still works as a cursor (it is a position in the ordering)
    erased = next(r for r in tenant.truth(early) if r["interview_id"] in gone)
    after_it = get(candidates_path(erased["posting_id"]), {"starting_after": erased["interview_id"], "limit": 5})
    assert after_it.status_code == 200


def test_explicit_deletions_of_candidates_and_postings() -> None:
    tenant = Tenant(TINY)
    get = make_get(create_app(tenant, SIM_KEY))
    posting_id, records = busiest(tenant)
    victims = [records[0]["interview_id"], records[5]["interview_id"]]
    post = lambda body: asyncio.run(  # noqa: E731
        sim_requests(
            create_app(tenant, SIM_KEY), [("POST", "/_sim/delete", {"json": body, "headers": {"X-API-KEY": SIM_KEY}})]
        )
    )[0]
    assert post({"interview_ids": [*victims, "ffffffffffffffff"]}).json() == {"deleted_candidates": 2}
    paged, _ = page_all(get, posting_id, limit=100)
    assert len(paged) == len(records) - 2 and not {r["interview_id"] for r in paged} & set(victims)
    assert post({"posting_id": posting_id}).json() == {"deleted_posting": posting_id}
    assert get(candidates_path(posting_id)).status_code == 404
    assert posting_id not in {p["id"] for p in get("/api/v2/postings", {"limit": 100}).json()["data"]}
    assert posting_id not in {r["posting_id"] for r in tenant.truth()}
    assert post({"posting_id": posting_id}).status_code == 404


# --- HTTP: auth, errors, validation ---------------------------------------------------------------


def test_health_needs_no_key(sim_get: SimGet) -> None:
    response = sim_get("/health", key=None)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_missing_or_wrong_key_is_401_and_never_echoed(sim_get: SimGet, sim_tenant: Tenant) -> None:
    wrong = "sk_live_WRONG-KEY-1234567"
    expected = {
        "error": {"type": "authentication_error", "code": "invalid_api_key", "message": "Invalid or missing API key."}
    }
    posting_id = sim_tenant.posting_ids()[0]
    for path in ("/api/v2/postings", "/api/v2/postings/list", candidates_path(posting_id), "/_sim/stats"):
        for response in (sim_get(path, key=None), sim_get(path, key=wrong)):
            assert response.status_code == 401 and response.json() == expected
            assert wrong not in response.text and wrong not in str(response.headers)
        bearer = sim_get(path, key=None, headers={"Authorization": f"Bearer {SIM_KEY}"})
        assert bearer.status_code == 200
        assert sim_get(path, key=None, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401


def test_unknown_posting_is_404_naming_it(sim_get: SimGet) -> None:
    response = sim_get(candidates_path("NOPE1234"))
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such posting: 'NOPE1234'",
            "param": "posting_id",
        }
    }


@pytest.mark.parametrize(
    ("limit", "error_type", "msg"),
    [
        ("0", "greater_than_equal", "Input should be greater than or equal to 1"),
        ("101", "less_than_equal", "Input should be less than or equal to 100"),
        ("abc", "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_bad_limit_is_a_fastapi_422(sim_get: SimGet, sim_tenant: Tenant, limit: str, error_type: str, msg: str) -> None:
    for path in (candidates_path(sim_tenant.posting_ids()[0]), "/api/v2/postings", "/api/v2/postings/list"):
        response = sim_get(path, {"limit": limit})
        assert response.status_code == 422
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["query", "limit"] and detail["type"] == error_type
        assert detail["msg"] == msg and detail["input"] == limit


def test_bad_dates_and_cursors_are_400(sim_get: SimGet, sim_tenant: Tenant) -> None:
    posting_id = busiest(sim_tenant)[0]
    path = candidates_path(posting_id)
    iso = "Use an ISO-8601 datetime such as 2026-03-13T00:00:00Z or Unix epoch seconds."
    cases = [
        (
            {"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
            ("invalid_date_range", "created_before", "created_before must be greater than or equal to created_after."),
        ),
        (
            {"created_after": "yesterday"},
            ("invalid_param", "created_after", f"Invalid created_after: 'yesterday'. {iso}"),
        ),
        (
            {"created_before": "2026-13-45"},
            ("invalid_param", "created_before", f"Invalid created_before: '2026-13-45'. {iso}"),
        ),
        (
            {"starting_after": "FFFFFFFFFFFFFFFF"},
            (
                "invalid_cursor",
                "starting_after",
                f"No candidate with interview_id 'FFFFFFFFFFFFFFFF' in posting '{posting_id}'.",
            ),
        ),
        (
            {"starting_after": "not-a-cursor"},
            (
                "invalid_cursor",
                "starting_after",
                f"No candidate with interview_id 'not-a-cursor' in posting '{posting_id}'.",
            ),
        ),
    ]
    for params, said in cases:
        response = sim_get(path, params)
        assert response.status_code == 400, params
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert (error["code"], error["param"], error["message"]) == said
    assert sim_get("/api/v2/postings", {"starting_after": "NOPE1234"}).json()["error"]["code"] == "invalid_cursor"


# --- HTTP: bounds and paging ----------------------------------------------------------------------


def test_bounds_are_inclusive_in_every_accepted_format(sim_get: SimGet, sim_tenant: Tenant) -> None:
    posting_id, records = busiest(sim_tenant)
    midnight = epoch("2026-01-02T00:00:00")  # a boundary candidate sits exactly here
    half = epoch("2026-01-01T23:59:59.5")  # and here
    at_midnight = {r["interview_id"] for r in records if r["created_at"] == midnight}
    at_half = {r["interview_id"] for r in records if r["created_at"] == half}
    assert at_midnight and at_half
    spellings = {
        midnight: ["2026-01-02T00:00:00Z", "2026-01-02T02:00:00+02:00", "2026-01-01T19:00:00-05:00",
                   "2026-01-02T00:00:00", "2026-01-02T00:00:00.000000Z", "1767312000", "1767312000.0"],
        half: ["2026-01-01T23:59:59.5Z", "2026-01-02T01:59:59.500+02:00", "2026-01-01T23:59:59.5", "1767311999.5"],
    }  # fmt: skip
    for instant, texts in spellings.items():
        expected = at_midnight if instant == midnight else at_half
        for text in texts:
            body = sim_get(candidates_path(posting_id), {"created_after": text, "created_before": text}).json()
            assert {c["interview_id"] for c in body["data"]} == expected, text
            assert body["pagination"]["total_count"] == len(expected)
    # one whole day: both ends included, the next midnight excluded by an end of 23:59:59.999
    day = [r for r in records if epoch("2026-01-02T00:00:00") <= r["created_at"] <= epoch("2026-01-02T23:59:59.999")]
    assert day[-1]["created_at"] == epoch("2026-01-02T23:59:59.999")
    got, _ = page_all(
        sim_get, posting_id, created_after="2026-01-02T00:00:00Z", created_before="2026-01-02T23:59:59.999Z", limit=100
    )
    assert got == day
    shorter, _ = page_all(
        sim_get, posting_id, created_after="2026-01-02", created_before="2026-01-02T23:59:59.998Z", limit=100
    )
    assert shorter == day[:-1]


def test_paging_a_whole_posting_returns_the_truth_once(sim_get: SimGet, sim_tenant: Tenant) -> None:
    posting_id, expected = busiest(sim_tenant)
    assert len(expected) >= 3000
    got, responses = page_all(sim_get, posting_id, limit=100)
    assert got == expected  # same records, same order, nothing altered
    assert len(responses) == math.ceil(len(expected) / 100)
    assert {r.json()["pagination"]["total_count"] for r in responses} == {len(expected)}
    assert responses[0].json()["pagination"]["url"] == candidates_path(posting_id)
    default = sim_get(candidates_path(posting_id)).json()
    assert len(default["data"]) == 20 and default["pagination"]["has_more"]


def test_paging_through_a_bulk_ingest_sharing_one_created_at(sim_get: SimGet, sim_tenant: Tenant) -> None:
    posting_id, records = busiest(sim_tenant)
    instant, size = Counter(r["created_at"] for r in records).most_common(1)[0]
    assert size > 100
    text = datetime.fromtimestamp(instant, UTC).isoformat()
    got, responses = page_all(sim_get, posting_id, created_after=text, created_before=text, limit=7)
    ids = [c["interview_id"] for c in got]
    assert len(ids) == size and ids == sorted(ids)  # ties ordered by interview_id
    assert len(responses) == math.ceil(size / 7)
    assert {r.json()["pagination"]["total_count"] for r in responses} == {size}


def test_a_cursor_outside_the_filter_still_positions_the_page(sim_get: SimGet, sim_tenant: Tenant) -> None:
    posting_id, records = busiest(sim_tenant)
    window = [r for r in records if epoch("2026-02-01T00:00:00") <= r["created_at"] <= epoch("2026-02-03T00:00:00")]
    early_cursor = records[0]["interview_id"]  # created long before the window
    params = {"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-02-03T00:00:00Z", "limit": 5}
    body = sim_get(candidates_path(posting_id), {**params, "starting_after": early_cursor}).json()
    assert body["data"] == window[:5] and body["pagination"]["total_count"] == len(window)
    late_cursor = records[-1]["interview_id"]
    body = sim_get(candidates_path(posting_id), {**params, "starting_after": late_cursor}).json()
    assert body["data"] == [] and body["pagination"]["has_more"] is False


def test_postings_endpoints_page_and_search(sim_get: SimGet, sim_tenant: Tenant) -> None:
    postings = sim_tenant.postings()
    for path in ("/api/v2/postings", "/api/v2/postings/list"):
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            body = sim_get(path, {"limit": 2, **({"starting_after": cursor} if cursor else {})}).json()
            assert body["pagination"]["total_count"] == len(postings) and body["pagination"]["url"] == path
            seen.extend(body["data"])
            if not body["pagination"]["has_more"]:
                break
            cursor = body["data"][-1]["id"]
        if path.endswith("/list"):
            assert seen == [
                {"object": "posting_summary", "id": p["id"], "title": p["title"], "name": p["name"]} for p in postings
            ]
        else:
            assert seen == postings
    word = postings[0]["title"].split()[0]
    body = sim_get("/api/v2/postings", {"search": word.upper()}).json()
    assert body["data"] == [p for p in postings if word.lower() in p["title"].lower()]
    assert body["pagination"]["total_count"] == len(body["data"]) >= 1
    assert sim_get("/api/v2/postings/list", {"search": "no such title zzz"}).json()["data"] == []


# --- rate limit -----------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_and_headers(sim_tenant: Tenant) -> None:
    app = create_app(sim_tenant, SIM_KEY, Faults(rate_limit=3, rate_window_s=1.0))
    get = make_get(app)
    calls = [("GET", "/api/v2/postings/list", {"headers": {"X-API-KEY": SIM_KEY}})] * 5
    responses = asyncio.run(sim_requests(app, calls))
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0", "0"]
    assert all(r.headers["X-RateLimit-Limit"] == "3" and int(r.headers["X-RateLimit-Reset"]) >= 0 for r in responses)
    limited = responses[3]
    assert limited.headers["Retry-After"] == "1"
    assert limited.json() == {
        "error": {
            "type": "rate_limit_error",
            "code": "rate_limit_exceeded",
            "message": "Rate limit exceeded: 3 requests per 1s.",
        }
    }
    assert get("/health", key=None).status_code == 200  # not rate limited
    time.sleep(1.05)
    assert get("/api/v2/postings/list").status_code == 200
    stats = get("/_sim/stats").json()
    assert stats["rate_limited"] == 2 and stats["statuses"] == {"200": 4, "429": 2}
    assert stats["max_requests_in_window"] == 3 and stats["max_attempts_in_window"] == 5


def test_rejected_requests_do_not_count_toward_the_window() -> None:
    now = [0.0]
    log = SlidingWindowLog(2, 10.0, clock=lambda: now[0])
    decisions = []
    for t in (0.0, 1.0, 2.0, 9.5, 10.2, 10.4, 11.5):
        now[0] = t
        decisions.append(log.hit("k"))
    assert [d.allowed for d in decisions] == [True, True, False, False, True, False, True]
    assert decisions[2].retry_after_s == 8 and decisions[3].retry_after_s == 1  # ceil, at least 1
    assert log.max_in_window == 2


# --- transport faults -----------------------------------------------------------------------------


def _candidates_once(tenant: Tenant, faults: Faults, timeout: float = 5.0) -> tuple[httpx.Response, float]:
    posting_id = tenant.posting_ids()[0]

    async def main() -> httpx.Response:
        transport = asgi_transport(create_app(tenant, SIM_KEY, faults))
        async with httpx.AsyncClient(transport=transport, base_url=SIM_BASE_URL, timeout=timeout) as client:
            return await client.get(candidates_path(posting_id), headers={"X-API-KEY": SIM_KEY})

    started = time.perf_counter()
    response = asyncio.run(main())
    return response, time.perf_counter() - started


def _not_json(response: httpx.Response) -> bool:
    try:
        json.loads(response.content)
    except ValueError:
        return True
    return False


def test_server_errors(sim_tenant: Tenant) -> None:
    statuses = set()
    for seed in range(8):
        response, _ = _candidates_once(sim_tenant, Faults(error_rate=1.0, seed=seed))
        statuses.add(response.status_code)
        assert response.json()["error"]["type"] == "api_error"
        assert response.json()["error"]["code"] == "internal_error"
    assert statuses == {500, 502, 503}  # the seeds are fixed: every documented 5xx comes up


def test_dropped_connection_is_a_remote_protocol_error_in_process(sim_tenant: Tenant) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        _candidates_once(sim_tenant, Faults(drop_rate=1.0))


def test_truncated_and_malformed_bodies_are_200s_that_are_not_json(sim_tenant: Tenant) -> None:
    truncated, _ = _candidates_once(sim_tenant, Faults(truncate_rate=1.0))
    assert truncated.status_code == 200 and _not_json(truncated)
    for seed in range(6):
        garbled, _ = _candidates_once(sim_tenant, Faults(malformed_rate=1.0, seed=seed))
        assert garbled.status_code == 200 and _not_json(garbled)


def test_stall_and_latency_delay_the_response(sim_tenant: Tenant) -> None:
    response, elapsed = _candidates_once(sim_tenant, Faults(stall_rate=1.0, stall_s=0.3))
    assert response.status_code == 200 and elapsed >= 0.3
    with pytest.raises(httpx.ReadTimeout):  # the in-process transport honours client timeouts
        _candidates_once(sim_tenant, Faults(stall_rate=1.0, stall_s=2.0), timeout=0.1)
    response, elapsed = _candidates_once(sim_tenant, Faults(latency_ms=60))
    assert response.status_code == 200 and elapsed >= 0.06


def test_stuck_cursor_and_total_count_offset(faulty_get: Callable[[Faults], SimGet], sim_tenant: Tenant) -> None:
    posting_id, records = busiest(sim_tenant)
    get = faulty_get(Faults(stuck_cursor=True, total_count_offset=7))
    first = get(candidates_path(posting_id), {"limit": 5}).json()
    again = get(candidates_path(posting_id), {"limit": 5, "starting_after": first["data"][-1]["interview_id"]}).json()
    assert first == again and first["data"] == records[:5] and first["pagination"]["has_more"] is True
    assert first["pagination"]["total_count"] == len(records) + 7
    stats = get("/_sim/stats").json()
    assert stats["faults"] == {"stuck_cursor": 1, "total_count_offset": 2}


def test_faults_never_touch_health_or_admin_routes(faulty_get: Callable[[Faults], SimGet]) -> None:
    everything = Faults(error_rate=1.0, drop_rate=1.0, truncate_rate=1.0, malformed_rate=1.0, rate_limit=1)
    get = faulty_get(everything)
    for _ in range(3):
        assert get("/health", key=None).json() == {"status": "ok"}
        assert get("/_sim/stats").status_code == 200
    assert get("/_sim/stats").json()["requests_total"] == 0


# --- data-shape faults ----------------------------------------------------------------------------


def test_data_shape_faults_change_only_what_they_name() -> None:
    shape = {"seed": 3, "postings": 4, "candidates_per_posting": (80, 120)}
    base = list(Tenant(TenantSpec(**shape)).truth())
    extra = list(Tenant(TenantSpec(**shape, extra_fields=True)).truth())
    nulls = list(Tenant(TenantSpec(**shape, null_objects_share=1.0)).truth())
    strings = list(Tenant(TenantSpec(**shape, score_as_string=True)).truth())
    assert len(base) == len(extra) == len(nulls) == len(strings)

    for plain, wider in zip(base, extra, strict=True):
        parsed = CandidateResponse.model_validate(wider)
        assert {"sentiment", "source_channel"} <= set(parsed.unknown_fields())
        assert {k: wider[k] for k in plain}.keys() == plain.keys() and wider["created_at"] == plain["created_at"]
        if wider["workflow"] is not None:
            assert "current_step" in wider["workflow"] and all("attempts" in s for s in wider["workflow"]["steps"])
            assert parsed.workflow is not None and "attempts" in parsed.workflow.steps[0].unknown_fields()
    assert all("department" in p for p in Tenant(TenantSpec(**shape, extra_fields=True)).postings())

    nulled = {"workflow", "agent_summary"}
    for plain, holey in zip(base, nulls, strict=True):
        assert holey["workflow"] is None or holey["agent_summary"] is None
        assert {k: v for k, v in holey.items() if k not in nulled} == {
            k: v for k, v in plain.items() if k not in nulled
        }
    assert any(r["workflow"] is None and r["agent_summary"] is not None for r in nulls)

    for plain, stringy in zip(base, strings, strict=True):
        if plain["score"] is None:
            assert stringy["score"] is None
        else:
            assert isinstance(stringy["score"], str) and float(stringy["score"]) == plain["score"]
    assert any(r["score"] is not None for r in strings)


# --- admin routes ---------------------------------------------------------------------------------


def test_admin_stats_clock_and_truth() -> None:
    tenant = Tenant(TINY)
    tenant.set_now(epoch("2026-02-01T00:00:00"))
    app = create_app(tenant, SIM_KEY)
    headers = {"X-API-KEY": SIM_KEY}
    posting_id = busiest(tenant)[0]
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", candidates_path(posting_id), {"headers": headers, "params": {"limit": 100}}),
        ("GET", "/api/v2/postings", {"headers": headers}),
        ("GET", "/_sim/stats", {"headers": headers}),
        ("GET", "/_sim/truth", {"headers": headers}),
        ("POST", "/_sim/clock", {"headers": headers, "json": {"advance": 30 * DAY}}),
        ("GET", candidates_path(posting_id), {"headers": headers, "params": {"limit": 100}}),
        ("GET", "/_sim/truth", {"headers": headers}),
        ("POST", "/_sim/stats/reset", {"headers": headers}),
        ("POST", "/_sim/clock", {"headers": headers, "json": {"now": "2026-01-15T00:00:00Z"}}),
        ("POST", "/_sim/clock", {"headers": headers, "json": {"later": 1}}),
        ("POST", "/_sim/clock", {"headers": {"X-API-KEY": "nope"}, "json": {"advance": 1}}),
    ]
    responses = asyncio.run(sim_requests(app, calls))
    early, _, stats, truth_early, clock, late, truth_late, reset, set_now, bad, unauthorized = responses
    assert stats.json()["requests_by_route"] == {
        "GET /api/v2/postings": 1,
        "GET /api/v2/postings/{posting_id}/candidates": 1,
    }
    assert stats.json()["statuses"] == {"200": 2} and stats.json()["max_requests_in_window"] == 2
    assert clock.json() == {"now": epoch("2026-03-03T00:00:00")}
    for answer, as_of in ((early, "2026-02-01T00:00:00"), (late, "2026-03-03T00:00:00")):
        created = [r for r in tenant.truth(epoch(as_of)) if r["posting_id"] == posting_id]
        assert answer.json()["pagination"]["total_count"] == len(created) > 0
    before, after = (
        [json.loads(line) for line in gzip.decompress(r.content).splitlines()] for r in (truth_early, truth_late)
    )
    assert before == list(tenant.truth(epoch("2026-02-01T00:00:00")))
    assert after == list(tenant.truth(epoch("2026-03-03T00:00:00")))
    status_after = {r["interview_id"]: r["status"] for r in after}
    assert any(status_after[r["interview_id"]] != r["status"] for r in before)
    assert reset.json()["requests_total"] == 0 and reset.json()["statuses"] == {}
    assert set_now.json() == {"now": epoch("2026-01-15T00:00:00")} and tenant.now == set_now.json()["now"]
    assert bad.status_code == 400 and unauthorized.status_code == 401


def test_admin_latency_slows_every_later_request() -> None:
    app = create_app(Tenant(TINY), SIM_KEY)
    headers = {"X-API-KEY": SIM_KEY}

    def postings_after(ms: Any) -> tuple[httpx.Response, float]:
        calls = [("POST", "/_sim/latency", {"headers": headers, "json": {"ms": ms}})]
        set_latency = asyncio.run(sim_requests(app, calls))[0]
        started = time.perf_counter()
        asyncio.run(sim_requests(app, [("GET", "/api/v2/postings", {"headers": headers})]))
        return set_latency, time.perf_counter() - started

    slow, slow_s = postings_after(300)
    assert slow.json() == {"latency_ms": 300.0} and slow_s >= 0.3  # a lower bound: a busy machine only adds
    assert postings_after(0)[0].json() == {"latency_ms": 0.0}
    assert [postings_after(bad)[0].status_code for bad in (-1, "x", None)] == [400, 400, 400]


# --- real sockets ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_loopback_server_answers_and_really_drops_connections(sim_tenant: Tenant) -> None:
    posting_id, records = busiest(sim_tenant)
    headers = {"X-API-KEY": SIM_KEY}
    with (
        serve_in_thread(create_app(sim_tenant, SIM_KEY)) as base_url,
        httpx.Client(base_url=base_url, headers=headers, trust_env=False) as client,
    ):
        assert client.get("/health").json() == {"status": "ok"}
        body = client.get(candidates_path(posting_id), params={"limit": 100}).json()
        assert body["data"] == records[:100]
    faults = Faults(drop_rate=0.5, truncate_rate=1.0, seed=2)
    outcomes: Counter[str] = Counter()
    with (
        serve_in_thread(create_app(sim_tenant, SIM_KEY, faults)) as base_url,
        httpx.Client(base_url=base_url, headers=headers, trust_env=False) as client,
    ):
        for _ in range(8):
            try:
                response = client.get(candidates_path(posting_id))
            except (httpx.RemoteProtocolError, httpx.ReadError):
                outcomes["dropped"] += 1
                continue
            assert response.status_code == 200 and _not_json(response)
            assert response.headers.get("transfer-encoding") == "chunked"
            outcomes["truncated"] += 1
    assert outcomes["dropped"] and outcomes["truncated"]


@pytest.mark.integration
def test_cli_serve_prints_its_url_and_serves(tmp_path: Path) -> None:
    key = "sk_test_cli-SECRET-0042"
    command = [sys.executable, "-c", "from heymilo_pipeline.simulator.cli import main; main()", "serve"]
    command += ["--port", "0", "--seed", "3", "--postings", "4", "--min-candidates", "20", "--max-candidates", "40"]
    env = {**os.environ, "HEYMILO_API_KEY": key}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.fullmatch(
            r"HeyMilo simulator on (http://127\.0\.0\.1:\d+) \(4 postings, \d+ candidates, seed 3\)\n", line
        )
        assert match, line
        deadline = time.monotonic() + 10
        while True:
            try:
                health = httpx.get(f"{match.group(1)}/health", trust_env=False, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert health.json() == {"status": "ok"}
        postings = httpx.get(f"{match.group(1)}/api/v2/postings", headers={"X-API-KEY": key}, trust_env=False)
        assert postings.status_code == 200 and len(postings.json()["data"]) == 4
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert key not in line + out + err


def test_cli_truth_writes_the_same_file_as_the_library(tmp_path: Path) -> None:
    out = tmp_path / "truth.jsonl.gz"
    args = ["truth", "--seed", "3", "--postings", "4", "--min-candidates", "60", "--max-candidates", "120"]
    result = CliRunner().invoke(cli_main, [*args, "--now", "2026-03-01T00:00:00Z", "--out", str(out)])
    assert result.exit_code == 0, result.output
    tenant = Tenant(TINY)
    tenant.set_now(epoch("2026-03-01T00:00:00"))
    tenant.write_truth(tmp_path / "expected.jsonl.gz")
    assert out.read_bytes() == (tmp_path / "expected.jsonl.gz").read_bytes()
    assert f"wrote {tenant.candidate_count()} candidates" in result.output


# --- interview results (getInterviewData) -------------------------------------------------------------


RESULT_SECTIONS = ("web_interview", "resume", "sms", "form")
SECTION = {"web_interview": "web_interview", "resume": "resume", "conversational_sms": "sms", "form": "form"}


def failures(data: dict[str, Any]) -> list[str]:
    """What in these results disqualifies: a failed dealbreaker, knockout question or eligibility criterion."""
    out = []
    if data["sms"]:
        out += [f"sms {c['criteria_id']}" for c in data["sms"]["criteria"] if c["is_dealbreaker"] and not c["passed"]]
    if data["form"]:
        out += [f"form {q['question_id']}" for q in data["form"]["questions"] if q["is_knockout"] and not q["passed"]]
    if data["resume"] and not data["resume"]["is_eligible"]:
        out += [f"resume {c['criteria_id']}" for c in data["resume"]["eligibility_criteria"] if not c["passed"]]
    return out


def test_interview_results_agree_with_the_candidate_listing() -> None:
    tenant = Tenant(TenantSpec(seed=5, postings=7, candidates_per_posting=(150, 250)))
    types = {(p["id"], step["id"]): step["type"] for p in tenant.postings() for step in p["workflow"]}
    statuses: Counter[str] = Counter()
    for record in tenant.truth():
        data = tenant.interview_data(record["interview_id"])
        assert data == tenant.interview_data(record["interview_id"].lower())  # ids are hex, either case
        summary = record["agent_summary"] or {}
        statuses[data["status"]] += 1
        if record["status"] in ("pending", "in_progress"):
            assert data["status"] == "not_ready" and not any(data[k] for k in (*RESULT_SECTIONS, "cheat_detection"))
            continue
        assert (data["status"], data["score"], data["workflow"]) == (
            record["status"],
            record["score"],
            record["workflow"],
        )
        assert {k for k in RESULT_SECTIONS if data[k]} == {k for k in RESULT_SECTIONS if summary.get(k)}
        if web := data["web_interview"]:
            assert web["match_score"] == round(summary["web_interview"]["score"])
            assert [q["rank"] for q in web["scorecard"]] == list(range(1, len(web["scorecard"]) + 1))
            assert all(1 <= q["score"] <= 10 and 1 <= q["score_weight"] <= 10 for q in web["scorecard"])
            assert 0 <= web["speech_score"] <= 5 and web["transcript"][0]["speaker"] == "Interviewer"
        if resume := data["resume"]:
            assert resume["overall_score"] == round(summary["resume"]["resume_score"] * 20, 1)
            assert resume["is_eligible"] == summary["resume"]["is_eligible"]
            assert all(0 <= c["score"] <= 10 and 0 <= c["confidence"] <= 1 for c in resume["score_criteria"])
        if sms := data["sms"]:
            assert {c["criteria_text"] for c in sms["criteria"] if c["passed"]} == set(
                summary["sms"]["criteria_passed"]
            )
            assert {c["criteria_text"] for c in sms["criteria"] if not c["passed"]} == set(
                summary["sms"]["criteria_failed"]
            )
            assert sms["is_eligible"] == summary["sms"]["is_eligible"]
            assert sum(m["role"] == "agent" for m in sms["transcript"]) == sms["messages_sent"]
        if form := data["form"]:
            assert len(form["questions"]) == summary["form"]["questions_answered"]
            assert (form["overall_status"] == "passed") == summary["form"]["is_complete"]
        if cheat := data["cheat_detection"]:
            assert cheat["overall_ranking"] is None or 1 <= cheat["overall_ranking"] <= 5
        # A knocked-out candidate failed something disqualifying at the step that knocked it out; no one else did.
        knocked = [
            types[(record["posting_id"], st["step_id"])] for st in record["workflow"]["steps"] if st["knocked_out"]
        ]
        found = failures(data)
        if knocked == ["web_interview"]:
            assert not found and data["web_interview"]["match_score"] <= 30
        elif knocked:
            assert found and {f.split()[0] for f in found} == {SECTION[knocked[0]]}, (knocked, found)
        else:
            assert not found and record["status"] != "knocked_out"
    assert statuses["not_ready"] and statuses["knocked_out"] and statuses["completed"] + statuses["shortlisted"]


def test_interview_results_answer_404_for_erased_and_unknown_candidates() -> None:
    tenant = Tenant(TenantSpec(seed=5, postings=5, candidates_per_posting=(20, 40)))
    records = list(tenant.truth())
    app = create_app(tenant, SIM_KEY)
    get = make_get(app)
    gone = records[0]["interview_id"]
    assert get(f"/api/v2/interviews/{gone}/data").status_code == 200
    tenant.delete_candidates([gone])
    erased = get(f"/api/v2/interviews/{gone}/data")
    assert erased.status_code == 404 and erased.json()["error"]["code"] == "resource_missing"
    posting = next(r["posting_id"] for r in records if r["posting_id"] != records[0]["posting_id"])
    tenant.delete_posting(posting)
    other = next(r["interview_id"] for r in records if r["posting_id"] == posting)
    assert get(f"/api/v2/interviews/{other}/data").status_code == 404
    assert get("/api/v2/interviews/FFFFFFFFFFFFFFFF/data").status_code == 404
