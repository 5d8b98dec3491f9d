"""The product as users run it: ``heymilo-pipeline postings`` then a timed ``heymilo-pipeline backfill``.

A fresh data directory and a fresh Dagster instance under bench/.work; the settings come from the environment, as
a user's do. The timed figure is the wall time of the ``backfill`` command, process start-up included.

- Default: the local profile, the ``dagster.yaml`` that ``make demo`` writes (Dagster's default SQLite storage).
- ``--postgres URL``: the production profile's Dagster side, as deploy/ sets it: deploy/dagster.yaml's storage in
  that (empty) database, ``DAGSTER_EVENT_BATCH_SIZE`` as deploy/docker-compose.yaml sets it, and the key's rate
  budget there. With ``--shared-data PATH`` the tables are the shared ones too (DuckLake: catalog in that database,
  files under PATH), counted afterwards through ``heymilo-pipeline publish``.

    python bench/cli_run.py --url URL --first 2025-01-01 --last 2025-12-31 [--posting ID ...] [--rate-limit N]
        [--postgres URL [--shared-data PATH]]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        env = user_environment(args, Path(work), args.rate_limit, args.posting, **production(args))
        reset_server_stats(args.url)
        command = [CLI, "backfill", "--start", args.first.isoformat(), "--end", args.last.isoformat()]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"heymilo-pipeline backfill failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        if args.shared_data:  # the runs wrote no DuckDB file: copy the shared tables into one (not timed)
            copied = subprocess.run([CLI, "publish"], env=env, cwd=work, capture_output=True, text=True)
            if copied.returncode != 0:
                raise SystemExit(f"heymilo-pipeline publish failed:\n{copied.stderr[-3000:]}")
        rows = int(query(Path(work) / "data" / "heymilo.duckdb", "SELECT count(*) AS n FROM candidates")["n"][0])
        runs = len(re.findall(r"run [0-9a-f-]{36}: succeeded", done.stderr))
    write_result(args.out, {"seconds": seconds, "candidates": rows, "runs": runs})


def production(args: argparse.Namespace) -> dict[str, str]:
    """The production profile's variables and dagster.yaml (``DAGSTER_YAML`` for user_environment), or nothing."""
    storage, env = production_profile(args.postgres, args.shared_data)
    return {**env, "DAGSTER_YAML": "telemetry:\n  enabled: false\n" + storage} if storage else {}


if __name__ == "__main__":
    main()
