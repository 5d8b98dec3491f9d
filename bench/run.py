"""``make bench``: every benchmark of the pipeline in one run, written to bench/RESULTS.md.

    .venv/bin/python bench/run.py            # everything (~10-15 min on 2 cores), rewrites bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # tiny sizes; no dlt, real-limit runs or two hosts (CI smoke test)
    .venv/bin/python bench/run.py --only local --only dlt --out /tmp/r.md

Each measurement runs in its own child process (peak RSS = the sampled RSS of the child's process
tree, or its own VmHWM if larger); the simulator runs as ``heymilo-sim serve`` in another process,
so server and client each have a core. The machine is shared and noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import YEAR_FIRST, YEAR_LAST, MiB, SimSpec, bench_script, candidate_requests, sim_stats, simulator

# After common, which notes the user's ARROW_DEFAULT_MEMORY_POOL before heymilo_pipeline sets it.
from heymilo_pipeline.devservers import new_database, postgres_server, s3_server, sqlalchemy_url

# The code before the performance work of the benchmarks (GC, parsing, parallel lake writes), measured
# beside the current code in the same run for the before/after figures.
BASELINE_COMMIT = "d6a1dcc"
BENCHES = (
    "requests", "ratelimit", "local", "dlt", "dagster", "overhead", "hosts", "bookkeeping", "results", "results-memory",
)  # fmt: skip


@dataclass
class Row:
    section: str
    measure: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: informational


@dataclass
class Report:
    quick: bool
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, measure: str, value: str, target: str = "", passed: bool | None = None) -> None:
        self.rows.append(Row(section, measure, value, target, passed))
        mark = "" if passed is None else (" PASS" if passed else " FAIL")
        print(f"  {measure}: {value}{f'  (target {target})' if target else ''}{mark}", flush=True)


def posting_args(ids: list[str]) -> list[str]:
    return [a for p in ids for a in ("--posting", p)]


def mib(n: float) -> str:
    return f"{n / MiB:,.0f} MiB"


def failed(report: Report, section: str, result: dict[str, Any]) -> bool:
    if "error" in result:
        report.add(section, "error", result["error"].split(": ")[-1], "runs", False)
        report.notes.append(f"{section}: {result['error']}\n\n```\n{result.get('stderr_tail', '')[-1500:]}\n```")
        return True
    return False


# --- 1. request efficiency ------------------------------------------------------------------


def bench_requests(report: Report) -> None:
    section = "1. Request efficiency"
    print(f"{section} ...", flush=True)
    if report.quick:
        spec = SimSpec(postings=6, candidates=(400, 600), first=date(2025, 12, 1), last=date(2025, 12, 31))
    else:
        spec = SimSpec(postings=21, candidates=(26_000, 26_000))
    tenant = spec.tenant()
    ids = common.wanted_postings(tenant)
    counts = common.counts_in(tenant, ids, spec.first, spec.last)
    minimum = common.minimum_requests(counts)
    with simulator(spec) as url:
        sim_stats(url, reset=True)
        result = bench_script(
            "backfill", "--url", url, "--first", spec.first.isoformat(), "--last", spec.last.isoformat(),
            *posting_args(ids),
        )  # fmt: skip
        stats = sim_stats(url)
    report.raw["requests"] = {k: v for k, v in result.items() if k != "page_times_s"} | {"sim": stats}
    if failed(report, section, result):
        return
    made = candidate_requests(stats)
    days = (spec.last - spec.first).days + 1
    report.add(section, "backfill", f"{len(ids)} postings x {days} days, {result['candidates']:,} candidates")
    # A large posting is walked in day sub-ranges: each may cost one request more, plus the first page (the probe).
    from heymilo_pipeline.api.windows import DayRange
    from heymilo_pipeline.ingest import splits_for

    span = DayRange(spec.first, spec.last)
    parts = [splits_for(n, n > 100, span, 2 * 4) for n in counts.values()]
    allowed = minimum + sum(k + 1 for k in parts if k > 1)
    report.add(section, "candidate requests / minimum", f"{made:,} / {minimum:,} = {made / minimum:.3f}",
               f"<= (minimum + splits) / minimum = {allowed / minimum:.3f}", made <= allowed)  # fmt: skip
    report.add(section, "429s / retries", f"{stats['rate_limited']} / {result['client_stats']['retries']}")
    report.add(
        section,
        "wall time (loopback, simulator in its own process)",
        f"{result['seconds']:.1f} s, {result['candidates_per_s']:,.0f} candidates/s, "
        f"peak RSS {mib(result['peak_rss'])}",
    )


# --- 2. rate-limit utilisation ---------------------------------------------------------------


def utilisation(result: dict[str, Any], limit: int, window: float) -> tuple[float, float]:
    """(requests per window achieved between the first and the last page, as a share of the limit;
    the seconds that span covers)."""
    times = sorted(result["page_times_s"])
    if len(times) < 2:
        return 0.0, 0.0
    span = times[-1] - times[0]
    rate = (len(times) - 1) / span if span else 0.0
    return rate * window / limit, span


def bench_ratelimit(report: Report) -> None:
    section = "2. Rate-limit utilisation"
    print(f"{section} ...", flush=True)
    runs = []
    if report.quick:
        runs.append(("time-scaled 3,000/min (300 per 6 s), 20 ms latency", SimSpec(
            postings=6, candidates=(1_500, 1_500), rate_limit=300, rate_window_s=6.0, latency_ms=20)))  # fmt: skip
    else:
        runs.append(("time-scaled 3,000/min (300 per 6 s), 20 ms latency", SimSpec(
            postings=6, candidates=(40_000, 40_000), rate_limit=300, rate_window_s=6.0, latency_ms=20)))  # fmt: skip
        runs.append(("real 300/min, 200 ms latency", SimSpec(
            postings=6, candidates=(9_000, 9_000), rate_limit=300, rate_window_s=60.0, latency_ms=200)))  # fmt: skip
    for label, spec in runs:
        tenant = spec.tenant()
        # The postings with candidates, all of one size: they run side by side and end together.
        ids = [p["id"] for p in tenant.postings() if not p["test_posting"] and p["status"] != "draft"]
        with simulator(spec) as url:
            sim_stats(url, reset=True)
            result = bench_script(
                "backfill", "--url", url, "--first", spec.first.isoformat(), "--last", spec.last.isoformat(),
                "--rate-limit", str(spec.rate_limit), "--rate-window", str(spec.rate_window_s),
                "--concurrency", str(len(ids)), "--no-write", *posting_args(ids),
            )  # fmt: skip
            stats = sim_stats(url)
        report.raw.setdefault("ratelimit", []).append(
            {"label": label, **{k: v for k, v in result.items() if k != "page_times_s"}, "sim": stats}
        )
        if failed(report, section, result):
            continue
        share, span = utilisation(result, spec.rate_limit, spec.rate_window_s)
        late = [t for t in result["rate_limited_at_s"] if t > 5.0]
        per_minute = share * spec.rate_limit * 60 / spec.rate_window_s
        report.add(
            section,
            f"{label}: achieved / limit",
            f"{per_minute:,.0f}/min of {spec.rate_limit * 60 / spec.rate_window_s:,.0f}/min = {share:.3f} "
            f"(over {span:.0f} s, {candidate_requests(stats)} requests)",
            ">= 0.95",
            share >= 0.95,
        )
        report.add(
            section,
            f"{label}: 429s (after the first 5 s)",
            f"{stats['rate_limited']} ({len(late)}); busiest window {stats['max_requests_in_window']} of "
            f"{spec.rate_limit}",
            "0 after the first seconds",
            not late,
        )


# --- 3. local processing ---------------------------------------------------------------------


def baseline_tree(commit: str) -> Path | None:
    """The package as of ``commit`` (git archive, read-only), to measure the code before the changes."""
    target = common.WORK_DIR / f"baseline-{commit}"
    if (target / "heymilo_pipeline").is_dir():
        return target
    try:
        data = subprocess.run(
            ["git", "-C", str(common.REPO), "archive", "--format=tar", commit, "heymilo_pipeline"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tmp:
        tmp.write(data)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(target, filter="data")
    return target


def bench_local(report: Report) -> None:
    section = "3. Local processing"
    print(f"{section} ...", flush=True)
    per_posting = 2_000 if report.quick else 25_000
    cache = common.page_cache(4, per_posting)
    # 4 cached postings x 25k = 100k; 10 copies of them under new posting ids = 1M (quick: 1 and 2 postings)
    small = ["--limit", "1"] if report.quick else ["--replicas", "1"]
    big = ["--limit", "2"] if report.quick else ["--replicas", "10"]
    # key -> (implementation, arguments, environment)
    runs: dict[str, tuple[str, list[str], dict[str, str] | None]] = {
        "ours-small": ("ours", small, None),
        "ours-big": ("ours", big, None),
        "pandas-small": ("pandas", small, None),
        "costs": ("costs", ["--limit", "1"], None),
    }
    if not report.quick:
        runs["pandas-1"] = ("pandas", ["--replicas", "1", "--limit", "1"], None)
        baseline = baseline_tree(BASELINE_COMMIT)
        if baseline is not None:
            runs["baseline-1"] = ("ours", ["--replicas", "1", "--limit", "1"], {"PYTHONPATH": str(baseline)})
            runs["ours-1"] = ("ours", ["--replicas", "1", "--limit", "1"], None)
        else:
            report.notes.append(f"local: no git checkout of {BASELINE_COMMIT}; the before/after run was skipped")
    results: dict[str, dict[str, Any]] = {}
    for key, (impl, args, env) in runs.items():
        result = bench_script("local", "--impl", impl, "--cache", str(cache), *args, env=env)
        results[key] = result
        report.raw.setdefault("local", {})[key] = result
        if failed(report, section, result):
            return
    ours_s, ours_b, pandas_s = results["ours-small"], results["ours-big"], results["pandas-small"]
    for r in (ours_s, ours_b):
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items())
        report.add(
            section,
            f"ours, {r['candidates']:,} candidates ({r['partitions']:,} posting-day partitions, "
            f"{r.get('lake_files', 0):,} lake files)",
            f"{r['candidates_per_s']:,.0f} candidates/s, peak RSS {mib(r['peak_rss'])} [{stages}]",
            ">= 100,000/s",
            r["candidates_per_s"] >= 100_000,
        )
    growth = ours_b["peak_rss"] / ours_s["peak_rss"]
    report.add(section, f"peak RSS growth {ours_s['candidates']:,} -> {ours_b['candidates']:,}",
               f"{growth:.2f}x", "< 1.5x", growth < 1.5)  # fmt: skip
    report.add(
        section,
        f"pandas.json_normalize -> Parquet, {pandas_s['candidates']:,} candidates (one file)",
        f"{pandas_s['candidates_per_s']:,.0f} candidates/s, peak RSS {mib(pandas_s['peak_rss'])}; "
        f"ours/pandas speed {ours_s['candidates_per_s'] / pandas_s['candidates_per_s']:.2f}x",
    )
    costs = dict(results["costs"]["us_per_candidate"])
    today = costs.pop("today's path: parse + flatten (both tables) + raw text")
    reader = costs.pop("DuckDB read_json of the pages as sent: both tables + raw text")
    per_line = costs.pop("DuckDB read_json, one record per line (not how pages come): both tables + raw text")
    parse = costs["parse JSON (pydantic-core)"]
    # Paging needs each page's has_more and last id at once, so the reader path parses every page too.
    report.add(
        section,
        "DuckDB's JSON reader instead of today's path (parse, validate, flatten to both tables, raw text)",
        f"today {today:.1f} us a candidate; reader {reader:.1f} us + the parse paging needs {parse:.1f} us ="
        f" {reader + parse:.1f} us, before the checks it leaves out; {per_line:.1f} us if records came one"
        f" per line; reader/today {(reader + parse) / today:.2f}x the time (the pipeline keeps today's path)",
    )
    report.add(
        section,
        f"cost per candidate, each piece alone ({results['costs']['candidates']:,} candidates, best of 3)",
        "; ".join(f"{name} {us:.1f} us" for name, us in costs.items()),
    )
    if "baseline-1" in results:
        before, after = results["baseline-1"], results["ours-1"]
        report.add(
            section,
            f"before/after ({BASELINE_COMMIT} vs now), one posting-year, {after['candidates']:,} candidates",
            f"{before['candidates_per_s']:,.0f} -> {after['candidates_per_s']:,.0f} candidates/s "
            f"({after['candidates_per_s'] / before['candidates_per_s']:.1f}x); stages before "
            + ", ".join(f"{k} {v:.1f} s" for k, v in before["stages"].items())
            + "; after "
            + ", ".join(f"{k} {v:.1f} s" for k, v in after["stages"].items()),
        )
        one = results["pandas-1"]
        report.add(
            section,
            f"same posting-year, pandas.json_normalize -> one Parquet file, {one['candidates']:,} candidates",
            f"{one['candidates_per_s']:,.0f} candidates/s",
        )


# --- 4. against dlt ---------------------------------------------------------------------------


def bench_dlt(report: Report) -> None:
    section = "4. Against dlt"
    print(f"{section} ...", flush=True)
    if report.quick:
        report.add(section, "skipped", "--quick skips dlt")
        return
    try:
        import dlt  # noqa: F401
    except ImportError as exc:
        report.add(section, "skipped", f"dlt is not installed ({exc}); pip install -e '.[bench]'", "runs", False)
        return
    spec = SimSpec(postings=6, candidates=(5_000, 5_000))
    tenant = spec.tenant()
    ids = common.wanted_postings(tenant)
    base = ["--first", spec.first.isoformat(), "--last", spec.last.isoformat(), *posting_args(ids)]
    results: dict[str, dict[str, Any]] = {}
    with simulator(spec) as url:
        for name, script, extra in (
            ("core alone (bench/backfill.py, no Dagster): a floor", "backfill", []),
            ("dlt parquet", "dlt_run", ["--mode", "parquet"]),
            ("dlt defaults", "dlt_run", ["--mode", "default"]),
        ):
            sim_stats(url, reset=True)
            result = bench_script(script, "--url", url, *base, *extra)
            result["requests"] = candidate_requests(sim_stats(url))
            result.pop("page_times_s", None)
            results[name] = result
            report.raw.setdefault("dlt", {})[name] = result
            if failed(report, section, result):
                return
    ours = results["core alone (bench/backfill.py, no Dagster): a floor"]
    report.add(section, "backfill", f"{len(ids)} postings x 365 days, {ours['candidates']:,} candidates, loopback")
    for name, r in results.items():
        report.add(
            section,
            name,
            f"{r['seconds']:.1f} s, {r['requests']} requests, peak RSS {mib(r['peak_rss'])}, "
            f"{r['candidates']:,} candidates",
        )
    best, default = results["dlt parquet"], results["dlt defaults"]
    # "core" is the pipeline's core without Dagster (a floor, not the product); section 6 holds the product
    # (the CLI) against dlt, with the targets.
    speed_best, speed_default = best["seconds"] / ours["seconds"], default["seconds"] / ours["seconds"]
    report.add(section, "speed core vs dlt parquet", f"{speed_best:.2f}x faster")
    report.add(section, "speed core vs dlt defaults", f"{speed_default:.2f}x faster")
    # Our extra requests are the splits of a run's tail (ingest.splits_allowed): at most 2 x 4 sub-ranges and a probe
    # for each of the last four postings.
    report.add(section, "requests core / dlt", f"{ours['requests']} / {best['requests']}", "<= dlt + 4 x 9",
               ours["requests"] <= min(best["requests"], default["requests"]) + 36)  # fmt: skip
    share = ours["peak_rss"] / default["peak_rss"]
    report.add(section, "peak RSS core / dlt defaults", f"{share:.2f}")


# --- 5. Dagster overhead ----------------------------------------------------------------------


@contextmanager
def postgres() -> Iterator[str | None]:
    """A throwaway PostgreSQL server (heymilo_pipeline.devservers), or None where its programs are missing."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except RuntimeError as exc:
            print(f"  no PostgreSQL: {exc}", flush=True)
            url = None
        yield url


