"""Measured staleness: the daily automation run for 60 simulated days, and how far the tables lag the API.

    .venv/bin/python bench/staleness.py       # the defaults (N=7, active 30 d), N=7 alone, N=1; writes docs/staleness.*
    .venv/bin/python bench/staleness.py --days 10 --config 3:0 --out /tmp/s.md   # a quick look
    .venv/bin/python bench/staleness.py --from-json docs/staleness.json      # only re-render the docs

The simulator's clock drives the workspace: new candidates every day, status and score changes up to 45 days
after an invitation, candidates erased 1..60 days after theirs (``deleted_share``), and one posting deleted on
day 20. Each simulated day runs exactly what the automation runs (``cli.run_update``: the listing, the candidate
runs of the refresh plan, the warehouse checks) with the clock at 03:00, then compares every stored record with
the API's answer at that moment:

- requests the day used (listing, candidates, the completeness check), against the minimum for the day's plan;
- candidates whose stored record differs from the API's, API candidates missing, erased candidates still stored;
- the oldest stale snapshot: days since the stale candidates' day was last fetched (an unseen change is at most
  that old).

After the 60 days the clock stops and N more updates run: then the tables must equal the API exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_staleness-9e8d7c"
TODAY = datetime.now(UTC).date()
HISTORY_DAYS = 150  # how far back the workspace goes when the automation starts
POSTING_DELETED_ON = 20


@dataclass
class Day:
    day: int
    as_of: str
    plan: str
    requests: int
    candidate_requests: int
    plan_minimum: int
    check_requests: int
    api_candidates: int
    stale: int
    missing: int
    erased_still_stored: int
    oldest_stale_days: int | None
    seconds: float
    runs_ok: bool


def run(refresh_days: int, active_days: int, days: int, lookback: int, seed: int) -> dict[str, Any]:
    first_update = TODAY - timedelta(days=days + refresh_days - 1)
    start = first_update - timedelta(days=HISTORY_DAYS)
    import dagster as dg
    import httpx

    from heymilo_pipeline import cli
    from heymilo_pipeline.api.windows import DayRange, day_of, midnight
    from heymilo_pipeline.defs.partitions import POSTINGS, candidate_partitions
    from heymilo_pipeline.defs.tags import REFRESH_TAG, range_days, range_tags
    from heymilo_pipeline.lake import Lake
    from heymilo_pipeline.settings import Settings
    from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread

    spec = TenantSpec(
        seed=seed,
        postings=8,
        start=start,
        end=TODAY - timedelta(days=1),
        candidates_per_posting=(2000, 6000),
        deleted_share=0.02,
    )
    tenant = Tenant(spec)
    data_dir = Path(tempfile.mkdtemp(prefix="staleness-"))
    out: list[Day] = []
    last_fetched: dict[date, date] = {}
    # An in-memory instance: the Dagster event log on SQLite would be most of the time (issue: overhead).
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.DagsterInstance.ephemeral() as instance:
        settings = Settings(
            api_key=KEY, base_url=url, rate_limit=1_000_000, data_dir=data_dir, start_date=start,
            lookback_days=lookback, full_refresh_days=refresh_days, active_days=active_days,
        )  # fmt: skip
        location = cli.Location.build(settings, secrets_from_env=False)
        partitions = candidate_partitions(start)

        def stats() -> dict[str, int]:
            return httpx.get(f"{url}/_sim/stats", headers={"X-API-KEY": KEY}).json()["requests_by_route"]

        # The backfill, as of the evening before the first update.
        backfill_day = first_update - timedelta(days=1)
        tenant.set_now(midnight(backfill_day) + 3 * 3600)
        assert location.execute("postings_job", instance)
        registered = list(instance.get_dynamic_partitions(POSTINGS))
        tags = range_tags(start, backfill_day - timedelta(days=1), registered[0], registered[-1])
        assert location.execute("candidates_job", instance, tags)
        for d in range((backfill_day - start).days):
            last_fetched[start + timedelta(days=d)] = backfill_day
        lake = Lake(data_dir / "lake")
        deleted_posting = None
        for i in range(days + refresh_days):
            as_of = first_update + timedelta(days=i)
            if i < days:  # the clock runs; afterwards it stops and the last N updates catch up
                tenant.set_now(midnight(as_of) + 3 * 3600)
            if i == POSTING_DELETED_ON:
                with_candidates = {r["posting_id"] for r in tenant.truth()}
                live = [p for p in instance.get_dynamic_partitions(POSTINGS) if p in with_candidates]
                deleted_posting = live[-1]
                httpx.post(f"{url}/_sim/delete", json={"posting_id": deleted_posting}, headers={"X-API-KEY": KEY})
            before = stats()
            began = time.monotonic()
            outcome = cli.run_update(location, instance, as_of, results=False)  # staleness is the candidates'

            seconds = time.monotonic() - began
            after = stats()
            # The days each candidate run covered, as the sensor requested them.
            todo = [DayRange(*range_days(r.tags, partitions)) for r in outcome.requests]
            plan = outcome.requests[0].tags[REFRESH_TAG] if outcome.requests else "nothing"
            for r in todo:
                for d in r.days:
                    last_fetched[d] = as_of
            used = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            candidate_requests = sum(v for k, v in used.items() if k.endswith("/candidates"))
            wanted = set(instance.get_dynamic_partitions(POSTINGS))
            truth = {
                r["interview_id"]: r
                for r in tenant.truth()
                if r["posting_id"] in wanted and day_of(r["created_at"]) < as_of
            }
            minimum = _plan_minimum(truth.values(), wanted, todo, day_of)
            check_requests = _completeness_requests(instance)
            stored = {}
            for posting_id in wanted:
                for record in _raw(lake, posting_id):
                    stored[record["interview_id"]] = record
            stale_ids = [i for i, r in truth.items() if i in stored and _state(stored[i]) != _state(r)]
            missing = [i for i in truth if i not in stored]
            erased = [i for i in stored if i not in truth]
            ages = [(as_of - last_fetched[day_of(truth[i]["created_at"])]).days for i in stale_ids]
            out.append(
                Day(
                    day=i + 1,
                    as_of=as_of.isoformat(),
                    plan=plan,
                    requests=sum(used.values()),
                    candidate_requests=candidate_requests - check_requests,
                    plan_minimum=minimum,
                    check_requests=check_requests,
                    api_candidates=len(truth),
                    stale=len(stale_ids),
                    missing=len(missing),
                    erased_still_stored=len(erased),
                    oldest_stale_days=max(ages) if ages else None,
                    seconds=round(seconds, 1),
                    runs_ok=not outcome.failed_runs and outcome.checked,
                )
            )
            print(json.dumps(asdict(out[-1])), flush=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    final = out[-1]
    return {
        "refresh_days": refresh_days,
        "active_days": active_days,
        "label": f"N={refresh_days}" + (f", active {active_days} d" if active_days else ""),
        "lookback_days": lookback,
        "days": [asdict(d) for d in out],
        "deleted_posting_on_day": POSTING_DELETED_ON + 1,
        "deleted_posting": deleted_posting,
        "equal_at_end": final.stale == final.missing == final.erased_still_stored == 0,
        "all_runs_ok": all(d.runs_ok for d in out),
        "postings": len(registered),
    }


def _state(record: Any) -> Any:
    """A record without its links: signed URLs are re-signed on every answer, which is not a change of state."""
    if isinstance(record, dict):
        return {k: _state(v) for k, v in record.items() if not k.endswith(("_link", "_url"))}
    if isinstance(record, list):
        return [_state(v) for v in record]
    return record


def _raw(lake: Any, posting_id: str) -> list[dict[str, Any]]:
    table = lake.read("raw/candidates", posting_id)
    return [json.loads(text) for text in table["record"].to_pylist()]


def _plan_minimum(records: Any, postings: set[str], ranges: list[Any], day_of: Any) -> int:
    """Requests a perfect client needs for the plan: per posting and range, one page per 100 (at least one)."""
    counts: Counter[tuple[str, int]] = Counter()
    for r in records:
        day = day_of(r["created_at"])
        for k, span in enumerate(ranges):
            if span.first <= day <= span.last:
                counts[r["posting_id"], k] += 1
    from heymilo_pipeline.api.stats import minimum_requests

    return minimum_requests(counts[p, k] for p in postings for k in range(len(ranges)))


def _completeness_requests(instance: Any) -> int:
    """Requests of the completeness check, from its own metadata (the rest went to the candidate runs)."""
    import dagster as dg

    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("candidates"), "completeness"), limit=1
    )
    evaluation = history[0].event.asset_check_evaluation if history and history[0].event else None
    value = evaluation.metadata.get("requests") if evaluation else None
    return int(value.value) if value is not None else 0


def write(results: list[dict[str, Any]], out: Path, seconds: float) -> None:
    # The figures first: a rendering bug must not cost the 40 minutes that measured them.
    (out.with_suffix(".json")).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    main = results[0]
    lines = [
        "# Measured staleness: 60 days of the daily automation against the simulator",
        "",
        "> Generated by `.venv/bin/python bench/staleness.py` (see its docstring); "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds / 60:.0f} min on {os.cpu_count()} cores.",
        "",
        f"A workspace of {main['postings']} fetched postings, {HISTORY_DAYS} days of history when the automation "
        "starts, new candidates every day, changes up to 45 days after an invitation, 2 % of candidates erased "
        f"1..60 days after theirs, and one posting deleted on day {main['deleted_posting_on_day']}. Every day runs "
        "`heymilo-pipeline update --as-of` with the simulator's clock at 03:00 UTC, then compares every stored "
        "record with the API's. After the 60 days the clock stops and N more updates run.",
        "",
        "| | " + " | ".join(r["label"] for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    summaries = [_summary(r) for r in results]
    for key in summaries[0]:
        lines.append(f"| {key} | " + " | ".join(str(s[key]) for s in summaries) + " |")
    lines += [
        "",
        "Requests are those the day used (the listing, the candidate runs, the completeness check); the plan "
        "minimum is what the candidate runs need at least: one page per 100 candidates (at least one) per posting "
        "and range of the day's plan. Stale: the stored record differs from the API's answer now (links aside: "
        "the API re-signs them on every answer). Oldest stale snapshot: days since the day of the oldest stale "
        "candidate was last fetched, which bounds the age of any unseen change.",
        "",
        "![stale candidates and requests per day](staleness.png)",
        "",
        f"## Per day, {main['label']} (the defaults)",
        "",
        "| day | as of | requests | of which candidates | plan minimum | formula | completeness | API candidates | "
        "stale | missing | erased still stored | oldest stale snapshot (days) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in main["days"]:
        oldest = d["oldest_stale_days"] if d["oldest_stale_days"] is not None else "-"
        lines.append(
            f"| {d['day']} | {d['as_of']} | {d['requests']} | {d['candidate_requests']} | {d['plan_minimum']} | "
            f"{_formula(main, d):.0f} | {d['check_requests']} | {d['api_candidates']} | {d['stale']} | "
            f"{d['missing']} | {d['erased_still_stored']} | {oldest} |"
        )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(results, out.with_suffix(".png"))


def _formula(result: dict[str, Any], day: dict[str, Any]) -> float:
    """The cost formula's estimate (docs/operations.md) of the day's candidate requests: refresh.requests_per_day
    with this workspace's figures
    (candidates spread evenly over the history, the day's recent-and-active days as the lookback)."""
    from heymilo_pipeline.refresh import requests_per_day

    first = date.fromisoformat(result["days"][0]["as_of"])
    as_of = date.fromisoformat(day["as_of"])
    history = (as_of - (first - timedelta(days=HISTORY_DAYS))).days
    recent = day["plan"].split("; ")[0].rsplit(" ", 1)[-1].split("..")
    recent_days = (date.fromisoformat(recent[1]) - date.fromisoformat(recent[0])).days + 1 if len(recent) == 2 else 1
    postings = result["postings"] - (1 if day["day"] > result["deleted_posting_on_day"] else 0)
    return requests_per_day(day["api_candidates"], history, postings, recent_days - 1, result["refresh_days"])


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    days = [d for d in result["days"] if d["day"] <= len(result["days"]) - result["refresh_days"]]
    tail = result["days"][-1]
    return {
        "days with the clock running": len(days),
        "requests per day, mean (max)": f"{sum(d['requests'] for d in days) / len(days):.0f} "
        f"({max(d['requests'] for d in days)})",
        "candidate requests / plan minimum / cost formula": f"{sum(d['candidate_requests'] for d in days)} / "
        f"{sum(d['plan_minimum'] for d in days)} / {sum(_formula(result, d) for d in days):.0f}",
        "minutes of the key's quota per day (300/min)": f"{sum(d['requests'] for d in days) / len(days) / 300:.2f}",
        "stale candidates per day, mean (max)": f"{sum(d['stale'] for d in days) / len(days):.0f} "
        f"({max(d['stale'] for d in days)})",
        "stale share of API candidates, mean": f"{sum(d['stale'] / d['api_candidates'] for d in days) / len(days):.2%}",
        "erased but still stored, max": max(d["erased_still_stored"] for d in days),
        "missing, max": max(d["missing"] for d in days),
        "oldest stale snapshot, max (days)": max((d["oldest_stale_days"] or 0) for d in days),
        "every run succeeded": "yes" if result["all_runs_ok"] else "NO",
        "after N updates with the clock stopped": "equal to the API"
        if result["equal_at_end"]
        else f"NOT equal: {tail['stale']} stale, {tail['missing']} missing, {tail['erased_still_stored']} erased",
    }


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for r in results:
        days = [d["day"] for d in r["days"]]
        top.plot(days, [d["stale"] + d["erased_still_stored"] for d in r["days"]], label=r["label"])
        bottom.plot(days, [d["requests"] for d in r["days"]], label=r["label"])
    top.set_ylabel("stale or erased\ncandidates stored")
    bottom.set_ylabel("requests that day")
    bottom.set_xlabel("day of the automation (clock stops after day 60)")
    top.legend()
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument(
        "--config",
        action="append",
        help="N:ACTIVE_DAYS, HEYMILO_FULL_REFRESH_DAYS and HEYMILO_ACTIVE_DAYS (repeatable; the first is the main one)",
    )
    parser.add_argument("--lookback", type=int, default=7)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "staleness.md")
    parser.add_argument("--from-json", type=Path, help="Only render the docs from a JSON an earlier run wrote.")
    args = parser.parse_args()
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        write(results, args.out, max(r.get("seconds", 0) for r in results))
        print(f"wrote {args.out}")
        return
    began = time.monotonic()
    results = []
    for config in args.config or ["7:30", "7:0", "1:0"]:
        n, active = config.split(":")
        # Each configuration in its own process: a fresh interpreter, memory and Dagster state.
        child = subprocess.run(
            [sys.executable, __file__, "--child", n, active, str(args.days), str(args.lookback), str(args.seed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(f"{config} failed:\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}")
        results.append({**json.loads(child.stdout.strip().splitlines()[-1]), "seconds": time.monotonic() - began})
        print(f"{config}: done, {time.monotonic() - began:.0f} s", flush=True)
    write(results, args.out, time.monotonic() - began)
    print(f"wrote {args.out}")
    if not all(r["equal_at_end"] and r["all_runs_ok"] for r in results):
        raise SystemExit("the tables did not end equal to the API, or a run failed")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, active, days, lookback, seed = map(int, sys.argv[2:7])
        import contextlib
        import io

        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            result = run(n, active, days, lookback, seed)
        sys.stderr.write(log.getvalue()[-20000:])
        print(json.dumps(result))
    else:
        main()
