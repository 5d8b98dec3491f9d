"""A daily update with interview results: the recent days of one update (yesterday + the lookback window, every
posting) through the code location's ``candidates_job``, then the ``results_job`` over the same days, as
``heymilo-pipeline update`` and the sensor ``results_after_candidates`` run them, against the simulator.

The day before is loaded first, unmeasured and unthrottled: the candidates of the same days and every finished
candidate's results, as of the simulated clock a day earlier. Then the clock moves one day on (new candidates
yesterday, older ones finish, are shortlisted or rescored), the API answers in ``--latency-ms``, and the update runs
under the key's limit (``--rate-limit``) and the results' share of it (HEYMILO_RESULTS_SHARE, default).

Reports both runs' wall time and the time each spent on the API: the union of the spans of ``ingest.fetch_slice``
calls (candidates) and of ``HeyMiloClient.interview_data`` calls (results): requests, pacing and paging. The rest
is Dagster and the writes.

    python bench/daily_results.py --url URL --start-date 2026-10-01 [--rate-limit 300] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    KEY,
    WORK_DIR,
    dagster_home,
    pipeline_environ,
    sim_stats,
    spanned,
    union_seconds,
    vm_hwm,
    write_result,
)

# The update runs early in the day, as the schedule does: yesterday is whole.
UPDATE_HOUR = 5


def _admin(url: str, route: str, body: dict) -> None:
    httpx.post(f"{url}/_sim/{route}", json=body, headers={"X-API-KEY": KEY}, trust_env=False).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--start-date", type=date.fromisoformat, required=True, help="HEYMILO_START_DATE")
    parser.add_argument("--rate-limit", type=int, default=300)
    parser.add_argument("--rate-window", type=float, default=60.0, help="HEYMILO_RATE_WINDOW_SECONDS (quick: 6)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the API's answer time during the update")
    parser.add_argument("--out")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        home = dagster_home(Path(work), "telemetry:\n  enabled: false\n")
        os.environ.update(pipeline_environ(args.url, Path(work), args.start_date, args.rate_limit, home))
        os.environ["HEYMILO_RATE_WINDOW_SECONDS"] = str(args.rate_window)
        import dagster as dg

        from heymilo_pipeline import cli, ingest
        from heymilo_pipeline.api.client import HeyMiloClient
        from heymilo_pipeline.api.settings import ClientSettings
        from heymilo_pipeline.api.windows import DayRange, midnight
        from heymilo_pipeline.defs.schedules import update_requests
        from heymilo_pipeline.defs.sensors import results_tags
        from heymilo_pipeline.quality import ScoreBounds
        from heymilo_pipeline.refresh import todays_plan
        from heymilo_pipeline.results_sync import sync_results
        from heymilo_pipeline.settings import Settings

        instance = dg.DagsterInstance.get()
        location = cli.Location.build(Settings.from_env())
        today = datetime.now(UTC).date()
        _admin(args.url, "latency", {"ms": 0})
        _admin(args.url, "clock", {"now": midnight(today - timedelta(days=1)) + UPDATE_HOUR * 3600})
        postings = cli.ensure_postings(location, instance, refresh=True)
        request = update_requests(instance, today, todays_plan(today, location.settings, None))[-1]
        assert isinstance(request, dg.RunRequest), request
        first = date.fromisoformat(request.tags["dagster/asset_partition_range_start"].split("|")[0])
        last = date.fromisoformat(request.tags["dagster/asset_partition_range_end"].split("|")[0])
        days = DayRange(first, last)
        store = location.storage.store()
        settings = location.settings

        async def day_before() -> tuple[int, int]:
            """The same days a day earlier, unthrottled (not measured)."""
            unpaced = ClientSettings.build(
                api_key=KEY, base_url=args.url, rate_limit=1_000_000, state_dir=Path(work) / "unpaced"
            )
            async with HeyMiloClient(unpaced) as client:
                loaded = await ingest.sync_postings(
                    client, [ingest.Slice(p, days) for p in postings], store, "day-before", bounds=ScoreBounds()
                )
                if failed := [r.error for r in loaded if r.error]:
                    raise SystemExit(f"loading the day before failed: {failed[:3]}")
                keys = [(p, d) for p in postings for d in days.days]
                done = await sync_results(
                    client, store, keys, run_id="day-before", scrubber=settings.scrubber(), transcripts=False
                )
                return sum(n for r in loaded for n in r.rows_by_day.values()), done.stored

        before_candidates, before_results = asyncio.run(day_before())

        # The update's day: the clock a day on, answers at the API's pace.
        _admin(args.url, "clock", {"now": midnight(today) + UPDATE_HOUR * 3600})
        _admin(args.url, "latency", {"ms": args.latency_ms})
        sim_stats(args.url, reset=True)
        spans: dict[str, list[tuple[float, float]]] = {"candidates": [], "results": []}
        counts = {"candidates": 0, "candidate_requests": 0}
        fetch_slice, interview_data = ingest.fetch_slice, HeyMiloClient.interview_data

        def counted(fetched) -> None:
            counts["candidate_requests"] += fetched.stats.requests
            counts["candidates"] += fetched.candidates.num_rows

        ingest.fetch_slice = spanned(fetch_slice, spans["candidates"], counted)
        HeyMiloClient.interview_data = spanned(interview_data, spans["results"])
        started = time.perf_counter()
        candidates_run = location.run("candidates_job", instance, dict(request.tags))
        between = time.perf_counter()
        results_run = location.run("results_job", instance, results_tags(request.tags))
        ended = time.perf_counter()
        if not (candidates_run.success and results_run.success):
            raise SystemExit("the update's runs failed")
        stored = sum(
            int(event.materialization.metadata["results_stored"].value)
            for event in results_run.get_asset_materialization_events()
            if "results_stored" in event.materialization.metadata
        )
        api = {name: union_seconds(found) for name, found in spans.items()}
        wall = ended - started
        result = {
            "postings": len(postings),
            "days": len(days.days),
            "first_day": first.isoformat(),
            "last_day": last.isoformat(),
            "day_before": {"candidates": before_candidates, "results": before_results},
            "candidates": counts["candidates"],
            "candidate_requests": counts["candidate_requests"],
            "results_requests": len(spans["results"]),
            "results_stored": stored,
            "candidates_wall_seconds": between - started,
            "results_wall_seconds": ended - between,
            "wall_seconds": wall,
            "candidates_api_seconds": api["candidates"],
            "results_api_seconds": api["results"],
            "api_seconds": api["candidates"] + api["results"],
            "wall_over_api": wall / (api["candidates"] + api["results"]),
            "rate_limited": sim_stats(args.url)["rate_limited"],
            "rss_self": vm_hwm(),
        }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
