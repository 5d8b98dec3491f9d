"""The API client against the simulator: paging, day bounds, request counts, faults and errors.

Most tests run the simulator in-process (httpx ASGI transport); one runs it on loopback so that
dropped connections are real sockets being cut.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from heymilo_pipeline.api import errors
from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.api.windows import DayRange, day_of
from heymilo_pipeline.settings import Settings
from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, asgi_transport, create_app, serve_in_thread
from heymilo_pipeline_tests.factories import CLIENT_KEY, DAY, record
from heymilo_pipeline_tests.factories import client_settings as settings

KEY = CLIENT_KEY

SMALL = TenantSpec(
    seed=11, postings=4, start=date(2026, 1, 1), end=date(2026, 2, 28), candidates_per_posting=(150, 700)
)


@pytest.fixture(scope="module")
def small_tenant() -> Tenant:
    return Tenant(SMALL)


@pytest.fixture(scope="module")
def year_tenant() -> Tenant:
    """One posting with 5,000+ candidates over a year (plus the always-present special postings)."""
    return Tenant(
        TenantSpec(
            seed=5, postings=1, start=date(2025, 1, 1), end=date(2025, 12, 31), candidates_per_posting=(5200, 5200)
        )
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def fetch(
    tenant: Tenant,
    tmp_path: Path,
    posting_id: str,
    days: DayRange | None,
    faults: Faults | None = None,
    **overrides: Any,
):
    app = create_app(tenant, KEY, faults)
    async with HeyMiloClient(settings(tmp_path, **overrides), transport=asgi_transport(app)) as client:
        return await client.fetch_candidates(posting_id, days)


def truth_by_posting(tenant: Tenant) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in tenant.truth():
        out.setdefault(item["posting_id"], []).append(item)
    return out


def busiest(tenant: Tenant) -> tuple[str, list[dict[str, Any]]]:
    return max(truth_by_posting(tenant).items(), key=lambda item: len(item[1]))


# --- paging and bounds ---------------------------------------------------------------------------


def test_pages_a_whole_posting_each_candidate_once(small_tenant: Tenant, tmp_path: Path) -> None:
    posting_id, expected = busiest(small_tenant)
    batch = run(fetch(small_tenant, tmp_path, posting_id, None))
    ids = [c.interview_id for c in batch.candidates]
    assert len(ids) == len(set(ids)) == len(expected)
    assert batch.raw == expected  # exactly what the API returns, in its order, nothing altered
    assert batch.stats.requests == math.ceil(len(expected) / 100)
    assert batch.stats.total_count == len(expected)
    assert batch.stats.retries == 0


def test_days_partition_the_range_without_loss_or_overlap(small_tenant: Tenant, tmp_path: Path) -> None:
    """Fetch one posting day by day: the union is the whole range, no candidate is on two days,
    and each lands on the UTC day of its created_at, boundary instants included."""
    posting_id, expected = busiest(small_tenant)
    first, last = SMALL.start, SMALL.start + timedelta(days=20)

    async def per_day() -> dict[date, list[str]]:
        app = create_app(small_tenant, KEY)
        async with HeyMiloClient(settings(tmp_path), transport=asgi_transport(app)) as client:
            out = {}
            for offset in range((last - first).days + 1):
                day = first + timedelta(days=offset)
                out[day] = [
                    c.interview_id for c in (await client.fetch_candidates(posting_id, DayRange.single(day))).candidates
                ]
            return out

    got = run(per_day())
    flat = [i for ids in got.values() for i in ids]
    assert len(flat) == len(set(flat))
    want = {day: sorted(r["interview_id"] for r in expected if day_of(r["created_at"]) == day) for day in got}
    assert {day: sorted(ids) for day, ids in got.items()} == want
    assert any(not ids for ids in got.values()), "the simulator should produce an empty day"
    # the fixture must actually contain the instants this test is about
    instants = [r["created_at"] % 86400 for r in expected if first <= day_of(r["created_at"]) <= last]
    assert any(t == 0 for t in instants), "no candidate at exactly 00:00:00"
    assert any(t >= 86399.5 for t in instants), "no candidate in the last half second of a day"


def test_one_range_query_costs_ceil_n_over_100_requests(year_tenant: Tenant, tmp_path: Path) -> None:
    posting_id, expected = busiest(year_tenant)
    assert len(expected) >= 5000
    batch = run(fetch(year_tenant, tmp_path, posting_id, DayRange(date(2025, 1, 1), date(2025, 12, 31))))
    assert sorted(c.interview_id for c in batch.candidates) == sorted(r["interview_id"] for r in expected)
    assert batch.stats.requests == math.ceil(len(expected) / 100)
    assert batch.stats.pages == batch.stats.requests


def test_shared_created_at_pages_cleanly(small_tenant: Tenant, tmp_path: Path) -> None:
    """Bulk ingests give hundreds of candidates one created_at; the cursor must still walk them."""
    posting_id, expected = busiest(small_tenant)
    counts = Counter(r["created_at"] for r in expected)
    assert counts.most_common(1)[0][1] > 100, "fixture needs a bulk ingest larger than one page"
    batch = run(fetch(small_tenant, tmp_path, posting_id, None, page_size=7))
    assert sorted(c.interview_id for c in batch.candidates) == sorted(r["interview_id"] for r in expected)


def test_unknown_fields_are_kept(tmp_path: Path) -> None:
    tenant = Tenant(TenantSpec(seed=3, postings=1, candidates_per_posting=(50, 50), extra_fields=True))
    posting_id, expected = busiest(tenant)
    batch = run(fetch(tenant, tmp_path, posting_id, None))
    assert batch.raw == expected
    # every candidate keeps the two fields the spec does not know, with their values as sent
    assert [sorted(c.unknown_fields()) for c in batch.candidates] == [["sentiment", "source_channel"]] * len(expected)
    assert [c.unknown_fields()["sentiment"] for c in batch.candidates] == [r["sentiment"] for r in batch.raw]


# --- faults ------------------------------------------------------------------------------------


FAULTY = Faults(error_rate=0.08, drop_rate=0.04, truncate_rate=0.04, malformed_rate=0.04, seed=99)


def test_faults_recover_to_exactly_the_truth(year_tenant: Tenant, tmp_path: Path) -> None:
    posting_id, expected = busiest(year_tenant)
    batch = run(fetch(year_tenant, tmp_path, posting_id, DayRange(date(2025, 1, 1), date(2025, 12, 31)), FAULTY))
    assert batch.raw == expected
    assert batch.stats.retries > 0
    assert batch.stats.requests == math.ceil(len(expected) / 100) + batch.stats.retries


def test_rate_limit_429_is_survived_by_waiting(small_tenant: Tenant, tmp_path: Path) -> None:
    """The simulator allows 20 requests per second; the client is told 6000/min so it overshoots."""
    posting_id, expected = busiest(small_tenant)
    faults = Faults(rate_limit=20, rate_window_s=1.0)
    batch = run(fetch(small_tenant, tmp_path, posting_id, None, faults, page_size=10))
    assert sorted(c.interview_id for c in batch.candidates) == sorted(r["interview_id"] for r in expected)
    assert batch.stats.rate_limited > 0
    assert batch.stats.waited_seconds > 0  # Retry-After held the next request back


def test_retry_after_zero_backs_off_instead_of_burning_the_attempts(
    small_tenant: Tenant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 429 saying "Retry-After: 0" is still a 429: each wait is at least backoff_initial, doubling."""
    posting_id, expected = busiest(small_tenant)
    faults = Faults(zero_retry_after_rate=0.5, seed=3)
    with caplog.at_level(logging.WARNING, logger="heymilo_pipeline"):
        batch = run(fetch(small_tenant, tmp_path, posting_id, None, faults, backoff_initial=0.02, backoff_max=1.0))
    assert batch.raw == expected
    assert batch.stats.rate_limited > 0
    waits = [(r.args[1], r.args[3]) for r in caplog.records if "retrying in" in r.msg]  # (attempt, seconds)
    assert waits and all(seconds >= min(1.0, 0.02 * 2 ** (attempt - 1)) for attempt, seconds in waits), waits


