"""Interview results, the way the ``interview_results`` step runs them (``results_sync.sync_results``), against the
simulator over loopback, for the results benchmark.

First the candidates of the range are loaded into a fresh local store, unthrottled, by a child process (not
measured: what a load leaves in this process's heap would count as the results'); then every finished candidate's
results are fetched and stored under the client's own pacing: ``--rate-limit`` (the key's limit) and ``--share``
(HEYMILO_RESULTS_SHARE). The result says how many results were due and stored, the requests (retries included),
the seconds from the first results request to the last, and the process's peak RSS.

    python bench/results.py --url URL --first 2025-01-01 --last 2025-03-01 [--posting ID ...]
        [--rate-limit 300] [--share 0.5] [--out result.json]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KEY, WORK_DIR, range_arguments, vm_hwm, write_result

from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.settings import ClientSettings
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.ingest import Slice, sync_postings
from heymilo_pipeline.privacy import Scrubber
from heymilo_pipeline.quality import ScoreBounds
from heymilo_pipeline.results_sync import sync_results
from heymilo_pipeline.storage.local import LocalStore


def client(args: argparse.Namespace, work: Path, rate_limit: int) -> HeyMiloClient:
    settings = ClientSettings.build(
        api_key=KEY, base_url=args.url, rate_limit=rate_limit, results_share=args.share,
        rate_window_seconds=args.rate_window, state_dir=work / "ratelimit",
    )  # fmt: skip
    return HeyMiloClient(settings)


def load(args: argparse.Namespace, work: Path) -> None:
    """The candidates of the range, unthrottled (in a child process)."""
    store = LocalStore(work / "data")
    days = DayRange(args.first, args.last)

    async def run() -> None:
        async with client(args, work, 1_000_000) as c:
            slices = [Slice(p, days) for p in args.posting]
            results = await sync_postings(c, slices, store, "load", bounds=ScoreBounds())
            failed = [r.error for r in results if r.error]
            if failed:
                raise SystemExit(f"loading the candidates failed: {failed[:3]}")

    asyncio.run(run())


def main() -> None:
    parser = range_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--rate-limit", type=int, default=1_000_000, help="the key's limit (default: no pacing)")
    parser.add_argument("--share", type=float, default=0.5, help="HEYMILO_RESULTS_SHARE")
    parser.add_argument("--rate-window", type=float, default=60.0, help="HEYMILO_RATE_WINDOW_SECONDS")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as name:
        work = Path(name)
        loader = multiprocessing.get_context("spawn").Process(target=load, args=(args, work))
        loader.start()
        loader.join()
        if loader.exitcode:
            raise SystemExit(f"loading the candidates failed (exit code {loader.exitcode})")
        store = LocalStore(work / "data")
        days = DayRange(args.first, args.last)
        keys = [(p, d) for p in args.posting for d in days.days]
        rss_before = vm_hwm()

        async def fetch() -> dict:
            async with client(args, work, args.rate_limit) as c:
                started = time.perf_counter()
                run = await sync_results(c, store, keys, run_id="results", scrubber=Scrubber("keep"),
                                         transcripts=False)  # fmt: skip
                return {"run": run, "seconds": time.perf_counter() - started}

        done = asyncio.run(fetch())
        run = done["run"]
        result = {
            "due": run.backlog,
            "stored": run.stored,
            "left": run.left,
            "failed_posting_days": len(run.failed),
            "requests": run.stats.requests,
            "retries": run.stats.retries,
            "rate_limited": run.stats.rate_limited,
            "seconds": done["seconds"],
            "waited_seconds": run.stats.waited_seconds,
            "peak_rss_before_results": rss_before,  # the imports
            "results_peak_rss": vm_hwm(),  # this process never loaded candidates: the results step and the imports
            "table_rows": store.table_counts(),
        }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
