"""Dagster overhead: the recent days of one daily update (yesterday + the lookback window, every posting) through
the code location's ``candidates_job``, as ``heymilo-pipeline update`` runs it, against the simulator.

Reports the run's wall time and the time it spent on the API (the union of the spans of ``ingest.fetch_slice``
calls inside ``candidate_tables``: requests, pacing and paging; flattening is a few ms of it); the rest is
Dagster (run and step set-up, event log, partitions, checks) plus the lake and DuckDB writes, which
are timed apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    WORK_DIR,
    dagster_home,
    pipeline_environ,
    production_profile,
    spanned,
    union_seconds,
    vm_hwm,
    write_result,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--start-date", type=date.fromisoformat, required=True, help="HEYMILO_START_DATE")
    parser.add_argument("--rate-limit", type=int, default=300)
    parser.add_argument(
        "--postgres", metavar="URL", help="a database for the production profile: Dagster's storage and the rate budget"
    )
    parser.add_argument(
        "--shared-data", metavar="PATH", help="with --postgres: the tables in DuckLake, catalog there, files here"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        storage, production = production_profile(args.postgres, args.shared_data)
        os.environ.update(production)
        home = dagster_home(Path(work), "telemetry:\n  enabled: false\n" + storage)
        os.environ.update(pipeline_environ(args.url, Path(work), args.start_date, args.rate_limit, home))
        t0 = time.perf_counter()
        import dagster as dg

        from heymilo_pipeline import cli, ingest
        from heymilo_pipeline.defs.schedules import update_requests
        from heymilo_pipeline.refresh import todays_plan
        from heymilo_pipeline.settings import Settings

        imported = time.perf_counter() - t0
        timings = {"publish": 0.0}
        spans: list[tuple[float, float]] = []  # fetches run concurrently: the API time is the union of their spans
        requests = {"n": 0, "rows": 0}
        fetch_slice, publish = ingest.fetch_slice, ingest.publish

        def counted(fetched) -> None:
            requests["n"] += fetched.stats.requests
            requests["rows"] += fetched.candidates.num_rows

        def timed_publish(*a, **k):  # the lake files and the DuckDB load, or the shared tables' transaction
            started = time.perf_counter()
            try:
                return publish(*a, **k)
            finally:
                timings["publish"] += time.perf_counter() - started

        ingest.fetch_slice, ingest.publish = spanned(fetch_slice, spans, counted), timed_publish
        instance = dg.DagsterInstance.get()
        location = cli.Location.build(Settings.from_env())
        t1 = time.perf_counter()
        postings = cli.ensure_postings(location, instance, refresh=True)  # registers the postings (not timed below)
        t2 = time.perf_counter()
        today = datetime.now(UTC).date()
        # The recent days of the update (its rolling share of older history is a second run, not measured here).
        request = update_requests(instance, today, todays_plan(today, location.settings, None))[-1]
        assert isinstance(request, dg.RunRequest), request
        t3 = time.perf_counter()
        ok = location.execute("candidates_job", instance, dict(request.tags))
        wall = time.perf_counter() - t3
        timings["fetch"] = union_seconds(spans)
        if not ok:
            raise SystemExit("the update run failed")
        first = request.tags["dagster/asset_partition_range_start"]
        last = request.tags["dagster/asset_partition_range_end"]
        days = (date.fromisoformat(last.split("|")[0]) - date.fromisoformat(first.split("|")[0])).days + 1
        result = {
            "postings": len(postings),
            "days": days,
            "partitions": len(postings) * days,
            "candidates": requests["rows"],
            "requests": requests["n"],
            "wall_seconds": wall,
            "api_seconds": timings["fetch"],
            "publish_seconds": timings["publish"],
            "overhead_seconds": wall - timings["fetch"],
            "wall_over_api": wall / timings["fetch"] if timings["fetch"] else None,
            "import_seconds": imported,
            "register_postings_seconds": t2 - t1,
            "yesterday": (today - timedelta(days=1)).isoformat(),
            "rss_self": vm_hwm(),
            "storage": type(instance.event_log_storage).__name__,
        }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