def fresh_database(url: str, name: str) -> str:
    """A new database on the server, as the SQLAlchemy URL Dagster's storage takes (the budget takes it too)."""
    return sqlalchemy_url(new_database(url, name))


def production_args(server: str, s3: Any, name: str) -> list[str]:
    """The production profile for cli_run.py / dagster_update.py: a fresh database ``name`` for Dagster's storage,
    the budget and the shared tables' catalog, and the tables' files under ``name/`` in the bucket."""
    return ["--postgres", fresh_database(server, name), "--shared-data", f"s3://{s3.bucket}/{name}/"]


def bench_dagster(report: Report) -> None:
    section = "5. Dagster overhead"
    print(f"{section} ...", flush=True)
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    postings = 6 if report.quick else 51  # one is a test posting, which the pipeline skips
    spec = SimSpec(
        postings=postings,
        candidates=(300, 1_500),
        first=today - timedelta(days=60),
        last=yesterday,
        rate_limit=300,
        latency_ms=200,
    )
    start = ["--start-date", (today - timedelta(days=30)).isoformat()]
    with postgres() as server, ExitStack() as stack:
        # The default instance (SQLite files, the budget in a file), then Dagster's storage and the rate budget in
        # PostgreSQL, then also the tables in DuckLake (the whole production profile: catalog in PostgreSQL, files
        # on a throwaway S3 server). A fresh simulator each, so none inherits another's rate window.
        variants: list[tuple[str, list[str], dict[str, str]]] = [("SQLite (default)", [], {})]
        if server:
            s3 = stack.enter_context(s3_server())
            variants.append(("PostgreSQL", ["--postgres", fresh_database(server, "update")], {}))
            shared = production_args(server, s3, "update_shared")
            variants.append(("PostgreSQL + shared tables (production profile)", shared, s3.environ()))
        else:
            report.add(section, "daily update on PostgreSQL", "not run: no PostgreSQL (initdb, pg_ctl)", "runs", False)
        results = {}
        for name, extra, environ in variants:
            with simulator(spec) as url, patch.dict(os.environ, environ):  # the child inherits the S3 credentials
                sim_stats(url, reset=True)
                result = bench_script("dagster_update", "--url", url, *start, *extra)
                result["rate_limited"] = sim_stats(url)["rate_limited"]
            report.raw.setdefault("dagster", {})[name] = result
            if failed(report, section, result):
                return
            results[name] = result
            report.add(
                section,
                f"daily update on {name}, {result['postings']} postings x {result['days']} days "
                f"({result['partitions']:,} partitions, {result['candidates']:,} candidates, "
                f"{result['requests']} requests, {result['rate_limited']} 429s)",
                f"wall {result['wall_seconds']:.1f} s, API {result['api_seconds']:.1f} s, "
                f"rest {result['overhead_seconds']:.1f} s (publishing {result['publish_seconds']:.1f} s); "
                f"wall/API {result['wall_over_api']:.2f}; peak RSS {mib(result['peak_rss'])}",
                "wall/API <= 1.3",
                result["wall_over_api"] <= 1.3,
            )
    if len(results) == 3:
        sqlite, pg, shared_tables = results.values()
        report.add(
            section,
            "  the rest (ours and Dagster's): PostgreSQL, and with the shared tables, against SQLite",
            f"{pg['overhead_seconds']:.1f} s and {shared_tables['overhead_seconds']:.1f} s against "
            f"{sqlite['overhead_seconds']:.1f} s",
        )