def test_gives_up_after_max_attempts(small_tenant: Tenant, tmp_path: Path) -> None:
    posting_id, _ = busiest(small_tenant)
    days = DayRange(date(2026, 1, 5), date(2026, 1, 9))
    with pytest.raises(errors.RetriesExhaustedError) as caught:
        run(fetch(small_tenant, tmp_path, posting_id, days, Faults(error_rate=1.0), max_attempts=3))
    message = str(caught.value)
    assert posting_id in message and "2026-01-05..2026-01-09" in message and "3 attempts" in message
    assert isinstance(caught.value.last_error, errors.ServerError)


def test_stalled_responses_time_out(small_tenant: Tenant, tmp_path: Path) -> None:
    posting_id, _ = busiest(small_tenant)
    with pytest.raises(errors.RetriesExhaustedError, match=r"no complete response within 0\.2s"):
        run(
            fetch(
                small_tenant,
                tmp_path,
                posting_id,
                None,
                Faults(stall_rate=1.0, stall_s=5.0),
                max_attempts=2,
                timeout=0.2,
            )
        )


def test_a_cursor_that_does_not_advance_is_detected(small_tenant: Tenant, tmp_path: Path) -> None:
    posting_id, _ = busiest(small_tenant)
    with pytest.raises(errors.PagingError, match="cursor repeated") as caught:
        run(fetch(small_tenant, tmp_path, posting_id, None, Faults(stuck_cursor=True)))
    assert posting_id in str(caught.value)


