"""Our pipeline's core over HTTP, the way a backfill runs it, for the request, rate-limit and dlt benchmarks.

Per posting, as one Dagster run of ``raw_candidates`` + ``warehouse_tables`` does: one range query
(``ingest.fetch_slice``: paging, validation, flattening), the data rules (``ingest.evaluate``), the
lake (``Lake.write_partitions``) and DuckDB (``Warehouse.replace_slices``). Several postings are fetched
at once (the client's ``max_concurrency``), as parallel runs sharing the key's rate budget would;
lake and DuckDB writes go to a worker thread so fetching goes on meanwhile, one DuckDB writer at a time.

``python bench/backfill.py --url URL --first D --last D [--posting ID ...] --out result.json``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KEY, WORK_DIR, vm_hwm, write_result


class RateLimitedLog(logging.Handler):
    """Times (since start) of the client's 'rate limited' retries, read from its log."""

    def __init__(self, started: float) -> None:
        super().__init__(logging.WARNING)
        self.started = started
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "rate limited" in record.getMessage():
            self.times.append(time.perf_counter() - self.started)


def backfill(
    url: str,
    posting_ids: list[str],
    first: date,
    last: date,
    work: Path,
    *,
    requests_per_minute: int = 10**6,
    rate_window_seconds: float = 60.0,
    max_concurrency: int = 4,
    write: bool = True,
) -> dict:
    from heymilo_pipeline.api.client import HeyMiloClient
    from heymilo_pipeline.api.settings import ClientSettings
    from heymilo_pipeline.api.stats import QueryStats
    from heymilo_pipeline.api.windows import DayRange
    from heymilo_pipeline.ingest import Slice, evaluate, fetch_slice, splits_allowed
    from heymilo_pipeline.lake import Lake
    from heymilo_pipeline.quality import ScoreBounds
    from heymilo_pipeline.warehouse import SliceFiles, Warehouse

    days = DayRange(first, last)
    lake = Lake(work / "lake")
    warehouse = Warehouse(work / "bench.duckdb")
    warehouse.ensure_schema()
    settings = ClientSettings(
        api_key=KEY,
        base_url=url,
        rate_limit=requests_per_minute,
        rate_window_seconds=rate_window_seconds,
        max_concurrency=max_concurrency,
        state_dir=work / ".ratelimit",
    )
    started = time.perf_counter()
    limited = RateLimitedLog(started)
    logging.getLogger("heymilo_pipeline").addHandler(limited)
    totals = QueryStats()
    rows = 0
    failed: list[str] = []
    duckdb_lock = threading.Lock()
    request_times: list[float] = []

    def publish(fetched) -> None:
        files = lake.write_partitions(
            fetched.slice.posting_id, fetched.slice.days, fetched.raw, fetched.candidates, fetched.steps
        )
        plan = SliceFiles(
            fetched.slice.posting_id, days, [f.candidates for f in files.values()], [f.steps for f in files.values()]
        )
        with duckdb_lock:
            warehouse.replace_slices([plan], "bench")

    unstarted = [len(posting_ids)]

    async def one(client: HeyMiloClient, semaphore: asyncio.Semaphore, posting_id: str) -> None:
        nonlocal totals, rows
        async with semaphore:
            unstarted[0] -= 1

            def on_page(page, stats) -> None:
                request_times.append(time.perf_counter() - started)

            # As the pipeline's runs do (ingest.sync_postings): split only once no posting is left waiting.
            def splits() -> int:
                return splits_allowed(unstarted[0], max_concurrency)

            fetched = await fetch_slice(client, Slice(posting_id, days), on_page, max_splits=splits)
        findings = evaluate(fetched, ScoreBounds())
        if not all(f.passed for f in findings.values()):
            failed.append(posting_id)
        if write:
            await asyncio.to_thread(publish, fetched)
        totals = totals.add(fetched.stats)
        rows += fetched.candidates.num_rows

    async def run() -> None:
        semaphore = asyncio.Semaphore(max_concurrency)
        async with HeyMiloClient(settings) as client, asyncio.TaskGroup() as group:
            for posting_id in posting_ids:
                group.create_task(one(client, semaphore, posting_id))

    asyncio.run(run())
    seconds = time.perf_counter() - started
    if write and warehouse.table_counts()["candidates"] != rows:
        raise SystemExit("DuckDB does not hold every fetched candidate")
    return {
        "postings": len(posting_ids),
        "candidates": rows,
        "seconds": seconds,
        "candidates_per_s": rows / seconds if seconds else 0.0,
        "client_stats": totals.as_dict(),
        "rate_limited_at_s": limited.times,
        "page_times_s": request_times,
        "failed_rules": failed,
        "rss_self": vm_hwm(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--first", type=date.fromisoformat, required=True)
    parser.add_argument("--last", type=date.fromisoformat, required=True)
    parser.add_argument("--posting", action="append", default=[], help="posting id (repeatable)")
    parser.add_argument("--rate-limit", type=int, default=10**6)
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="fetch and flatten only")
    parser.add_argument("--out")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        result = backfill(
            args.url,
            args.posting,
            args.first,
            args.last,
            Path(work),
            requests_per_minute=args.rate_limit,
            rate_window_seconds=args.rate_window,
            max_concurrency=args.concurrency,
            write=not args.no_write,
        )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