# --- 6. overhead: the product as users run it -------------------------------------------------------


@contextmanager
def fake_api(*tenants: str, days: int = 365) -> Iterator[tuple[str, dict[str, int]]]:
    """bench/fake_api.py in its own process: the simulator's data from bytes rendered once (fast, no faults)."""
    args = [common.PYTHON, str(common.BENCH_DIR / "fake_api.py"), "--port", "0", "--days", str(days)]
    proc = subprocess.Popen(
        [*args, *(a for t in tenants for a in ("--tenant", t))], stdout=subprocess.PIPE, text=True, cwd=common.REPO
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        counts = json.loads(proc.stdout.readline())
        yield url, counts
    finally:
        proc.terminate()
        proc.wait(10)


def span_rate(stats: dict[str, Any]) -> float:
    """Requests per second between the first and the latest request the server saw."""
    first, last = stats.get("first_request_at"), stats.get("last_request_at")
    n = candidate_requests(stats)
    return (n - 1) / (last - first) if first and last and last > first and n > 1 else 0.0


def run_three(
    report: Report, section: str, url: str, ids: list[str], first: date, last: date, key: str, dlt: bool
) -> dict[str, dict[str, Any]] | None:
    """The bare loop (floor), the CLI (ours) and, when installed, dlt's rest_api with Parquet, on one server."""
    base = ["--first", first.isoformat(), "--last", last.isoformat(), *posting_args(ids)]
    runs = [("bare loop (floor)", "bare", [url]), ("ours: heymilo-pipeline backfill", "cli_run", ["--url", url])]
    if dlt:
        runs.append(("dlt rest_api, parquet", "dlt_run", ["--url", url, "--mode", "parquet"]))
    results: dict[str, dict[str, Any]] = {}
    for name, script, head in runs:
        sim_stats(url, reset=True)
        result = bench_script(script, *head, *base)
        if failed(report, section, result):
            return None
        result["requests"] = candidate_requests(sim_stats(url))
        results[name] = result
        report.add(
            section,
            f"{key}: {name}",
            f"{result['seconds']:.1f} s, {result['candidates']:,} candidates, {result['requests']:,} requests, "
            f"peak RSS {mib(result['peak_rss'])}",
        )
    report.raw.setdefault("overhead", {})[key] = results
    return results


def production_backfill(
    report: Report, section: str, url: str, ids: list[str], first: date, last: date
) -> dict[str, Any] | None:
    """The CLI's backfill on the production profile (Dagster's storage and the budget in PostgreSQL, the shared
    tables' files on S3), against the same server as run_three's."""
    with postgres() as server, ExitStack() as stack:
        if server is None:
            report.add(section, "production profile", "not run: no PostgreSQL (initdb, pg_ctl)", "runs", False)
            return None
        s3 = stack.enter_context(s3_server())
        production = production_args(server, s3, "overhead")
        with patch.dict(os.environ, s3.environ()):  # the child inherits the S3 credentials
            sim_stats(url, reset=True)
            result = bench_script(
                "cli_run", "--url", url, "--first", first.isoformat(), "--last", last.isoformat(), *posting_args(ids),
                *production,
            )  # fmt: skip
    if failed(report, section, result):
        return None
    result["requests"] = candidate_requests(sim_stats(url))
    report.raw.setdefault("overhead", {})[f"{len(ids)} postings x 90 days, production profile"] = result
    report.add(
        section,
        f"{len(ids)} postings x 90 days: ours on the production profile (PostgreSQL, shared tables)",
        f"{result['seconds']:.1f} s, {result['candidates']:,} candidates, {result['requests']:,} requests, "
        f"peak RSS {mib(result['peak_rss'])}",
    )
    return result


def bench_overhead(report: Report) -> None:
    section = "6. Overhead (as users run it)"
    print(f"{section} ...", flush=True)
    try:
        import dlt  # noqa: F401

        have_dlt = not report.quick
    except ImportError:
        have_dlt = False
        report.add(section, "dlt", "not installed (pip install -e '.[bench]'): no dlt rows", "runs", report.quick)
    big = 10_000 if report.quick else 100_000
    ours_name, bare_name, dlt_name = (
        "ours: heymilo-pipeline backfill",
        "bare loop (floor)",
        "dlt rest_api, parquet",
    )
    # One large posting: a year, end to end through Dagster, the lake and DuckDB.
    with fake_api(f"7:4:{big}:{big}") as (url, counts):
        posting = next(p for p, n in counts.items() if n == big)
        results = run_three(report, section, url, [posting], YEAR_FIRST, YEAR_LAST, f"one posting of {big:,}", have_dlt)
    if results:
        ratio = results[ours_name]["seconds"] / results[bare_name]["seconds"]
        report.add(section, f"one posting of {big:,}: ours / bare loop", f"{ratio:.2f}", "<= 1.2", ratio <= 1.2)
        if dlt_name in results:
            speed = results[dlt_name]["seconds"] / results[ours_name]["seconds"]
            report.add(section, f"one posting of {big:,}: ours vs dlt", f"{speed:.2f}x faster", ">= 3x", speed >= 3)
    # A typical workspace: 50 postings of a few hundred candidates over 90 days.
    postings = 6 if report.quick else 55
    with fake_api(f"13:{postings}:200:600", days=90) as (url, counts):
        ids = sorted(p for p, n in counts.items() if n > 0)[: 5 if report.quick else 50]
        last = YEAR_FIRST + timedelta(days=89)
        key = f"{len(ids)} postings x 90 days"
        results = run_three(report, section, url, ids, YEAR_FIRST, last, key, have_dlt)
        production = None if report.quick else production_backfill(report, section, url, ids, YEAR_FIRST, last)
    if results and dlt_name in results:
        speed = results[dlt_name]["seconds"] / results[ours_name]["seconds"]
        report.add(section, f"{key}: ours vs dlt", f"{speed:.2f}x faster", ">= 3x", speed >= 3)
        if production:
            speed = results[dlt_name]["seconds"] / production["seconds"]
            report.add(section, f"{key}: ours on the production profile vs dlt", f"{speed:.2f}x faster", "> 1x",
                       speed > 1)  # fmt: skip
            ratio = production["seconds"] / results[bare_name]["seconds"]
            report.add(section, f"{key}: ours on the production profile / bare loop", f"{ratio:.2f}")
    if report.quick:  # at tiny sizes the real limit measures the command's start-up, not the pacing
        report.add(section, "skipped", "--quick skips the runs at the real limit")
        return
    # The same workspace under the key's real limit (300/min) with 200 ms answers, as against the API.
    spec = SimSpec(
        postings=postings, candidates=(200, 600), first=YEAR_FIRST, last=last, rate_limit=300, rate_window_s=60.0,
        latency_ms=200,
    )  # fmt: skip
    tenant = spec.tenant()
    ids = common.wanted_postings(tenant)[: 5 if report.quick else 50]
    with simulator(spec) as url:
        sim_stats(url, reset=True)
        result = bench_script(
            "cli_run", "--url", url, "--first", YEAR_FIRST.isoformat(), "--last", last.isoformat(),
            "--rate-limit", "300", *posting_args(ids),
        )  # fmt: skip
        stats = sim_stats(url)
    if not failed(report, section, result):
        made = candidate_requests(stats)
        needed = made / 5.0  # seconds the limiter alone requires at 300/min
        ratio = result["seconds"] / needed
        report.raw.setdefault("overhead", {})["rate-limited workspace"] = {**result, "stats": stats}
        report.add(
            section,
            f"{len(ids)} postings x 90 days at 300/min, 200 ms answers: wall / limiter time",
            f"{result['seconds']:.1f} s / {needed:.1f} s = {ratio:.2f} ({made} requests, {stats['rate_limited']} 429s, "
            f"{result['candidates']:,} candidates)",
            "<= 1.3",
            ratio <= 1.3,
        )
    # One large posting at the key's real limit (300/min) with 300 ms answers: ~100 s for 50,000 candidates.
    size = 2_000 if report.quick else 50_000
    spec = SimSpec(postings=4, candidates=(size, size), rate_limit=300, rate_window_s=60.0, latency_ms=300)
    tenant = spec.tenant()
    posting = common.wanted_postings(tenant)[0]
    with simulator(spec) as url:
        sim_stats(url, reset=True)
        result = bench_script(
            "cli_run", "--url", url, "--first", spec.first.isoformat(), "--last", spec.last.isoformat(),
            "--rate-limit", "300", "--posting", posting,
        )  # fmt: skip
        stats = sim_stats(url)
    if not failed(report, section, result):
        made, minimum = candidate_requests(stats), common.minimum_requests({posting: size})
        share = span_rate(stats) * 60 / 300
        report.raw.setdefault("overhead", {})["one posting at the limit"] = {**result, "stats": stats}
        report.add(
            section,
            f"one posting of {size:,} at 300/min with 300 ms answers: share of the limit",
            f"{share:.3f} ({made} requests, minimum {minimum}, {stats['rate_limited']} 429s)",
            ">= 0.95",
            share >= 0.95,
        )
        # The probe, and one partial last page per sub-range at most (up to 2 x max_concurrency = 8 sub-ranges).
        report.add(section, "  its requests against the minimum", f"{made} / {minimum}", "<= minimum + 8 + 1",
                   made <= minimum + 9)  # fmt: skip


# --- 7. beyond one machine: hosts sharing the key through PostgreSQL --------------------------------


def bench_hosts(report: Report) -> None:
    section = "7. Two hosts, one budget"
    print(f"{section} ...", flush=True)
    if report.quick:  # the same two hosts on PostgreSQL and S3 are test_hosts.py's, in every `make test`
        report.add(section, "skipped", "--quick skips the two hosts (test_hosts.py runs them)")
        return
    # Time-scaled: 100 requests in any 10 s (600/min); each host is told the key's 600/min and shares it with the
    # other through PostgreSQL (HEYMILO_RATE_BUDGET_URL), each with a data directory and Dagster home of its own.
    # Then the same on the whole production profile: the hosts also write the shared tables (catalog in the same
    # PostgreSQL, files on a throwaway S3 server) instead of files of their own.
    size = 2_000 if report.quick else 8_000
    spec = SimSpec(postings=6, candidates=(size, size), rate_limit=100, rate_window_s=10.0, latency_ms=50)
    ids = common.wanted_postings(spec.tenant())[:2]
    with postgres() as server, ExitStack() as stack:
        if server is None:
            report.add(section, "two hosts", "not run: no PostgreSQL (initdb, pg_ctl)", "runs", False)
            return
        s3 = stack.enter_context(s3_server())
        results = {}
        for variant, shared in (("files", []), ("shared tables", ["--shared-data", f"s3://{s3.bucket}/bench/"])):
            with simulator(spec) as url, patch.dict(os.environ, s3.environ() if shared else {}):  # children inherit it
                results[variant] = bench_script(
                    "two_hosts", "--url", url, "--postgres", fresh_database(server, variant.replace(" ", "_")),
                    "--rate-limit", "600", "--first", spec.first.isoformat(), "--last", spec.last.isoformat(),
                    *posting_args(ids), *shared,
                )  # fmt: skip
    report.raw["hosts"] = results
    for variant, result in results.items():
        if failed(report, section, result):
            continue
        stats = result["stats"]
        share = span_rate(stats) / 10.0
        made = candidate_requests(stats)
        where = "each writing its own files" if variant == "files" else "both writing the shared tables (S3)"
        report.add(
            section,
            f"two backfills of {size:,} candidates at once, {where}, 600/min shared (time-scaled: 100 per 10 s), "
            "50 ms answers",
            f"{made} requests in {result['seconds']:.1f} s, {stats['rate_limited']} 429s; "
            f"most in any window {stats['max_requests_in_window']} of 100",
            "0 429s",
            stats["rate_limited"] == 0,
        )
        report.add(section, "  share of the limit the two used together", f"{share:.3f}", ">= 0.9", share >= 0.9)
        if "shared_rows" in result:
            rows = result["shared_rows"]["candidates"]
            report.add(section, "  candidates in the shared tables", f"{rows:,}", f"{2 * size:,}", rows == 2 * size)


# --- 8. bookkeeping: Dagster's event log, per storage, and the typical workspace at the real limit --------


# --quick measures the default and the production profile's storage only (the harness, not the figures).
QUICK_STORAGES = ("SQLite (Dagster's default)", "PostgreSQL, DAGSTER_EVENT_BATCH_SIZE=1000")


def bench_bookkeeping(report: Report) -> None:
    section = "8. Bookkeeping"
    print(f"{section} ...", flush=True)
    partitions = 50 if report.quick else 500
    with postgres() as server, ExitStack() as stack:
        if server is None:
            report.add(section, "PostgreSQL", "not run: no PostgreSQL (initdb, pg_ctl)", "runs", False)
            return
        # What a partition costs Dagster, alone (its planned event and its materialization): each storage, each way.
        costs: dict[str, dict[str, Any]] = {}
        for name, args in (
            ("SQLite (Dagster's default)", ["--storage", "sqlite"]),
            ("SQLite, one file (ConsolidatedSqliteEventLogStorage)", ["--storage", "consolidated"]),
            ("SQLite on tmpfs (/dev/shm)", ["--storage", "sqlite", "--dir", "/dev/shm"]),
            ("PostgreSQL", ["--storage", "postgres", "--postgres", fresh_database(server, "events_plain")]),
            (
                "PostgreSQL, DAGSTER_EVENT_BATCH_SIZE=1000",
                ["--storage", "postgres", "--postgres", fresh_database(server, "events_batched"), "--batch-size=1000"],
            ),
        ):
            if ("/dev/shm" in args and not Path("/dev/shm").is_dir()) or (report.quick and name not in QUICK_STORAGES):
                continue
            result = bench_script("event_log", *args, "--partitions", str(partitions))
            if failed(report, section, result):
                return
            costs[name] = result
            report.add(
                section,
                f"one partition (its planned event and its materialization), {name} ({partitions:,} in one run)",
                f"log_event {result['log_event']['ms_per_partition']:.2f} ms; ranged output "
                f"{result['ranged output']['ms_per_partition']:.2f} ms",
            )
        report.raw["event log"] = costs
        # 50 postings x 90 days against an API that answers at once, under the key's real 300/min: the limiter's
        # floor is the requests / 5 per second; the rest is start-up, bookkeeping and the last posting's publish.
        # --quick: 3 postings x 5 days on the local profile only (the harness, not the figures).
        days, size = (5, 3) if report.quick else (90, 50)
        spec = SimSpec(postings=size + 5, candidates=(20, 60) if report.quick else (200, 600), first=YEAR_FIRST,
                       last=YEAR_FIRST + timedelta(days=days - 1), rate_limit=300, rate_window_s=60.0)  # fmt: skip
        ids = common.wanted_postings(spec.tenant())[:size]
        sqlite_cost = costs["SQLite (Dagster's default)"]["log_event"]["ms_per_partition"] / 1000
        profiles: list[tuple[str, list[str], dict[str, str], float | None]] = [("local profile (SQLite)", [], {}, None)]
        if not report.quick:
            s3 = stack.enter_context(s3_server())
            shared = production_args(server, s3, "workspace")
            profiles += [
                (
                    "production profile (PostgreSQL, shared tables on S3)",
                    shared,
                    s3.environ(),
                    1.15,
                ),
                # Dagster's own switch (a user's choice, never set by the project): one planned event a run instead
                # of one a partition, at the cost of a failed posting's partitions showing as missing, not failed.
                (
                    f"local profile with {PLANNED_SUBSET}=1 (a user's choice; see docs/performance.md)",
                    ["--env", f"{PLANNED_SUBSET}=1"],
                    {},
                    None,
                ),
            ]
        for name, extra, environ, target in profiles:
            with simulator(spec) as url, patch.dict(os.environ, environ):
                sim_stats(url, reset=True)
                result = bench_script(
                    "cli_run", "--url", url, "--first", spec.first.isoformat(), "--last", spec.last.isoformat(),
                    "--rate-limit", "300", *posting_args(ids), *extra,
                )  # fmt: skip
                stats = sim_stats(url)
            if failed(report, section, result):
                continue
            made = candidate_requests(stats)
            floor = made / 5.0
            ratio = result["seconds"] / floor
            kept = {**result, "timeline": {k: v for k, v in result["timeline"].items() if k != "materialized_at"}}
            report.raw.setdefault("workspace at the limit", {})[name] = {**kept, "stats": stats}
            measure = f"{len(ids)} postings x {days} days at 300/min, instant answers, {name}: wall / limiter's floor"
            value = (
                f"{result['seconds']:.1f} s / {floor:.1f} s = {ratio:.2f} ({made} requests, {stats['rate_limited']} "
                f"429s, {result['candidates']:,} candidates)"
            )
            if target is not None:
                report.add(section, measure, value, f"<= {target}", ratio <= target)
            elif PLANNED_SUBSET in name:  # for comparison: no target of its own
                report.add(section, measure, value)
            else:
                # SQLite: 1.3x, or the floor plus Dagster's own cost for these partitions plus 10 % (the writes
                # overlap the fetch, so they add to the floor only where they outlast it).
                bookkeeping = len(ids) * days * sqlite_cost
                bound = max(1.3 * floor, 1.1 * (floor + bookkeeping))
                report.add(
                    section,
                    measure,
                    value + f"; Dagster's cost for {len(ids) * days:,} partitions alone {bookkeeping:.1f} s",
                    f"<= 1.3, or <= 1.1 x (floor + that) = {bound:.1f} s",
                    result["seconds"] <= bound,
                )
            timeline = describe_timeline(result["timeline"], stats)
            report.add(section, "  its timeline (seconds from the command's start)", timeline)


PLANNED_SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


# --- 9. interview results -----------------------------------------------------------------------


def finished_in(tenant: Any, posting_ids: list[str]) -> int:
    from heymilo_pipeline.interview_results import FINISHED

    return sum(1 for r in tenant.truth() if r["posting_id"] in posting_ids and r["status"] in FINISHED)


RESULTS_SECTION = "9. Interview results"
RESULTS_FIRST, RESULTS_LAST = date(2025, 10, 1), date(2025, 12, 31)


def bench_results(report: Report) -> None:
    """A results backfill under the key's limit (the share it is given, the requests it makes), then the daily update
    with results."""
    section = RESULTS_SECTION
    print(f"{section} ...", flush=True)
    first, last = RESULTS_FIRST, RESULTS_LAST
    if report.quick:  # time-scaled: 300 per 6 s
        paced = (SimSpec(postings=2, candidates=(150, 150), first=first, last=last, latency_ms=20), 300, 6.0)
    else:  # the real 300 a minute, 200 ms answers
        # 4,500 candidates a posting: ~10,300 finished over the postings fetched (3,500 gave 8,038).
        paced = (SimSpec(postings=5, candidates=(4_500, 4_500), first=first, last=last, latency_ms=200), 300, 60.0)
    spec, limit, window = paced
    tenant = spec.tenant()
    ids = common.wanted_postings(tenant)
    finished = finished_in(tenant, ids)
    share = 0.5
    with simulator(spec) as url:
        result = bench_script(
            "results", "--url", url, "--first", spec.first.isoformat(), "--last", spec.last.isoformat(),
            "--rate-limit", str(limit), "--rate-window", str(window), "--share", str(share), *posting_args(ids),
            timeout=6 * 3600,
        )  # fmt: skip
    report.raw.setdefault("results", {})["paced"] = result
    if failed(report, section, result):
        return
    per_minute = limit * 60 / window
    given = per_minute * share
    achieved = result["requests"] / result["seconds"] * 60 if result["seconds"] else 0.0
    label = f"{finished:,} finished interviews at {per_minute:,.0f}/min" + (" (time-scaled)" if window != 60 else "")
    report.add(section, f"{label}, share {share}: achieved / share",
               f"{achieved:,.1f}/min of {given:,.0f}/min = {achieved / given:.3f} ({result['seconds'] / 60:.1f} min)",
               ">= 0.95", achieved / given >= 0.95)  # fmt: skip
    exact = result["requests"] == result["due"] + result["retries"] and result["due"] == finished
    report.add(section, f"{label}: requests / (finished + retries)",
               f"{result['requests']:,} / ({result['due']:,} + {result['retries']})", "equal", exact)  # fmt: skip
    report.add(section, f"{label}: stored", f"{result['stored']:,} of {result['due']:,} due, {result['left']} left",
               "all", result["stored"] == result["due"])  # fmt: skip
    daily_update_with_results(report, section)


def bench_results_memory(report: Report) -> None:
    """A results backfill's peak memory as the backlog grows tenfold, unthrottled: denser days (the target), and
    more days (shown beside it). Runs alone in about ten minutes: ``bench/run.py --only results-memory``."""
    section = RESULTS_SECTION
    print(f"{section} (memory) ...", flush=True)
    first, last = RESULTS_FIRST, RESULTS_LAST
    if report.quick:
        small = SimSpec(postings=2, candidates=(150, 150), first=first, last=last)
        denser = SimSpec(postings=2, candidates=(1_500, 1_500), first=first, last=last)
        longer = SimSpec(postings=2, candidates=(1_500, 1_500), first=date(2023, 4, 1), last=last)
    else:  # 10,000 finished interviews; then 100,000, over the same 92 days and over 1,006
        small = SimSpec(postings=5, candidates=(4_500, 4_500), first=first, last=last)
        denser = SimSpec(postings=5, candidates=(45_000, 45_000), first=first, last=last)
        longer = SimSpec(postings=5, candidates=(45_000, 45_000), first=date(2023, 4, 1), last=last)
    peaks = []
    for spec in (small, denser, longer):
        tenant = spec.tenant()
        ids = common.wanted_postings(tenant)
        with simulator(spec) as url:
            found = bench_script(
                "results", "--url", url, "--first", spec.first.isoformat(), "--last", spec.last.isoformat(),
                *posting_args(ids), timeout=3 * 3600,
            )  # fmt: skip
        report.raw.setdefault("results", {}).setdefault("sizes", []).append(found)
        if failed(report, section, found):
            return
        peaks.append((found["due"], found["results_peak_rss"], found["seconds"], found["peak_rss_before_results"]))
    (few, few_peak, few_s, few_imports) = peaks[0]
    for (many, many_peak, many_s, many_imports), how, target in zip(
        peaks[1:],
        ("denser days", f"{(longer.last - longer.first).days + 1:,} days"),
        ("<= 1.25x (flat)", ""),
        strict=True,
    ):
        report.add(section, f"peak RSS of the results step, {few:,} -> {many:,} results, {how} (unthrottled)",
                   f"{mib(few_peak)} -> {mib(many_peak)} = {many_peak / few_peak:.2f}x "
                   f"(above the imports: {mib(few_peak - few_imports)} -> {mib(many_peak - many_imports)} = "
                   f"{(many_peak - many_imports) / (few_peak - few_imports):.2f}x; "
                   f"{few / few_s:,.0f} and {many / many_s:,.0f} results/s)",
                   target, many_peak <= 1.25 * few_peak if target else None)  # fmt: skip


def daily_update_with_results(report: Report, section: str) -> None:
    """The daily update of section 5's workspace, its results run after its candidates run, a simulated day after
    the same days were loaded with their results: what is due is what a day changed."""
    today = datetime.now(UTC).date()
    postings = 6 if report.quick else 51  # one is a test posting, which the pipeline skips
    spec = SimSpec(postings=postings, candidates=(300, 1_500), first=today - timedelta(days=60), last=today)
    window = 6.0 if report.quick else 60.0
    with simulator(spec) as url:
        result = bench_script(
            "daily_results", "--url", url, "--start-date", (today - timedelta(days=30)).isoformat(),
            "--rate-limit", "300", "--rate-window", str(window), "--latency-ms", "200",
        )  # fmt: skip
    report.raw.setdefault("results", {})["daily_update"] = result
    if failed(report, section, result):
        return
    per_minute = 300 * 60 / window
    report.add(
        section,
        f"daily update with results at {per_minute:,.0f}/min" + (" (time-scaled)" if window != 60 else "")
        + f", {result['postings']} postings x {result['days']} days ({result['candidates']:,} candidates, "
        f"{result['candidate_requests']} requests; then {result['results_requests']:,} results requests, "
        f"{result['results_stored']:,} stored; {result['rate_limited']} 429s)",
        f"wall {result['wall_seconds']:.1f} s (candidates {result['candidates_wall_seconds']:.1f} s, results "
        f"{result['results_wall_seconds']:.1f} s), API {result['api_seconds']:.1f} s (candidates "
        f"{result['candidates_api_seconds']:.1f} s, results {result['results_api_seconds']:.1f} s); "
        f"wall/API {result['wall_over_api']:.2f}",
        "wall/API <= 1.2",
        result["wall_over_api"] <= 1.2,
    )  # fmt: skip


def describe_timeline(timeline: dict[str, Any], stats: dict[str, Any]) -> str:
    """Where a command's time went, from its runs' event log and the API's first and last request: whether
    Dagster's writes came before the fetch (planned events), overlapped it, or followed it."""
    start = timeline["command_started"]
    first, last = stats["first_request_at"], stats["last_request_at"]
    planned, materialized = timeline["planned"], timeline["materialized"]
    during = sum(1 for t in timeline["materialized_at"] if t <= last)

    def at(t: float | None) -> str:
        return "-" if t is None else f"{t - start:.1f}"

    return (
        f"planned events ({planned['count']:,}) {at(planned['first'])}-{at(planned['last'])}; requests "
        f"{at(first)}-{at(last)}; materializations ({materialized['count']:,}) {at(materialized['first'])}-"
        f"{at(materialized['last'])}, {during:,} of them before the last request; command ends "
        f"{at(timeline['command_ended'])}"
    )


# --- report -----------------------------------------------------------------------------------


def markdown(report: Report, command: str, seconds: float, facts: dict[str, Any], finished: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` (finished {finished}) in {seconds / 60:.1f} min"
        + (" (**--quick**: tiny sizes, not the real figures)" if report.quick else "")
        + ". Every figure below comes from that one run.",
        "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram_gib']} GiB RAM, Python {facts['python']}, "
        f"{facts['platform']}. Shared and noisy: compare ratios within this run.",
        "",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()) + ".",
        "",
        "| section | measure | value | target | result |",
        "|---|---|---|---|---|",
    ]
    for row in report.rows:
        result = "" if row.passed is None else ("pass" if row.passed else "**FAIL**")
        value = row.value.replace("|", "\\|")
        lines.append(f"| {row.section} | {row.measure} | {value} | {row.target} | {result} |")
    analysis = common.BENCH_DIR / "ANALYSIS.md"
    if analysis.exists() and not report.quick:
        lines += ["", analysis.read_text().strip()]
    if report.notes:
        lines += ["", "## Notes of this run", "", *report.notes]
    lines += ["", "<details><summary>Raw results (JSON)</summary>", "", "```json"]
    lines += [json.dumps(report.raw, indent=1, default=str)[:200_000], "```", "</details>", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no dlt: a smoke test")
    parser.add_argument("--only", action="append", choices=BENCHES, help="run only these (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/RESULTS.md (quick: bench/.work/)")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the Markdown from the run's saved JSON (and ANALYSIS.md)"
    )
    args = parser.parse_args()
    common.WORK_DIR.mkdir(exist_ok=True)
    out = args.out or (common.WORK_DIR / "RESULTS-quick.md" if args.quick else common.BENCH_DIR / "RESULTS.md")
    if args.render:
        saved = json.loads(out.with_suffix(".json").read_text())
        if "seconds" not in saved:  # written before these fields were saved: take them from the Markdown
            found = re.search(r"Produced by `([^`]+)` \((?:finished |on )?([^)]*)\) in ([\d.]+) min", out.read_text())
            found = found or re.search(r"Produced by `([^`]+)` on (.*?) in ([\d.]+) min", out.read_text())
            assert found, "cannot find the run's command and duration"
            saved |= {"command": found.group(1), "finished": found.group(2), "seconds": float(found.group(3)) * 60}
        report = Report(quick=saved.get("quick", False), rows=[Row(**r) for r in saved["rows"]], raw=saved["raw"])
        report.notes = saved.get("notes", [])
        out.write_text(markdown(report, saved["command"], saved["seconds"], saved["facts"], saved["finished"]))
        return
    report = Report(quick=args.quick)
    started = time.perf_counter()
    selected = args.only or list(BENCHES)
    for name in BENCHES:
        if name in selected:
            globals()[f"bench_{name.replace('-', '_')}"](report)
    seconds = time.perf_counter() - started
    command = "make bench" if not (args.quick or args.only) else "bench/run.py " + " ".join(sys.argv[1:])
    facts = common.machine_facts()
    finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out.write_text(markdown(report, command, seconds, facts, finished))
    saved = {"rows": [r.__dict__ for r in report.rows], "raw": report.raw, "facts": facts, "notes": report.notes}
    saved |= {"quick": report.quick, "command": command, "seconds": seconds, "finished": finished}
    out.with_suffix(".json").write_text(json.dumps(saved, default=str))
    checked = [r for r in report.rows if r.passed is not None]
    print(f"\n{sum(r.passed for r in checked)} of {len(checked)} targets met; {seconds:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