@pytest.mark.integration
def test_loopback_with_real_dropped_connections(small_tenant: Tenant, tmp_path: Path) -> None:
    posting_id, expected = busiest(small_tenant)
    app = create_app(small_tenant, KEY, Faults(drop_rate=0.15, truncate_rate=0.1, latency_ms=1, seed=4))
    with serve_in_thread(app) as base_url:

        async def main():
            async with HeyMiloClient(settings(tmp_path, base_url=base_url)) as client:
                return await client.fetch_candidates(posting_id, None)

        batch = run(main())
    assert batch.raw == expected
    assert batch.stats.retries > 0


# --- errors that must not be retried ------------------------------------------------------------


def test_bad_key_fails_fast_without_retry_storm(small_tenant: Tenant, tmp_path: Path, caplog) -> None:
    app = create_app(small_tenant, "sk_test_the-right-key")
    posting_id = small_tenant.posting_ids()[0]

    async def main():
        async with HeyMiloClient(settings(tmp_path), transport=asgi_transport(app)) as client:
            await client.fetch_candidates(posting_id)

    with caplog.at_level(logging.DEBUG), pytest.raises(errors.AuthenticationError) as caught:
        run(main())
    assert "HEYMILO_API_KEY" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert KEY not in caplog.text
    stats = run(_sim_stats(app))
    assert stats_total_requests(stats) == 1  # no retries on 401


def test_unknown_posting_is_named(small_tenant: Tenant, tmp_path: Path) -> None:
    with pytest.raises(errors.NotFoundError, match="posting 'NOPE1234' was not found"):
        run(fetch(small_tenant, tmp_path, "NOPE1234", DayRange.single(date(2026, 1, 2))))


def test_422_shows_the_parameter_and_message(small_tenant: Tenant, tmp_path: Path) -> None:
    posting_id = small_tenant.posting_ids()[0]
    app = create_app(small_tenant, KEY)
    bad = settings(tmp_path).model_copy(update={"page_size": 500})  # bypasses our own validation on purpose

    async def main():
        async with HeyMiloClient(bad, transport=asgi_transport(app)) as client:
            return await client.fetch_candidates(posting_id)

    with pytest.raises(errors.RequestValidationError) as caught:
        run(main())
    assert caught.value.param == "limit" and "query.limit" in str(caught.value)


def test_400_shows_the_api_message(small_tenant: Tenant, tmp_path: Path) -> None:
    """A reversed range can only be sent by hand: DayRange refuses to build one."""
    posting_id = small_tenant.posting_ids()[0]
    app = create_app(small_tenant, KEY)

    async def main():
        async with HeyMiloClient(settings(tmp_path), transport=asgi_transport(app)) as client:
            from heymilo_pipeline.api.stats import QueryStats

            params = {"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"}
            return await client._get_json(
                f"/api/v2/postings/{posting_id}/candidates",
                params,
                QueryStats(),
                errors.RequestContext("fetching candidates", posting_id),
            )

    with pytest.raises(errors.BadRequestError) as caught:
        run(main())
    assert caught.value.param == "created_before" and caught.value.code == "invalid_date_range"
    assert "created_before must be greater than or equal to created_after." in str(caught.value)


# --- postings and concurrency --------------------------------------------------------------------


def test_lists_every_posting(small_tenant: Tenant, tmp_path: Path) -> None:
    app = create_app(small_tenant, KEY)

    async def main():
        async with HeyMiloClient(settings(tmp_path, page_size=2), transport=asgi_transport(app)) as client:
            return await client.list_postings(), await client.list_posting_summaries()

    (postings, stats), (summaries, _) = run(main())
    assert [p.id for p in postings] == [s.id for s in summaries] == small_tenant.posting_ids()
    assert {p.status for p in postings} >= {"active", "draft", "archived", "expired"}
    assert sum(p.test_posting for p in postings) == 1
    assert stats.requests == math.ceil(len(postings) / 2)


