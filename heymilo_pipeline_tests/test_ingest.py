"""One slice's fetch (ingest.fetch_slice) on pages served by an httpx mock: batches, raw texts, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from heymilo_pipeline import ingest
from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import SchemaError
from heymilo_pipeline.api.windows import DayRange, midnight
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
