"""Two hosts sharing one API key through PostgreSQL: each a ``heymilo-pipeline backfill`` with a data directory
and a Dagster home of its own, started at once against a simulator that enforces the limit. Reports what the
server saw: requests, 429s, and the rate over the span of the two against the limit. With ``--shared-data`` the
hosts write the shared tables (DuckLake: catalog in the same database, files there; S3 credentials from AWS's
variables) instead of files of their own, and the rows they hold are reported too.

    python bench/two_hosts.py --url URL --postgres URL --first D --last D --posting A --posting B --rate-limit N
        [--shared-data s3://bucket/prefix/]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CLI, KEY, WORK_DIR, range_arguments, user_environment, write_result


def main() -> None:
    parser = range_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--postgres", required=True, help="the database both hosts share (HEYMILO_RATE_BUDGET_URL)")
    parser.add_argument("--rate-limit", type=int, required=True, help="HEYMILO_RATE_LIMIT of each host")
    parser.add_argument("--shared-data", help="HEYMILO_SHARED_DATA_PATH: the hosts write the shared tables")
    args = parser.parse_args()
    shared = {}
    if args.shared_data:
        shared = {"HEYMILO_SHARED_CATALOG_URL": args.postgres, "HEYMILO_SHARED_DATA_PATH": args.shared_data}
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        envs = []
        for host, posting in zip("ab", args.posting, strict=True):  # one posting each
            root = Path(work) / host
            root.mkdir()
            extra = {"HEYMILO_RATE_BUDGET_URL": args.postgres, **shared}
            envs.append(user_environment(args, root, args.rate_limit, [posting], **extra))
        time.sleep(float(httpx.get(f"{args.url}/_sim/stats", headers={"X-API-KEY": KEY}).json()["rate_window_s"]))
        httpx.post(f"{args.url}/_sim/stats/reset", headers={"X-API-KEY": KEY})
        command = [CLI, "backfill", "--start", args.first.isoformat(), "--end", args.last.isoformat()]
        started = time.perf_counter()
        hosts = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for env in envs]  # fmt: skip
        errors = [host.communicate()[1] for host in hosts]
        seconds = time.perf_counter() - started
        if any(host.returncode for host in hosts):
            raise SystemExit("a host's backfill failed:\n" + "\n".join(e[-3000:] for e in errors))
    stats = httpx.get(f"{args.url}/_sim/stats", headers={"X-API-KEY": KEY}).json()
    result: dict = {"seconds": seconds, "stats": stats}
    if args.shared_data:
        from heymilo_pipeline.storage.shared import SharedStore

        counts = SharedStore.at(args.postgres, args.shared_data, os.environ).table_counts()
        result["shared_rows"] = counts
    write_result(args.out, result)


if __name__ == "__main__":
    main()
