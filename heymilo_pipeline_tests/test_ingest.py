"""One slice's fetch (ingest.fetch_slice) on pages served by an httpx mock: batches, raw texts, errors."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from heymilo_pipeline import ingest
from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import SchemaError
from heymilo_pipeline.api.stats import minimum_requests
from heymilo_pipeline.api.windows import DayRange, day_of, midnight
from heymilo_pipeline.quality import ScoreBounds
from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app
from heymilo_pipeline_tests.factories import DAY, record
from heymilo_pipeline_tests.factories import client_settings as settings

DAYS = DayRange.single(DAY)


def fetch(tmp_path: Path, records: list[dict[str, Any]], page_size: int = 100) -> ingest.FetchedSlice:
    pages = [records[i : i + page_size] for i in range(0, len(records), page_size)] or [[]]

    def answer(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("starting_after")
        index = 0 if after is None else next(i + 1 for i, p in enumerate(pages) if p and p[-1]["interview_id"] == after)
        more = index + 1 < len(pages)
        body = {"data": pages[index], "pagination": {"has_more": more, "total_count": len(records)}}
        return httpx.Response(200, content=json.dumps(body))

    async def run() -> ingest.FetchedSlice:
        async with HeyMiloClient(settings(tmp_path), transport=httpx.MockTransport(answer)) as client:
            return await ingest.fetch_slice(client, ingest.Slice("P1", DAYS))

    return asyncio.run(run())


def day_records(n: int) -> list[dict[str, Any]]:
    return [record(i, created_at=midnight(DAY) + i) for i in range(1, n + 1)]


def test_batches_of_pages_keep_every_record_and_its_text_row_for_row(tmp_path: Path) -> None:
    records = day_records(2 * ingest.FLATTEN_BATCH + 30)  # three batches, the last one partial
    fetched = fetch(tmp_path, records)
    ids = [r["interview_id"] for r in records]
    assert fetched.candidates["interview_id"].to_pylist() == ids
    assert fetched.raw["interview_id"].to_pylist() == ids
    assert [json.loads(t) for t in fetched.raw["record"].to_pylist()] == records
    assert fetched.steps.num_rows == 3 * len(records)


def test_a_record_the_models_accept_but_no_table_can_hold_fails_naming_the_posting(tmp_path: Path) -> None:
    records = day_records(3)
    records[1]["workflow"]["steps"][0]["order"] = 2**70  # an int beyond 64 bits: valid JSON, valid for the models
    with pytest.raises(SchemaError, match=r"posting P1.*cannot be stored \(OverflowError"):
        fetch(tmp_path, records)


def test_a_record_against_the_spec_fails_naming_the_record(tmp_path: Path) -> None:
    records = day_records(3)
    records[2]["agent_summary"]["web_interview"]["highlights"] = "clear"
    with pytest.raises(SchemaError, match=rf"posting P1.*highlights \(record {records[2]['interview_id']}\)"):
        fetch(tmp_path, records)


# --- a large range walked in day sub-ranges at once ----------------------------------------------------


def test_split_days_covers_the_range_in_consecutive_parts() -> None:
    days = DayRange(DAY, DAY + timedelta(days=9))
    parts = ingest.split_days(days, 3)
    assert [(p.first, p.last) for p in parts] == [
        (DAY, DAY + timedelta(days=2)),
        (DAY + timedelta(days=3), DAY + timedelta(days=6)),
        (DAY + timedelta(days=7), DAY + timedelta(days=9)),
    ]
    assert ingest.split_days(DAYS, 4) == [DAYS]  # one day cannot be split


@pytest.mark.parametrize(
    ("total", "has_more", "days", "expected"),
    [
        (39 * 100, True, 90, 1),  # under SPLIT_MIN_PAGES: one walk
        (40 * 100, True, 90, 2),  # 40 pages: two sub-ranges of 20
        (100_000, True, 365, 4),  # capped by max_splits
        (100_000, True, 1, 1),  # one day
        (100_000, False, 90, 1),  # the first page was the last
        (None, True, 90, 1),  # no total_count: nothing to judge by
    ],
)
def test_splits_for(total: int | None, has_more: bool, days: int, expected: int) -> None:
    span = DayRange(DAY, DAY + timedelta(days=days - 1))
    assert ingest.splits_for(total, has_more, span, max_splits=4) == expected


def test_a_large_posting_is_walked_in_sub_ranges_and_equals_the_api(tmp_path: Path) -> None:
    tenant = Tenant(TenantSpec(seed=3, postings=4, candidates_per_posting=(6_000, 6_000)))
    posting_id = next(p["id"] for p in tenant.postings() if p["status"] == "archived")
    days = DayRange(tenant.spec.start, tenant.spec.end)
    truth = {r["interview_id"] for r in tenant.truth() if r["posting_id"] == posting_id}
    app = create_app(tenant, "k")
    queries: list[tuple[str | None, str | None]] = []

    class Recording(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            queries.append((request.url.params.get("created_after"), request.url.params.get("starting_after")))
            return await super().handle_async_request(request)

    async def run() -> ingest.FetchedSlice:
        async with HeyMiloClient(settings(tmp_path, api_key="k"), transport=Recording(app)) as client:
            return await ingest.fetch_slice(client, ingest.Slice(posting_id, days), max_splits=3)

    fetched = asyncio.run(run())
    ids = fetched.candidates["interview_id"].to_pylist()
    assert len(ids) == len(set(ids)) == len(truth) and set(ids) == truth
    assert fetched.raw.num_rows == len(truth)
    # Three sub-ranges, each started once (no cursor) after the probe of the whole range.
    starts = [after for after, cursor in queries if cursor is None]
    assert len(starts) == 4 and len(set(starts)) == 3, starts
    # The minimum for 6,000 candidates is 60 requests; the probe and one partial page a sub-range at most.
    assert minimum_requests([len(truth)]) < fetched.stats.requests <= minimum_requests([len(truth)]) + 1 + 3
    assert fetched.stats.requests == len(queries)
    # The figures the data rules judge: rows received equal the sub-ranges' summed total_count.
    assert fetched.stats.rows == fetched.stats.total_count
    assert fetched.stats.kept == len(truth)
    assert ingest.evaluate(fetched, ScoreBounds())["rows_match_total_count"].passed


def test_split_by_counts_balances_the_rows() -> None:
    days = DayRange(DAY, DAY + timedelta(days=5))
    counts = {DAY: 100, DAY + timedelta(days=1): 10, DAY + timedelta(days=4): 90}
    parts = ingest.split_by_counts(days, counts, 2)
    assert [(p.first, p.last) for p in parts] == [(DAY, DAY), (DAY + timedelta(days=1), DAY + timedelta(days=5))]
    assert ingest.split_by_counts(days, {}, 3) == [days]  # nothing known: one range


def test_known_counts_split_a_large_posting_without_a_probe(tmp_path: Path) -> None:
    """A re-fetch knows each day's rows from the last load: the sub-ranges hold equal counts and no request is
    spent on learning the range's size."""
    tenant = Tenant(TenantSpec(seed=3, postings=4, candidates_per_posting=(6_000, 6_000)))
    posting_id = next(p["id"] for p in tenant.postings() if p["status"] == "archived")
    days = DayRange(tenant.spec.start, tenant.spec.end)
    truth = [r for r in tenant.truth() if r["posting_id"] == posting_id]
    known: dict = {}
    for r in truth:
        known[day_of(r["created_at"])] = known.get(day_of(r["created_at"]), 0) + 1
    app = create_app(tenant, "k")
    starts: list[str | None] = []

    class Recording(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.params.get("starting_after") is None:
                starts.append(request.url.params.get("created_after"))
            return await super().handle_async_request(request)

    async def run() -> ingest.FetchedSlice:
        async with HeyMiloClient(settings(tmp_path, api_key="k"), transport=Recording(app)) as client:
            return await ingest.fetch_slice(client, ingest.Slice(posting_id, days), max_splits=3, known=known)

    fetched = asyncio.run(run())
    assert sorted(fetched.candidates["interview_id"].to_pylist()) == sorted(r["interview_id"] for r in truth)
    parts = ingest.split_by_counts(days, known, 3)
    assert len(parts) == 3 and len(starts) == 3  # no probe of the whole range
    sizes = [sum(n for d, n in known.items() if d in p.days) for p in parts]
    assert max(sizes) - min(sizes) < 0.2 * len(truth) / 3, sizes
    assert fetched.stats.requests <= minimum_requests([len(truth)]) + 3
    assert fetched.stats.rows == fetched.stats.total_count


def test_splits_are_allowed_only_for_the_runs_tail() -> None:
    # While postings are still waiting to start, they keep every walker busy: a split would only cost requests.
    assert ingest.splits_allowed(waiting=4, max_concurrency=4) == 1
    assert ingest.splits_allowed(waiting=3, max_concurrency=4) == 4
    assert ingest.splits_allowed(waiting=0, max_concurrency=2) == 2


def test_one_walker_never_splits(tmp_path: Path) -> None:
    """max_splits=1 (a run with postings still waiting): one walk of the whole range, whatever its size."""
    tenant = Tenant(TenantSpec(seed=3, postings=4, candidates_per_posting=(6_000, 6_000)))
    posting_id = next(p["id"] for p in tenant.postings() if p["status"] == "archived")
    days = DayRange(tenant.spec.start, tenant.spec.end)

    async def run() -> ingest.FetchedSlice:
        transport = httpx.ASGITransport(create_app(tenant, "k"))
        async with HeyMiloClient(settings(tmp_path, api_key="k"), transport=transport) as client:
            return await ingest.fetch_slice(client, ingest.Slice(posting_id, days), max_splits=1)

    fetched = asyncio.run(run())
    assert fetched.stats.requests == minimum_requests([fetched.candidates.num_rows]) == 60


def test_a_run_freezes_only_what_existed_before_it_and_thaws_after() -> None:
    import gc

    before = gc.get_freeze_count()
    with ingest.startup_objects_frozen():
        frozen = gc.get_freeze_count()
        made_during: list = [[] for _ in range(1000)]
        gc.collect()
        assert frozen > before and gc.get_freeze_count() == frozen  # the run's own objects stay collectable
        assert gc.is_tracked(made_during[0])
    assert gc.get_freeze_count() == 0
