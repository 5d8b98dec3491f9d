"""`make demo`: the whole pipeline on the embedded simulator, recorded in data/dagster_home.

Starts the simulator on a free loopback port, registers the postings, backfills the demo range for
every posting through Dagster (one run, each posting published on its own), runs the checks, stops
the simulator and prints a short report. Running it again is safe: every step is idempotent.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
import httpx

from heymilo_pipeline import cli
from heymilo_pipeline.api.stats import minimum_requests
from heymilo_pipeline.interview_results import FINISHED
from heymilo_pipeline.settings import Settings
from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec
from heymilo_pipeline.status import latest_check_results
from heymilo_pipeline.warehouse import query

DEMO_KEY = "sk_demo_local-simulator"  # not a secret: the simulator only answers on 127.0.0.1
DEMO_DAYS = 90
# The simulator enforces this, and the client paces itself under it: 40x the real API's 300, so the demo's
# ~7,500 interview results (one request each, at HEYMILO_RESULTS_SHARE of it) take a minute, not 50.
DEMO_RATE_LIMIT = 12_000

DAGSTER_YAML = """\
# Written by `make demo` / `make dev`: a local instance for trying the pipeline out.
telemetry:
  enabled: false
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4   # fetching runs in parallel; they share the key's rate budget
freshness:
  enabled: true  # the tables' FreshnessPolicy (a preview of Dagster's, off unless enabled)
"""


def demo_tenant(days: int = DEMO_DAYS, seed: int = 7) -> tuple[Tenant, date, date]:
    """The demo workspace: 8 postings over the last ``days`` days, up to yesterday."""
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=days), today - timedelta(days=1)
    return (
        Tenant(TenantSpec(seed=seed, postings=8, start=first, end=last, candidates_per_posting=(300, 3000))),
        first,
        last,
    )


def demo_faults(seed: int = 7) -> Faults:
    # A little weather, so the report shows retries doing their job.
    return Faults(rate_limit=DEMO_RATE_LIMIT, error_rate=0.01, drop_rate=0.005, seed=seed)


def prepare_environment(data_dir: Path, base_url: str, start: str) -> dict[str, str]:
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {
        "HEYMILO_API_KEY": DEMO_KEY,
        "HEYMILO_BASE_URL": base_url,
        "HEYMILO_DATA_DIR": str(data_dir),
        "HEYMILO_START_DATE": start,
        "HEYMILO_RATE_LIMIT": str(DEMO_RATE_LIMIT),
        "DAGSTER_HOME": str(home.resolve()),
    }
    os.environ.update(env)
    return env


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--days", type=int, default=DEMO_DAYS, show_default=True, help="Days of history to backfill.")
@click.option("--seed", type=int, default=7, show_default=True)
def main(data_dir: Path, days: int, seed: int) -> None:
    """Run the pipeline end to end on the simulator and print a report."""
    from heymilo_pipeline.simulator import create_app, serve_in_thread

    started = time.monotonic()
    tenant, first, last = demo_tenant(days, seed)
    with serve_in_thread(create_app(tenant, DEMO_KEY, demo_faults(seed))) as base_url:
        # The environment `make dev` gives Dagster too; the settings are read from it once, as a user's would be.
        location = cli.Location.build(Settings.from_env(prepare_environment(data_dir, base_url, first.isoformat())))
        instance = cli.open_instance()
        registered = cli.ensure_postings(location, instance, refresh=True)
        failed = cli.run_backfill(location, instance, first, last, registered)
        stats = httpx.get(f"{base_url}/_sim/stats", headers={"X-API-KEY": DEMO_KEY}).json()
        # Then what the daily audit judges: the whole warehouse (completeness asks the API, one request a posting).
        location.execute("warehouse_checks_job", instance)
    wanted = set(registered)
    truth = {(r["interview_id"], r["status"], r["score"]) for r in tenant.truth() if r["posting_id"] in wanted}
    finished = {r["interview_id"] for r in tenant.truth() if r["posting_id"] in wanted and r["status"] in FINISHED}
    truth_counts = Counter(r["posting_id"] for r in tenant.truth() if r["posting_id"] in wanted)
    minimum = minimum_requests(truth_counts.get(p, 0) for p in registered)
    candidate_requests = sum(n for route, n in stats["requests_by_route"].items() if route.endswith("/candidates"))
    _report(location, instance, registered, failed, candidate_requests, minimum, stats, time.monotonic() - started)
    _compare_with_truth(location.settings.duckdb_path, truth, finished)
    if failed:
        raise SystemExit(1)


def _report(location, instance, registered, failed, requests, minimum, stats, seconds) -> None:
    db = location.settings.duckdb_path
    counts = {
        name: int(query(db, f'SELECT count(*) AS n FROM "{name}"')["n"][0])
        for name in ("postings", "candidates", "candidate_workflow_steps", "partition_loads", "interview_results")
    }
    checks = latest_check_results(instance, location.defs)
    passed = sum(1 for _, status, _ in checks if status == "passed")
    retried = sum(stats["faults"].values()) + stats["rate_limited"]
    lines = [
        "",
        "HeyMilo pipeline demo: done" + (f" with FAILED postings {failed}" if failed else ""),
        f"  postings                  {counts['postings']} listed, {len(registered)} fetched (test postings skipped)",
        *(f"  {name:<25} {n:,} rows" for name, n in counts.items() if name != "postings"),
        f"  checks                    {passed} passed"
        + (f", {len(checks) - passed} not passed" if len(checks) - passed else "")
        + "".join(f"\n{'':28}{name}: {status}" for name, status, _ in checks if status != "passed"),
        f"  API requests              {requests} for candidates "
        f"(minimum {minimum}; {retried} retried after injected faults), "
        f"{sum(n for route, n in stats['requests_by_route'].items() if route.endswith('/data')):,} for results "
        "(one per finished candidate, and the retries)",
        f"  time                      {seconds:.0f} s",
        f"  DuckDB file               {db.resolve()}",
        f'  open it                   .venv/bin/python -c "from heymilo_pipeline.warehouse import query; '
        f"print(query('{db}', 'SELECT status, count(*) FROM candidates GROUP BY 1'))\"",
        "  see the runs              make dev   (Dagster UI on http://127.0.0.1:3000)",
    ]
    click.echo("\n".join(lines))


def _compare_with_truth(db: Path, truth: set[tuple], finished: set[str]) -> None:
    """The simulator knows every candidate: say whether the tables hold exactly those, as the API sent them, and
    the results of exactly the finished ones."""

    table = query(db, "SELECT interview_id, status, score FROM candidates")
    loaded = {(i, s, None if sc != sc else sc) for i, s, sc in zip(*(table[c] for c in table.columns), strict=True)}
    missing, extra = len(truth - loaded), len(loaded - truth)
    verdict = (
        "exactly the simulator's candidates"
        if not missing and not extra and len(table) == len(truth)
        else (f"MISMATCH: {missing} missing or different, {extra} unexpected")
    )
    click.echo(f"  ground truth              {len(table):,} rows loaded, {len(truth):,} expected: {verdict}")
    stored = set(query(db, "SELECT interview_id FROM interview_results")["interview_id"])
    verdict = (
        "the results of exactly the simulator's finished candidates"
        if stored == finished
        else f"MISMATCH: {len(finished - stored)} missing, {len(stored - finished)} unexpected"
    )
    click.echo(f"  results                   {len(stored):,} stored, {len(finished):,} finished candidates: {verdict}")


if __name__ == "__main__":  # pragma: no cover
    main()