def test_fetch_many_returns_each_posting_complete(small_tenant: Tenant, tmp_path: Path) -> None:
    app = create_app(small_tenant, KEY, Faults(latency_ms=2, error_rate=0.05, seed=1))
    truth = truth_by_posting(small_tenant)
    days = DayRange(SMALL.start, SMALL.end)

    async def main():
        async with HeyMiloClient(settings(tmp_path, max_concurrency=3), transport=asgi_transport(app)) as client:
            return await client.fetch_many([(pid, days) for pid in small_tenant.posting_ids()])

    batches = run(main())
    assert sorted(b.posting_id for b in batches) == sorted(small_tenant.posting_ids())
    for batch in batches:
        assert batch.raw == truth.get(batch.posting_id, [])


# --- configuration and secrets -------------------------------------------------------------------


def test_settings_from_env_and_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError, match="HEYMILO_API_KEY is not set"):
        Settings.from_env({}).client_settings()
    with pytest.raises(errors.ConfigurationError, match=r"HEYMILO_BASE_URL: .*http"):
        Settings.from_env({"HEYMILO_API_KEY": KEY, "HEYMILO_BASE_URL": "api.heymilo.ai"})
    with pytest.raises(errors.ConfigurationError, match=r"HEYMILO_RATE_LIMIT: .*greater than or equal to 1"):
        Settings.from_env({"HEYMILO_API_KEY": KEY, "HEYMILO_RATE_LIMIT": "0"})
    with pytest.raises(errors.ConfigurationError, match="HEYMILO_PII=hash needs HEYMILO_PII_KEY"):
        Settings.from_env({"HEYMILO_PII": "hash"})
    configured = Settings.from_env({"HEYMILO_API_KEY": KEY, "HEYMILO_RATE_LIMIT": "120"}).client_settings()
    assert configured.rate_limit == 120
    assert configured.base_url == "https://api.heymilo.ai"
    assert KEY not in repr(configured) and KEY not in str(configured)
    assert KEY not in repr(HeyMiloClient(configured))


async def _sim_stats(app) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(transport=asgi_transport(app), base_url="http://heymilo.sim") as http:
        return (await http.get("/_sim/stats", headers={"X-API-KEY": app.state.api_key})).json()


def stats_total_requests(stats: dict[str, Any]) -> int:
    return int(stats["requests_total"])


@pytest.mark.parametrize("broken", ["status", "email"])
def test_a_record_off_the_spec_is_named_by_posting_page_and_field_never_by_its_values(
    tmp_path: Path, broken: str
) -> None:
    """An independent API sends a record the spec does not allow: the error says where, not what it held."""
    good = [record(n, posting_id="P1") for n in (1, 2)]
    bad = record(3, posting_id="P1", name="Zelda Quartermain", email="zelda@example.org")
    if broken == "status":
        bad["status"] = {"note": "Zelda Quartermain"}  # the wrong type, holding personal data
    else:
        del bad["email"]  # a missing field: pydantic's input is then the whole record
    pages = [[*good], [bad]]

    def answer(request: httpx.Request) -> httpx.Response:
        number = 1 if "starting_after" not in request.url.params else 2
        data = pages[number - 1]
        pagination = {"has_more": number == 1, "total_count": 3, "url": "/api/v2/postings/P1/candidates"}
        return httpx.Response(200, json={"data": data, "pagination": pagination})

    async def main() -> None:
        async with HeyMiloClient(settings(tmp_path), transport=httpx.MockTransport(answer)) as client:
            for page in [p async for p in client.candidate_pages("P1", DayRange.single(DAY))]:
                page.candidates  # noqa: B018 - the models judge the page

    with pytest.raises(errors.SchemaError) as raised:
        run(main())
    message = str(raised.value)
    assert "posting P1" in message and "page 2" in message and f"data.0.{broken}" in message, message
    assert "(record 0000000000000003)" in message
    assert "Zelda" not in message and "zelda@" not in message and "Quartermain" not in message, message


# --- interview results (getInterviewData) --------------------------------------------------------


async def interview_answers(transport: httpx.AsyncBaseTransport, tmp_path: Path, ids: list[str]) -> list[Any]:
    async with HeyMiloClient(settings(tmp_path), transport=transport) as client:
        return [await client.interview_data(i, posting_id="P1") for i in ids]


def test_interview_results_as_the_simulator_serves_them(tmp_path: Path) -> None:
    tenant = Tenant(SMALL)
    records = list(tenant.truth())
    sample = [r for r in records if r["status"] in ("pending", "in_progress")][:5]
    sample += [r for r in records if r["status"] not in ("pending", "in_progress")][:20]
    erased = sample[-1]["interview_id"]
    tenant.delete_candidates([erased])
    ids = [r["interview_id"] for r in sample]
    answers = run(interview_answers(asgi_transport(create_app(tenant, KEY)), tmp_path, ids))
    assert [a.outcome for a in answers] == ["not_ready"] * 5 + ["ready"] * 19 + ["gone"]
    assert all(a.raw == tenant.interview_data(a.interview_id) for a in answers if a.ready)
    assert not any(a.unexpected for a in answers)


