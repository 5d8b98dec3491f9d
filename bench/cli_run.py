"""The product as users run it: ``heymilo-pipeline postings`` then a timed ``heymilo-pipeline backfill``.

A fresh data directory and a fresh Dagster instance under bench/.work; the settings come from the environment, as
a user's do. The timed figure is the wall time of the ``backfill`` command, process start-up included.

- Default: the local profile, the ``dagster.yaml`` that ``make demo`` writes (Dagster's default SQLite storage).
- ``--postgres URL``: the production profile's Dagster side, as deploy/ sets it: deploy/dagster.yaml's storage in
  that (empty) database, ``DAGSTER_EVENT_BATCH_SIZE`` as deploy/docker-compose.yaml sets it, and the key's rate
  budget there. With ``--shared-data PATH`` the tables are the shared ones too (DuckLake: catalog in that database,
  files under PATH), counted afterwards through ``heymilo-pipeline publish``.

The result also holds the run's timeline (``timeline``): when the command started and ended and when Dagster
wrote its planned events and its materializations (epoch seconds, from the instance's event log), so that the
caller can set them against the API's first and last request and show whether the writes overlap the fetch.

    python bench/cli_run.py --url URL --first 2025-01-01 --last 2025-12-31 [--posting ID ...] [--rate-limit N]
        [--postgres URL [--shared-data PATH]] [--env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CLI, KEY, WORK_DIR, production_profile, range_arguments, user_environment, write_result

from heymilo_pipeline.warehouse import query


def reset_server_stats(url: str) -> None:
    """Count only the backfill's requests (the simulator and bench/fake_api.py both answer this)."""
    httpx.post(f"{url}/_sim/stats/reset", headers={"X-API-KEY": KEY}, trust_env=False)


def main() -> None:
    parser = range_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--rate-limit", type=int, default=1_000_000, help="HEYMILO_RATE_LIMIT (default: no pacing)")
    parser.add_argument("--postgres", metavar="URL", help="the production profile: Dagster's storage and the budget")
    parser.add_argument("--shared-data", metavar="PATH", help="with --postgres: the shared tables' files")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set in the commands' env")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        extra = dict(pair.split("=", 1) for pair in args.env)
        env = user_environment(args, Path(work), args.rate_limit, args.posting, **production(args), **extra)
        reset_server_stats(args.url)
        # Candidates only: these figures are the candidate backfill's (interview results have their own section).
        command = [CLI, "backfill", "--start", args.first.isoformat(), "--end", args.last.isoformat(), "--no-results"]
        started, started_at = time.perf_counter(), time.time()
        done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
        seconds, ended_at = time.perf_counter() - started, time.time()
        if done.returncode != 0:
            raise SystemExit(f"heymilo-pipeline backfill failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        if args.shared_data:  # the runs wrote no DuckDB file: copy the shared tables into one (not timed)
            copied = subprocess.run([CLI, "publish"], env=env, cwd=work, capture_output=True, text=True)
            if copied.returncode != 0:
                raise SystemExit(f"heymilo-pipeline publish failed:\n{copied.stderr[-3000:]}")
        rows = int(query(Path(work) / "data" / "heymilo.duckdb", "SELECT count(*) AS n FROM candidates")["n"][0])
        runs = len(re.findall(r"run [0-9a-f-]{36}: succeeded", done.stderr))
        timeline = {"command_started": started_at, "command_ended": ended_at, **event_times(env, since=started_at)}
    write_result(args.out, {"seconds": seconds, "candidates": rows, "runs": runs, "timeline": timeline})


def event_times(env: dict[str, str], since: float) -> dict[str, Any]:
    """First and last planned event and materialization of the runs the command made (written ``since`` it
    started: not those of ``heymilo-pipeline postings`` before it), and the materializations' times (epoch
    seconds), read from the instance the command used."""
    import dagster as dg

    times: dict[str, list[float]] = {"planned": [], "materialized": []}
    kinds = {
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED: "planned",
        dg.DagsterEventType.ASSET_MATERIALIZATION: "materialized",
    }
    with patch.dict(os.environ, env, clear=True), dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            cursor = None
            while True:
                page = instance.get_records_for_run(run.run_id, cursor=cursor, of_type=set(kinds), limit=5_000)
                for record in page.records:
                    if record.timestamp < since:
                        continue
                    times[kinds[record.event_log_entry.dagster_event_type]].append(record.timestamp)
                if not page.has_more:
                    break
                cursor = page.cursor
    out: dict[str, Any] = {}
    for kind, values in times.items():
        values.sort()
        out[kind] = {"count": len(values), "first": min(values, default=None), "last": max(values, default=None)}
    out["materialized_at"] = times["materialized"]
    return out


def production(args: argparse.Namespace) -> dict[str, str]:
    """The production profile's variables and dagster.yaml (``DAGSTER_YAML`` for user_environment), or nothing."""
    storage, env = production_profile(args.postgres, args.shared_data)
    return {**env, "DAGSTER_YAML": "telemetry:\n  enabled: false\n" + storage} if storage else {}


if __name__ == "__main__":
    main()
