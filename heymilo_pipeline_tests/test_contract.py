"""The simulator's answers validated against the official HeyMilo OpenAPI document.

Each response is checked against the schema the spec declares for that operation and status code,
so an undocumented status code fails too. The spec is read from ``../shared/reference`` beside the
repository (it is reference material, never copied into the project); without it the module skips.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, create_app
from heymilo_pipeline_tests.factories import SIM_KEY, SimGet, make_get, sim_requests

SPEC_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "heymilo-openapi.json"
SPEC_URI = "urn:heymilo:openapi"

pytestmark = pytest.mark.skipif(not SPEC_PATH.exists(), reason=f"official OpenAPI document not found at {SPEC_PATH}")

CANDIDATES = "/api/v2/postings/{posting_id}/candidates"
INTERVIEW_DATA = "/api/v2/interviews/{interview_id}/data"


@cache
def _spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@cache
def _registry() -> Registry:
    # The whole document is the root resource, so the spec's own "#/components/schemas/..." refs resolve.
    return Registry().with_resource(SPEC_URI, Resource.from_contents(_spec(), default_specification=DRAFT202012))


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@cache
def _validator(ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{SPEC_URI}#/{ref}"}, registry=_registry())


def response_validator(path: str, status: int) -> Draft202012Validator:
    """The schema the spec declares for ``GET path`` answering ``status`` (KeyError if undeclared)."""
    assert "application/json" in _spec()["paths"][path]["get"]["responses"][str(status)]["content"]
    return _validator(_pointer("paths", path, "get", "responses", str(status), "content", "application/json", "schema"))


def schema_validator(name: str) -> Draft202012Validator:
    return _validator(_pointer("components", "schemas", name))


def assert_valid(validator: Draft202012Validator, instance: Any) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def check(response: httpx.Response, path: str) -> None:
    assert response.headers["content-type"].startswith("application/json")
    assert_valid(response_validator(path, response.status_code), response.json())


def test_candidate_pages_match_the_spec(sim_get: SimGet, sim_tenant: Tenant) -> None:
    for posting_id in sim_tenant.posting_ids():
        response = sim_get(f"/api/v2/postings/{posting_id}/candidates", {"limit": 100})
        assert response.status_code == 200
        check(response, CANDIDATES)
        cursor = response.json()["data"][-1]["interview_id"] if response.json()["data"] else None
        if cursor:
            window = {"starting_after": cursor, "created_after": "2026-02-01T00:00:00Z", "created_before": "1772323200"}
            check(sim_get(f"/api/v2/postings/{posting_id}/candidates", window), CANDIDATES)


def test_postings_and_summaries_match_the_spec(sim_get: SimGet) -> None:
    for path in ("/api/v2/postings", "/api/v2/postings/list"):
        response = sim_get(path, {"limit": 100})
        assert response.status_code == 200 and response.json()["data"]
        check(response, path)
        check(sim_get(path, {"limit": 1, "search": "a"}), path)
    check(sim_get("/health", key=None), "/health")


def test_error_bodies_match_the_spec(sim_get: SimGet, sim_tenant: Tenant) -> None:
    candidates = f"/api/v2/postings/{sim_tenant.posting_ids()[0]}/candidates"
    cases = [
        (sim_get(candidates, key=None), 401),
        (sim_get(candidates, key="sk_wrong"), 401),
        (sim_get("/api/v2/postings", key=None), 401),
        (sim_get("/api/v2/postings/ZZZZ0000/candidates"), 404),
        (sim_get(candidates, {"created_after": "2026-03-01", "created_before": "2026-02-01"}), 400),
        (sim_get(candidates, {"created_after": "not a date"}), 400),
        (sim_get(candidates, {"starting_after": "0000000000000000"}), 400),
        (sim_get(candidates, {"limit": "500"}), 422),
        (sim_get(candidates, {"limit": "0"}), 422),
        (sim_get("/api/v2/postings/list", {"limit": "x"}), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        path = CANDIDATES if "/candidates" in str(response.url) else response.url.path
        check(response, path)


def test_rate_limited_answer_matches_the_spec(sim_tenant: Tenant) -> None:
    app = create_app(sim_tenant, SIM_KEY, Faults(rate_limit=1, rate_window_s=30))
    path = f"/api/v2/postings/{sim_tenant.posting_ids()[0]}/candidates"
    calls = [("GET", path, {"headers": {"X-API-KEY": SIM_KEY}})] * 2
    ok, limited = asyncio.run(sim_requests(app, calls))
    assert (ok.status_code, limited.status_code) == (200, 429)
    check(limited, CANDIDATES)
    check(make_get(app)("/api/v2/postings", key=SIM_KEY), "/api/v2/postings")  # 429 is declared there too


def test_every_candidate_of_a_full_tenant_matches_candidate_response() -> None:
    tenant = Tenant(TenantSpec())  # the default tenant, no data-shape faults
    candidate = schema_validator("CandidateResponse")
    count = 0
    for record in tenant.truth():
        assert_valid(candidate, record)
        count += 1
    assert count == tenant.candidate_count() > 5000
    posting = schema_validator("PostingResponse")
    for document in tenant.postings():
        assert_valid(posting, document)


def test_the_contract_check_catches_a_score_sent_as_a_string() -> None:
    """Sanity check of the validator itself: the score_as_string fault breaks the contract."""
    tenant = Tenant(TenantSpec(seed=3, postings=4, candidates_per_posting=(40, 60), score_as_string=True))
    candidate = schema_validator("CandidateResponse")
    scored = [r for r in tenant.truth() if r["score"] is not None]
    assert scored and all(not candidate.is_valid(r) for r in scored)


def test_interview_results_match_the_spec(sim_get: SimGet, sim_tenant: Tenant) -> None:
    """getInterviewData for candidates of every posting and status (not ready included), and its errors."""
    seen: set[str] = set()
    for posting_id in sim_tenant.posting_ids():
        page = sim_get(f"/api/v2/postings/{posting_id}/candidates", {"limit": 100}).json()["data"]
        for candidate in page[:40]:
            response = sim_get(f"/api/v2/interviews/{candidate['interview_id']}/data")
            assert response.status_code == 200, response.text
            check(response, INTERVIEW_DATA)
            seen.add(response.json()["data"]["status"])
    assert {"not_ready", "knocked_out"} <= seen and seen & {"completed", "shortlisted", "dismissed"}, seen
    cases = [
        (sim_get("/api/v2/interviews/00000000000000AB/data"), 404),
        (sim_get("/api/v2/interviews/not-an-id/data"), 404),
        (sim_get("/api/v2/interviews/00000000000000AB/data", key=None), 401),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        check(response, INTERVIEW_DATA)


def test_every_interview_result_of_a_tenant_matches_interview_data_response() -> None:
    tenant = Tenant(TenantSpec(seed=5, postings=7, candidates_per_posting=(150, 250)))
    result = schema_validator("InterviewDataResponse")
    sections: set[str] = set()
    count = 0
    for candidate in tenant.truth():
        data = tenant.interview_data(candidate["interview_id"])
        assert_valid(result, data)
        sections |= {k for k in ("web_interview", "resume", "sms", "form", "cheat_detection") if data[k]}
        count += 1
    assert count == tenant.candidate_count() > 800
    assert sections == {"web_interview", "resume", "sms", "form", "cheat_detection"}
