"""Correctness at scale, with faults on (the figures quoted when the client and pipeline issues closed).

    .venv/bin/python bench/verify_backfill.py client     # one posting, one year, 5,000+ candidates
    .venv/bin/python bench/verify_backfill.py pipeline   # every posting, 90 days, through Dagster, then the update

Both compare with the simulator's ground truth and count requests on the simulator's side.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

FAULTS = dict(error_rate=0.05, drop_rate=0.02, truncate_rate=0.02, malformed_rate=0.02, seed=9)
KEY = "sk_test_verify"


def client() -> None:
    from heymilo_pipeline.api import ClientSettings, DayRange, HeyMiloClient
    from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, create_app, serve_in_thread

    tenant = Tenant(TenantSpec(seed=5, postings=1, start=date(2025, 1, 1), end=date(2025, 12, 31),
                               candidates_per_posting=(5200, 5200)))  # fmt: skip
    posting_id = max(tenant.posting_ids(), key=lambda p: sum(1 for r in tenant.truth() if r["posting_id"] == p))
    truth = [r for r in tenant.truth() if r["posting_id"] == posting_id]
    with serve_in_thread(create_app(tenant, KEY, Faults(**FAULTS))) as url, tempfile.TemporaryDirectory() as tmp:
        settings = ClientSettings.build(api_key=KEY, base_url=url, rate_limit=100_000, state_dir=Path(tmp))

        async def fetch():
            async with HeyMiloClient(settings) as c:
                return await c.fetch_candidates(posting_id, DayRange(date(2025, 1, 1), date(2025, 12, 31)))

        batch = asyncio.run(fetch())
    ids = [c.interview_id for c in batch.candidates]
    s = batch.stats
    print(
        f"client: candidates={len(truth)} returned={len(ids)} distinct={len(set(ids))} "
        f"equal_to_truth={batch.raw == truth}"
    )
    print(
        f"        requests={s.requests} = ceil(n/100) {math.ceil(len(truth) / 100)} + retries {s.retries} "
        f"({s.requests == math.ceil(len(truth) / 100) + s.retries}); 429s={s.rate_limited} pages={s.pages}"
    )


def pipeline() -> None:
    today = datetime.now(UTC).date()
    last, start = today - timedelta(days=1), today - timedelta(days=90)
    import dagster as dg
    import httpx

    from heymilo_pipeline.api.stats import minimum_requests
    from heymilo_pipeline.api.windows import day_of, midnight
    from heymilo_pipeline.cli import Location
    from heymilo_pipeline.defs.partitions import POSTINGS
    from heymilo_pipeline.defs.schedules import update_requests
    from heymilo_pipeline.defs.tags import range_tags
    from heymilo_pipeline.refresh import todays_plan
    from heymilo_pipeline.settings import Settings
    from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, create_app, serve_in_thread
    from heymilo_pipeline.warehouse import query

    tenant = Tenant(TenantSpec(seed=90, postings=10, start=start, end=last, candidates_per_posting=(500, 4000)))
    data = Path(tempfile.mkdtemp(prefix="verify-"))
    stats_url = None
    try:
        with serve_in_thread(create_app(tenant, KEY, Faults(rate_limit=600, **FAULTS))) as url, \
                dg.instance_for_test() as instance:  # fmt: skip
            stats_url = f"{url}/_sim/stats"
            # 3000/min: more than the simulator's 600/min, so some 429s are expected
            settings = Settings(api_key=KEY, base_url=url, data_dir=data, start_date=start, rate_limit=3000)
            location = Location.build(settings, secrets_from_env=False)
            began = time.monotonic()
            assert location.execute("postings_job", instance)
            registered = list(instance.get_dynamic_partitions(POSTINGS))
            ok = [location.execute("candidates_job", instance, range_tags(start, last, p, p)) for p in registered]
            stats = httpx.get(stats_url, headers={"X-API-KEY": KEY}).json()
            truth = [r for r in tenant.truth() if r["posting_id"] in registered]
            per_posting = {p: sum(1 for r in truth if r["posting_id"] == p) for p in registered}
            minimum = minimum_requests(per_posting.values())
            requests = sum(v for k, v in stats["requests_by_route"].items() if k.endswith("/candidates"))
            retried = sum(stats["faults"].values()) + stats["rate_limited"]
            table = query(data / "heymilo.duckdb", "SELECT interview_id, status, score FROM candidates")
            want = {(r["interview_id"], r["status"], r["score"]) for r in truth}
            got = {(i, s, None if x != x else x) for i, s, x in zip(*(table[c] for c in table.columns), strict=True)}
            print(
                f"backfill: {len(registered)} postings x 90 days, runs ok {sum(ok)}/{len(ok)}, "
                f"{len(truth)} candidates, "
                f"{len(table)} rows, missing {len(want - got)}, unexpected {len(got - want)}, "
                f"doubled {len(table) - len(set(table['interview_id']))}, {time.monotonic() - began:.0f} s"
            )
            print(
                f"requests: {requests} for candidates, minimum {minimum}, retried {retried} "
                f"(faults {stats['faults']}, 429s {stats['rate_limited']}); "
                f"(requests - retried) / minimum = {(requests - retried) / minimum:.3f}"
            )
            tenant.set_now(midnight(today) + 30 * 3600)  # 30 hours later: candidates advance
            httpx.post(f"{url}/_sim/stats/reset", headers={"X-API-KEY": KEY})
            request = update_requests(instance, today, todays_plan(today, settings, None))[-1]  # the recent days
            updated = location.execute("candidates_job", instance, dict(request.tags))
            after = httpx.get(stats_url, headers={"X-API-KEY": KEY}).json()
        first = last - timedelta(days=7)
        fresh = {r["interview_id"]: (r["status"], r["score"]) for r in tenant.truth()
                 if r["posting_id"] in registered and first <= day_of(r["created_at"]) <= last}  # fmt: skip
        rows = query(data / "heymilo.duckdb", "SELECT interview_id, status, score FROM candidates "
                     "WHERE created_date >= ?", [first])  # fmt: skip
        loaded = {i: (s, None if x != x else x) for i, s, x in zip(*(rows[c] for c in rows.columns), strict=True)}
        changed = sum(1 for i, v in fresh.items() if (i, *v) not in want)
        print(
            f"update: success {updated}, days {first}..{last}, "
            f"{sum(v for k, v in after['requests_by_route'].items() if k.endswith('/candidates'))} requests, "
            f"{changed} candidates changed since the backfill, tables equal the truth: {loaded == fresh}"
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    {"client": client, "pipeline": pipeline}[sys.argv[1] if len(sys.argv) > 1 else "client"]()