def fixed_api(answers: dict[str, tuple[int, Any]]) -> httpx.MockTransport:
    """An API that answers getInterviewData for each interview id with a fixed (status, body)."""

    def handler(request: httpx.Request) -> httpx.Response:
        status, body = answers[request.url.path.split("/")[-2]]
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_every_shape_of_not_ready_and_unknown_shapes_are_not_stored(tmp_path: Path) -> None:
    """What the spec allows for "not ready" (it names the status, not the place), and answers it does not describe:
    none is stored, none raises, and only the undescribed ones are flagged for a warning."""
    minimal = {"interview_id": "A1", "posting_id": "P1", "name": "N", "email": "e@x", "status": "completed"}
    error = {"type": "invalid_request_error", "message": "The candidate has not finished."}
    answers = {
        "A1": (200, {"data": {**minimal, "future_field": {"x": 1}}, "meta": None}),
        "B1": (200, {"data": {**minimal, "interview_id": "B1", "status": "not_ready"}}),
        "B2": (200, {"data": None, "meta": {"status": "NOT_READY"}}),
        "B3": (200, {"status": "not-ready"}),
        "B4": (400, {"error": {**error, "code": "not_ready"}}),
        "B5": (404, {"error": {**error, "code": "interview_not_ready"}}),
        "B6": (409, {"error": {**error, "code": "conflict", "type": "not_ready"}}),
        "C1": (200, {"data": {**minimal, "interview_id": "OTHER"}}),
        "C2": (200, []),
        "C3": (200, {"data": {**minimal, "interview_id": "C3", "web_interview": "pending"}}),
        "C4": (200, {"results": {}}),
        "D1": (404, {"error": {**error, "code": "resource_missing", "message": "No such interview"}}),
    }
    got = {a.interview_id: a for a in run(interview_answers(fixed_api(answers), tmp_path, list(answers)))}
    assert {i: a.outcome for i, a in got.items()} == {
        "A1": "ready", **{f"B{n}": "not_ready" for n in range(1, 7)}, **{f"C{n}": "not_ready" for n in range(1, 5)},
        "D1": "gone",
    }  # fmt: skip
    assert got["A1"].raw == answers["A1"][1]["data"]  # as sent, unknown fields too
    assert {i for i, a in got.items() if a.unexpected} == {"C1", "C2", "C3", "C4"}
    assert "OTHER" in got["C1"].note and "web_interview" in got["C3"].note


def test_interview_results_with_a_rejected_key_raise(tmp_path: Path) -> None:
    transport = fixed_api({"A1": (401, {"error": {"type": "authentication_error", "code": "invalid_api_key",
                                                  "message": "Invalid or missing API key."}})})  # fmt: skip
    with pytest.raises(errors.AuthenticationError):
        run(interview_answers(transport, tmp_path, ["A1"]))


def test_results_requests_take_the_lane_then_the_key(tmp_path: Path) -> None:
    """Results requests are paced by the results' lane (HEYMILO_RESULTS_SHARE of the limit) as well as the key's
    budget: 6,000/min with a share of 0.1 spaces them 100 ms apart (600/min), where candidate pages go 10 ms
    apart. Both lanes are files beside the key's, named without the key."""
    tenant = Tenant(SMALL)
    ids = [r["interview_id"] for r in tenant.truth() if r["status"] == "completed"][:6]
    lane = settings(tmp_path, rate_limit=6000, results_share=0.1)

    async def go() -> tuple[float, QueryStats]:
        stats = QueryStats()
        async with HeyMiloClient(lane, transport=asgi_transport(create_app(tenant, KEY))) as client:
            started = time.perf_counter()
            for interview_id in ids:
                assert (await client.interview_data(interview_id, stats=stats)).ready
            return time.perf_counter() - started, stats

    seconds, stats = run(go())
    # GCRA spaces slots exactly: five gaps of 60 / (600 * 0.98) s can only take longer on a slow machine.
    assert seconds >= 5 * 60 / (600 * 0.98) * 0.99 and stats.requests == len(ids)
    budgets = sorted(p.name for p in (tmp_path / "ratelimit").iterdir())
    assert len(budgets) == 2 and budgets[0] == budgets[1].replace(".gcra", "-results.gcra")
    assert not any(CLIENT_KEY in name for name in budgets)
