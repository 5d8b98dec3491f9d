"""The Dagster code location, materialized for real against the simulator on loopback.

One module-scoped world: a simulated tenant with faults switched on, served by uvicorn; postings
registered; every posting backfilled over the whole partition range, one run per posting, as a
UI backfill with BackfillPolicy.single_run() does. Tests then compare lake, DuckDB and the
simulator's ground truth, rerun, plant bad data and move the simulated clock.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from heymilo_pipeline.api.stats import minimum_requests
from heymilo_pipeline.api.windows import DayRange, day_of, midnight
from heymilo_pipeline.cli import run_backfill
from heymilo_pipeline.defs.checks import AFTER_LOADS, WAREHOUSE_CHECKS
from heymilo_pipeline.defs.jobs import CANDIDATES_SELECTION
from heymilo_pipeline.defs.keys import INTERVIEW_RESULTS_KEY
from heymilo_pipeline.defs.partitions import key
from heymilo_pipeline.defs.schedules import daily_update, update_requests
from heymilo_pipeline.defs.sensors import new_postings, update_after_postings
from heymilo_pipeline.defs.tags import AS_OF_TAG, range_tags
from heymilo_pipeline.lake import Lake
from heymilo_pipeline.refresh import todays_plan
from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.warehouse import query
from heymilo_pipeline_tests.dagster_ui import CHECKS
from heymilo_pipeline_tests.support import LAST, START, TODAY, Harness, settings_for, with_changes

# Servers, subprocesses or Dagster runs: the integration tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.integration

KEY = "sk_test_PIPELINE-9f8e7d6c"
FAULTS = Faults(error_rate=0.05, drop_rate=0.02, truncate_rate=0.02, malformed_rate=0.02, seed=5)


@dataclass
class World(Harness):
    """The harness, with the simulated tenant behind it and the URL it is served on."""

    tenant: Tenant
    url: str

    @classmethod
    def of(cls, tenant: Tenant, url: str, data_dir: Path, instance: dg.DagsterInstance) -> World:
        return cls(settings_for(url, KEY, data_dir), instance, tenant, url)

    def run(self, first: date, last: date, first_posting: str, last_posting: str, **changes: Any):
        return self.candidates(first, last, first_posting, last_posting, **changes)

    def sim_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_sim/stats", headers={"X-API-KEY": KEY}).json()


def truth_in(tenant: Tenant, posting_ids: list[str], first: date, last: date) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in tenant.truth():
        if record["posting_id"] in posting_ids and midnight(first) <= record["created_at"] < midnight(last) + 86400:
            out[record["posting_id"]].append(record)
    return out


def checksums(world: World) -> dict[str, str]:
    return {t: world.store.checksum(t) for t in ("candidates", "candidate_workflow_steps")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tenant = Tenant(TenantSpec(seed=21, postings=4, start=START, end=LAST, candidates_per_posting=(150, 900)))
    with serve_in_thread(create_app(tenant, KEY, FAULTS)) as url:
        data_dir = tmp_path_factory.mktemp("data")
        with dg.instance_for_test() as instance:
            w = World.of(tenant, url, data_dir, instance)
            assert w.list_postings().success
            w.backfill_results = [w.run(START, LAST, p, p) for p in w.registered]
            # Then the interview results, as results_after_candidates requests them: the audit judges them too.
            tags = range_tags(START, LAST, w.registered[0], w.registered[-1])
            assert w.materialize(dg.AssetSelection.assets(INTERVIEW_RESULTS_KEY), tags).success
            yield w


def test_postings_are_listed_and_filtered(world: World) -> None:
    listed = world.tenant.postings()
    table = query(world.data_dir / "heymilo.duckdb", "SELECT posting_id, status, test_posting FROM postings")
    assert sorted(table["posting_id"]) == sorted(p["id"] for p in listed)
    test_ids = {p["id"] for p in listed if p["test_posting"]}
    assert test_ids and not test_ids & set(world.registered)  # test postings are skipped by default
    assert set(world.registered) == {p["id"] for p in listed} - test_ids
    # The listing's materialization says which id is which posting (the partition keys are only ids).
    event = world.instance.get_latest_materialization_event(dg.AssetKey("postings"))
    table = event.asset_materialization.metadata["postings"].value
    for posting in listed:
        fetched = "yes" if posting["id"] in world.registered else "test posting"
        assert f"| `{posting['id']}` | {posting['title']} | {posting['status']} | {fetched}" in table, table


def test_backfill_equals_the_ground_truth(world: World) -> None:
    assert all(r.success for r in world.backfill_results)
    truth = truth_in(world.tenant, world.registered, START, LAST)
    lake = Lake(world.data_dir / "lake")
    for posting_id in world.registered:
        raw = [r for day in DayRange(START, LAST).days for r in lake.read_raw(posting_id, day)]
        assert sorted(raw, key=lambda r: r["interview_id"]) == sorted(
            truth[posting_id], key=lambda r: r["interview_id"]
        ), posting_id
    table = query(world.data_dir / "heymilo.duckdb", "SELECT interview_id, posting_id, created_date FROM candidates")
    want = {(r["interview_id"], r["posting_id"], day_of(r["created_at"])) for rs in truth.values() for r in rs}
    got = set(zip(table["interview_id"], table["posting_id"], (d.date() for d in table["created_date"]), strict=True))
    assert len(table) == len(want) and got == want  # nothing missing, doubled or moved to another day


def test_partitions_marked_materialized_equal_the_loads(world: World) -> None:
    materialized = world.instance.get_materialized_partitions(dg.AssetKey("raw_candidates"))
    loads = query(world.data_dir / "heymilo.duckdb", "SELECT posting_id, partition_date FROM partition_loads")
    loaded = {f"{d.date().isoformat()}|{p}" for p, d in zip(loads["posting_id"], loads["partition_date"], strict=True)}
    expected = {f"{day.isoformat()}|{p}" for p in world.registered for day in DayRange(START, LAST).days}
    assert materialized == loaded == expected  # empty days included


def test_the_duckdb_tables_are_recorded_whole_once_a_run(world: World) -> None:
    """candidates and candidate_workflow_steps are whole tables: one materialization per run that loaded them,
    with the table's row count, never one per partition."""
    counts = world.store.table_counts()
    for asset, table in (("candidates", "candidates"), ("candidate_workflow_steps", "candidate_workflow_steps")):
        latest = world.instance.get_latest_materialization_event(dg.AssetKey(asset))
        assert latest is not None and latest.asset_materialization is not None, asset
        assert latest.asset_materialization.partition is None
        assert latest.asset_materialization.metadata["dagster/row_count"].value == counts[table] > 0
        published = latest.asset_materialization.metadata["postings_published"].value
        assert set(published) <= set(world.registered) and published, published


def test_requests_stay_within_five_percent_of_the_minimum(world: World) -> None:
    stats = world.sim_stats()
    truth = truth_in(world.tenant, world.registered, START, LAST)
    minimum = minimum_requests(len(truth.get(p, [])) for p in world.registered)
    candidate_requests = sum(n for route, n in stats["requests_by_route"].items() if route.endswith("/candidates"))
    retried = sum(stats["faults"].values()) + stats["rate_limited"]
    assert retried > 0, "faults were switched on; the run should have needed retries"
    assert candidate_requests - retried <= 1.05 * minimum, (candidate_requests, retried, minimum)


def test_checks_passed_and_metadata_reported(world: World) -> None:
    result = world.backfill_results[0]
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == CHECKS["raw_candidates"]
    assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
    audit = world.check(TODAY)
    assert set(audit) == CHECKS["candidates"] | CHECKS["candidate_workflow_steps"] | (
        CHECKS["interview_results"] - {"results_in_documented_ranges"}  # the results step's own, not the audit's
    )
    assert all(e.passed for e in audit.values()), {n: e.description for n, e in audit.items() if not e.passed}


def test_every_partition_shows_its_own_posting_day(world: World) -> None:
    """A posting-day's materialization carries that posting-day's rows, not the run's or the table's."""
    truth = truth_in(world.tenant, world.registered, START, LAST)
    titles = {p["id"]: p["title"] for p in world.tenant.postings()}
    for posting_id in world.registered[:2]:
        per_day = defaultdict(int)
        for record in truth.get(posting_id, []):
            per_day[day_of(record["created_at"])] += 1
        steps = query(
            world.data_dir / "heymilo.duckdb",
            "SELECT created_date, count(*) AS n FROM candidate_workflow_steps WHERE posting_id = ? GROUP BY 1",
            [posting_id],
        )
        steps_per_day = {d.date(): n for d, n in zip(steps["created_date"], steps["n"], strict=True)}
        for day in (START, START + timedelta(days=9), LAST):
            records = world.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_candidates"), asset_partitions=[key(posting_id, day)]),
                limit=1,
            ).records
            metadata = records[0].asset_materialization.metadata
            assert metadata["candidate_rows"].value == per_day.get(day, 0), (posting_id, day)
            assert "dagster/row_count" not in metadata  # the asset's overview would show a posting-day's as its own
            assert metadata["workflow_step_rows"].value == steps_per_day.get(day, 0), (posting_id, day)
            assert metadata["posting_id"].value == posting_id
            assert metadata["posting_title"].value == titles[posting_id]  # which posting the id is


def test_rerun_is_idempotent(world: World) -> None:
    before = checksums(world)
    posting_id = world.registered[0]
    assert world.run(START, LAST, posting_id, posting_id).success
    assert checksums(world) == before


def test_a_failing_blocking_check_publishes_nothing(world: World) -> None:
    """A wrong total_count means rows may be missing: the run fails, naming posting and days, and the
    previous lake files and DuckDB rows stay exactly as they were."""
    before = checksums(world)
    lake_files = {p: p.stat().st_mtime_ns for p in (world.data_dir / "lake").rglob("*.parquet")}
    posting_id = world.registered[0]
    with serve_in_thread(create_app(world.tenant, KEY, Faults(total_count_offset=3))) as bad_url:
        result = world.run(START, LAST, posting_id, posting_id, base_url=bad_url)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert (
        posting_id in message and f"{START}..{LAST}" in message and "nothing of this posting was published" in message
    )
    assert "rows_match_total_count" in message
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "rows_match_total_count")
    assert not evaluation.passed and evaluation.metadata["postings_failed"].value == [posting_id]
    assert result.asset_materializations_for_node("candidate_tables") == []
    assert checksums(world) == before
    assert {p: p.stat().st_mtime_ns for p in (world.data_dir / "lake").rglob("*.parquet")} == lake_files


def test_score_bounds_are_configurable(world: World) -> None:
    busiest = max(world.registered, key=lambda p: len(truth_in(world.tenant, [p], START, LAST).get(p, [])))
    before = checksums(world)
    result = world.run(START, LAST, busiest, busiest, score_max=10)  # planted: real scores go up to 100
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "score_range")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert checksums(world) == before


def test_undocumented_score_ranges_only_warn(world: World) -> None:
    """web_interview.score has no documented range: out of the configured one, the check warns and rows load."""
    busiest = max(world.registered, key=lambda p: len(truth_in(world.tenant, [p], START, LAST).get(p, [])))
    # planted: simulated interview scores reach 100
    result = world.run(START, LAST, busiest, busiest, web_interview_score_max=10)
    assert result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "agent_score_ranges")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    failure = evaluation.metadata["failures"].value[0]
    assert failure["posting_id"] == busiest and failure["observed"]["web_interview_score"][1] > 10


def test_the_api_key_is_not_in_any_log_or_metadata(world: World) -> None:
    for result in world.backfill_results:
        for record in world.instance.all_logs(result.run_id):
            assert KEY not in str(record.user_message)
            assert KEY not in str(record.dagster_event.event_specific_data if record.dagster_event else "")


def test_schedule_lists_postings_then_requests_the_refresh_plan(world: World) -> None:
    context = dg.build_schedule_context(
        instance=world.instance, scheduled_execution_time=datetime.combine(TODAY, datetime.min.time(), UTC)
    )
    request = daily_update(context)
    assert isinstance(request, dg.RunRequest) and request.tags == {"heymilo/kind": "update", AS_OF_TAG: str(TODAY)}
    todo = todays_plan(TODAY, with_changes(world.settings, full_refresh_days=3), None)
    runs = update_requests(world.instance, TODAY, todo)
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in runs
    ]
    # One run per range of the plan, every posting: the share and the recent days, or one run where they touch
    # (the last share of a cycle reaches the recent days: one query per posting instead of two)
    assert ranges == [(key(world.registered[0], r.first), key(world.registered[-1], r.last)) for r in todo.ranges]
    assert todo.recent == DayRange(LAST - timedelta(days=7), LAST) and todo.share is not None
    assert len(ranges) == (1 if todo.share.last + timedelta(days=1) == todo.recent.first else 2)
    shares = {r.tags["heymilo/refresh"] for r in runs}
    assert len(shares) == 1 and "share" in shares.pop()


def test_sensor_registers_new_postings_and_requests_their_backfill(world: World) -> None:
    with dg.instance_for_test() as empty:
        resources = {name: world.resource(name) for name in ("heymilo", "pipeline")}
        # `with`: the heymilo resource holds the storage one (its data directory keeps the rate budget)
        with dg.build_sensor_context(instance=empty, resources=resources) as context:
            result = new_postings(context)
    assert isinstance(result, dg.SensorResult)
    added = result.dynamic_partitions_requests[0].partition_keys
    assert sorted(added) == sorted(world.registered)
    backfills = [r for r in result.run_requests if r.tags.get("heymilo/kind") == "backfill"]
    assert {r.tags["dagster/asset_partition_range_start"].split("|")[1] for r in backfills} == set(added)


def test_update_captures_late_changes(tmp_path: Path) -> None:
    """Candidates advance after their day was fetched; the update (yesterday + lookback) brings them up to date."""
    tenant = Tenant(TenantSpec(seed=8, postings=4, start=LAST - timedelta(days=9), end=LAST))
    backfilled_at = midnight(LAST) + 86400 - 6 * 3600  # the backfill sees the world as of yesterday 18:00
    tenant.set_now(backfilled_at)
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.instance_for_test() as instance:
        w = World.of(tenant, url, tmp_path, instance)
        assert w.list_postings().success
        first = LAST - timedelta(days=7)
        assert w.run(first, LAST, w.registered[0], w.registered[-1]).success
        stale = query(tmp_path / "heymilo.duckdb", "SELECT interview_id, status, score FROM candidates")
        tenant.set_now(midnight(TODAY) + 12 * 3600)  # a day and a half later
        todo = todays_plan(TODAY, w.settings, None)
        for request in update_requests(instance, TODAY, todo):
            assert w.materialize(CANDIDATES_SELECTION, dict(request.tags)).success
        fresh = query(tmp_path / "heymilo.duckdb", "SELECT interview_id, status, score FROM candidates")
        registered = w.registered
    # The backfilled days and the update's: its share of the older history may reach days before the backfill
    # (the tenant starts two days earlier), whose candidates it then stores too.
    fetched = set(DayRange(first, LAST).days) | {d for r in todo.ranges for d in r.days}
    truth = {
        r["interview_id"]: r
        for r in tenant.truth()
        if r["posting_id"] in registered and day_of(r["created_at"]) in fetched
    }
    assert sorted(fresh["interview_id"]) == sorted(truth)
    assert {i: s for i, s in zip(fresh["interview_id"], fresh["status"], strict=True)} == {
        i: r["status"] for i, r in truth.items()
    }
    # The backfill stored the world as it was then; the update, exactly the candidates that advanced since.
    backfilled = {r["interview_id"] for rs in truth_in(tenant, registered, first, LAST).values() for r in rs}
    then = {r["interview_id"]: r["status"] for r in tenant.truth(backfilled_at) if r["interview_id"] in backfilled}
    assert dict(zip(stale["interview_id"], stale["status"], strict=True)) == then
    changed = set(zip(fresh["interview_id"], fresh["status"], strict=True)) - set(then.items())
    assert changed == {(i, r["status"]) for i, r in truth.items() if then.get(i) != r["status"]}
    assert changed, "the clock moved a day and a half: some candidates advanced"


HOLD_FILE = """
import sys, time, duckdb

conn = duckdb.connect(sys.argv[1], read_only=True)  # what a notebook does with a plain duckdb.connect
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


@contextmanager
def notebook_holding(path: Path, seconds: float) -> Iterator[subprocess.Popen]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_notebook_holding_the_file_makes_the_load_wait(world: World) -> None:
    posting_id = world.registered[0]
    before = checksums(world)
    with notebook_holding(world.data_dir / "heymilo.duckdb", 4):
        result = world.run(START, LAST, posting_id, posting_id)
    assert result.success
    messages = [str(r.user_message) for r in world.instance.all_logs(result.run_id)]
    assert any("is open in another process" in m and "waiting up to" in m for m in messages)
    assert checksums(world) == before


def test_a_notebook_holding_the_file_too_long_fails_clearly(world: World) -> None:
    posting_id = world.registered[0]
    before = checksums(world)
    with notebook_holding(world.data_dir / "heymilo.duckdb", 60):
        result = world.run(START, LAST, posting_id, posting_id, lock_timeout=1)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "stayed locked by another process" in message and "Nothing was fetched or written" in message
    assert str(world.data_dir / "heymilo.duckdb") in message
    assert checksums(world) == before


def test_the_checks_of_what_is_stored_follow_every_load(world: World) -> None:
    """checks_after_loads' condition: nothing while nothing is loaded; after a load, the three checks that read only
    what is stored (never freshness or completeness, the daily audit's), and they pass."""
    defs = world.defs()
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=world.instance)
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=world.instance, cursor=quiet.cursor)
    assert quiet.total_requested == 0
    posting_id = world.registered[0]
    assert world.run(LAST, LAST, posting_id, posting_id).success
    after = dg.evaluate_automation_conditions(defs=defs, instance=world.instance, cursor=quiet.cursor)
    requested = {r.key for r in after.results if r.true_subset.size}
    assert requested == {dg.AssetCheckKey(WAREHOUSE_CHECKS[name][0], name) for name in AFTER_LOADS}
    assert {"freshness", "completeness"}.isdisjoint(AFTER_LOADS)
    result = world.materialize(dg.AssetSelection.checks(*requested))
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == dict.fromkeys(AFTER_LOADS, True)
    again = dg.evaluate_automation_conditions(defs=defs, instance=world.instance, cursor=after.cursor)
    assert again.total_requested == 0  # handled: not requested again until the next load


def funnel_truth(tenant: Tenant, posting_ids: list[str]) -> dict[tuple[str, date], tuple[int, int, int]]:
    """posting_funnel as the simulator's ground truth has it: (applied, knocked out, shortlisted) per posting-day."""
    out: Counter[tuple[str, date, str]] = Counter()
    for r in tenant.truth():
        if r["posting_id"] in posting_ids:
            where = (r["posting_id"], day_of(r["created_at"]))
            out[(*where, "applied")] += 1
            out[(*where, "knocked_out")] += r["status"] == "knocked_out"
            out[(*where, "shortlisted")] += bool(r["shortlisted"])
    days = {(p, d) for p, d, _ in out}
    return {(p, d): (out[p, d, "applied"], out[p, d, "knocked_out"], out[p, d, "shortlisted"]) for p, d in days}


def funnel_rows(data_dir: Path) -> dict[tuple[str, date], tuple[int, int, int]]:
    table = query(
        data_dir / "heymilo.duckdb", "SELECT posting_id, day, applied, knocked_out, shortlisted FROM posting_funnel"
    )
    rows = zip(*(table[c] for c in ("posting_id", "day", "applied", "knocked_out", "shortlisted")), strict=True)
    return {(p, pd_day(d)): (int(a), int(k), int(sh)) for p, d, a, k, sh in rows}


def pd_day(value: Any) -> date:
    return value.date() if hasattr(value, "date") else value


def test_the_readme_example_asset_materializes_after_a_load(world: World) -> None:
    result = world.materialize(["posting_funnel"])
    assert result.success
    (materialization,) = result.asset_materializations_for_node("posting_funnel")
    expected = funnel_truth(world.tenant, world.registered)
    assert funnel_rows(world.data_dir) == expected
    assert materialization.metadata["dagster/row_count"].value == len(expected)


def test_the_example_asset_waits_for_another_process_holding_the_file(world: World) -> None:
    with notebook_holding(world.data_dir / "heymilo.duckdb", 3):
        result = world.materialize(["posting_funnel"])
    assert result.success
    messages = [str(r.user_message) for r in world.instance.all_logs(result.run_id)]
    assert any("is open in another process" in m and "waiting up to" in m for m in messages), messages
    assert funnel_rows(world.data_dir) == funnel_truth(world.tenant, world.registered)


def test_the_duckdb_resource_reads_without_holding_up_a_load(world: World) -> None:
    """A reader opens read-only: a notebook reading at the same time does not stop it, and it gets the tables."""
    duckdb = world.resource("duckdb")
    with notebook_holding(world.data_dir / "heymilo.duckdb", 30), duckdb.get_connection(read_only=True) as conn:
        (count,) = conn.execute("SELECT count(*) FROM candidates").fetchone()
    assert count == sum(1 for r in world.tenant.truth() if r["posting_id"] in world.registered)


def test_the_duckdb_resource_says_what_to_do_before_the_first_load(tmp_path: Path, world: World) -> None:
    with dg.instance_for_test() as instance:
        empty = Harness(settings_for(world.url, KEY, tmp_path), instance)
        connection = empty.resource("duckdb").get_connection()
        with pytest.raises(dg.Failure, match=r"no tables yet .* materialize postings and raw_candidates first"):
            connection.__enter__()


def test_postings_excluded_later_leave_the_partitions(world: World, tmp_path: Path) -> None:
    """The daily update covers every registered posting, so excluding one must unregister it."""
    with dg.instance_for_test() as instance:
        w = World.of(world.tenant, world.url, tmp_path, instance)
        assert w.list_postings().success
        everyone = w.registered
        result = w.list_postings(exclude_postings=everyone[:1])
        assert w.registered == everyone[1:]
    metadata = result.asset_materializations_for_node("postings")[0].metadata
    assert metadata["unregistered"].value == [everyone[0]]


# --- the warehouse checks fail on planted bad data, and pass again once it is gone ----------------------


def test_freshness_fails_when_the_update_did_not_run(world: World) -> None:
    assert world.check(TODAY)["freshness"].passed  # loaded through yesterday
    skipped = world.check(TODAY + timedelta(days=2))["freshness"]  # two days later, no update ran meanwhile
    assert not skipped.passed and skipped.severity == dg.AssetCheckSeverity.ERROR
    assert skipped.metadata["due_through"].value == str(TODAY + timedelta(days=1))
    assert set(skipped.metadata["stale_postings"].value) == set(world.registered)


def test_completeness_fails_on_a_planted_gap_naming_posting_and_days(world: World) -> None:
    truth = truth_in(world.tenant, world.registered, START, LAST)
    posting_id = max(truth, key=lambda p: len(truth[p]))
    busy = Counter(day_of(r["created_at"]) for r in truth[posting_id])
    gap = max(busy, key=busy.get)
    before = checksums(world)
    with world.store.connect() as conn:
        conn.execute(
            "CREATE TEMP TABLE kept AS FROM candidates WHERE posting_id = ? AND created_date = ?", [posting_id, gap]
        )
        conn.execute("DELETE FROM candidates WHERE posting_id = ? AND created_date = ?", [posting_id, gap])
        conn.execute(
            "DELETE FROM candidate_workflow_steps WHERE posting_id = ? AND created_date = ?", [posting_id, gap]
        )
    try:
        stats_before = world.sim_stats()["requests_by_route"]
        found = world.check(TODAY)["completeness"]
        stats_after = world.sim_stats()["requests_by_route"]
        assert not found.passed and found.severity == dg.AssetCheckSeverity.ERROR
        assert f"posting {posting_id}" in found.description and str(gap) in found.description
        assert found.metadata["differences"].value == {posting_id: [{"days": str(gap), "api": busy[gap], "stored": 0}]}
        # one request per posting, plus a bisection of about log2(days) for the one that differs
        spent = sum(stats_after.values()) - sum(stats_before.values())
        assert spent <= len(world.registered) + 2 * math.ceil(math.log2(len(DayRange(START, LAST)))) + 2, spent
        assert not world.check(TODAY)["matches_lake"].passed  # the lake still holds the day
    finally:
        world.store.rebuild("test-rebuild")
    assert checksums(world) == before
    assert world.check(TODAY)["completeness"].passed


def test_uniqueness_and_references_fail_on_planted_rows(world: World) -> None:
    truth = truth_in(world.tenant, world.registered, START, LAST)
    posting_id = max(truth, key=lambda p: len(truth[p]))
    lake = Lake(world.data_dir / "lake")
    row = lake.read("candidates", posting_id).slice(0, 1)
    planted_day = date(2024, 2, 1)  # a month the posting never had
    row = row.set_column(row.schema.get_field_index("created_date"), "created_date", pa.array([planted_day]))
    planted = lake.path("candidates", posting_id, planted_day)
    planted.parent.mkdir(parents=True)
    pq.write_table(row, planted)
    try:
        found = world.check(TODAY)
        unique = found["unique_interview_id"]
        assert not unique.passed and unique.metadata["lake"].value["count"] == 1
        assert unique.metadata["lake"].value["examples"][0]["interview_id"] == row["interview_id"][0].as_py()
        assert not found["matches_lake"].passed and posting_id in found["matches_lake"].description
    finally:
        planted.unlink()
        planted.parent.rmdir()
    with world.store.connect() as conn:
        conn.execute(
            "INSERT INTO candidate_workflow_steps SELECT * REPLACE ('0000000000000000' AS interview_id) "
            "FROM candidate_workflow_steps WHERE posting_id = ? LIMIT 1",
            [posting_id],
        )
    try:
        orphans = world.check(TODAY)["steps_reference_candidates"]
        assert not orphans.passed and orphans.metadata["orphans"].value["by_posting"] == {posting_id: 1}
    finally:
        with world.store.connect() as conn:
            conn.execute("DELETE FROM candidate_workflow_steps WHERE interview_id = '0000000000000000'")
    assert all(e.passed for e in world.check(TODAY).values())


def test_a_posting_that_fails_stops_no_other(world: World, tmp_path: Path) -> None:
    """One posting answers 404 (deleted in HeyMilo but still registered): the others are published and marked
    materialized, its partitions are not, and the run fails naming it."""
    tenant = Tenant(TenantSpec(seed=21, postings=4, start=START, end=LAST, candidates_per_posting=(150, 900)))
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.instance_for_test() as instance:
        w = World.of(tenant, url, tmp_path, instance)
        assert w.list_postings().success
        first = LAST - timedelta(days=6)
        victim = w.registered[1]
        httpx.post(f"{url}/_sim/delete", json={"posting_id": victim}, headers={"X-API-KEY": KEY}).raise_for_status()
        result = w.run(first, LAST, w.registered[0], w.registered[-1])
        assert not result.success
        message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
        assert f"posting {victim}, days {first}..{LAST}" in message and "404" in message
        materialized = instance.get_materialized_partitions(dg.AssetKey("raw_candidates"))
        others = [p for p in w.registered if p != victim]
        assert materialized == {key(p, d) for p in others for d in DayRange(first, LAST).days}
        loads = query(tmp_path / "heymilo.duckdb", "SELECT DISTINCT posting_id FROM partition_loads")
        assert set(loads["posting_id"]) == set(others)
        # The next listing unregisters it; a run that still names it (requested before) skips it quietly.
        assert w.list_postings().success
        assert victim not in w.registered
        assert w.run(first, LAST, w.registered[0], w.registered[-1]).success


def test_a_headless_backfill_is_one_run_and_names_the_posting_that_failed(tmp_path: Path) -> None:
    """heymilo-pipeline backfill: every registered posting in one run (one start-up, not one per posting); a
    posting that fails (404) is reported, the others are published."""
    tenant = Tenant(TenantSpec(seed=22, postings=5, start=START, end=LAST, candidates_per_posting=(50, 200)))
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.instance_for_test() as instance:
        w = World.of(tenant, url, tmp_path, instance)
        assert w.list_postings().success
        victim = w.registered[2]
        httpx.post(f"{url}/_sim/delete", json={"posting_id": victim}, headers={"X-API-KEY": KEY}).raise_for_status()
        first = LAST - timedelta(days=4)
        failed = run_backfill(w.location(), instance, first, LAST, w.registered)
        runs = instance.get_runs(dg.RunsFilter(job_name="candidates_job"))
        planned = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
            if e.dagster_event
        ]
        loaded = set(
            query(tmp_path / "heymilo.duckdb", "SELECT DISTINCT posting_id FROM partition_loads")["posting_id"]
        )
        registered = w.registered
    assert failed == [victim]
    assert len(runs) == 1 and runs[0].tags["heymilo/kind"] == "backfill"
    assert loaded == set(registered) - {victim}
    # Dagster plans every posting-day of the rectangle (no process-wide switch to plan the range as one event), so
    # the failed posting's days show as failed, not missing.
    assert sorted(p.partition for p in planned) == sorted(
        key(p, first + timedelta(days=i)) for p in registered for i in range(5)
    )


def test_the_daily_listing_starts_the_days_candidate_runs(world: World) -> None:
    """daily_update lists postings; update_after_postings turns that run's success into the day's plan."""
    schedule = daily_update(
        dg.build_schedule_context(
            instance=world.instance, scheduled_execution_time=datetime.combine(TODAY, datetime.min.time(), UTC)
        )
    )
    result = world.list_postings(dict(schedule.tags))
    runs = update_after_postings(_after_success(world, result.run_id))
    # the backfilled warehouse holds unfinished candidates from the first day on: the active days reach back
    # HEYMILO_ACTIVE_DAYS (30) days, i.e. to the first partition, so the whole history is one range
    assert isinstance(runs, list) and len(runs) == 1, runs
    (run,) = runs
    assert run.tags[AS_OF_TAG] == str(TODAY)
    assert run.tags["dagster/asset_partition_range_start"] == key(world.registered[0], START)
    assert run.tags["dagster/asset_partition_range_end"] == key(world.registered[-1], LAST)
    other = world.list_postings()
    assert isinstance(
        update_after_postings(_after_success(world, other.run_id)), dg.SkipReason
    )  # a listing of the sensor, not the update


def _after_success(world: World, run_id: str) -> dg.RunStatusSensorContext:
    """What update_after_postings sees when the run ``run_id`` has succeeded."""
    (record,) = world.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    return dg.build_run_status_sensor_context(
        sensor_name="update_after_postings",
        dagster_event=record.dagster_event,
        dagster_instance=world.instance,
        dagster_run=world.instance.get_run_by_id(run_id),
        resources={name: world.resource(name) for name in ("storage", "pipeline")},
    )


def test_rebuild_job_restores_duckdb_from_the_lake(world: World) -> None:
    before = checksums(world)
    backup = world.data_dir / "backup.duckdb"
    (world.data_dir / "heymilo.duckdb").rename(backup)
    try:
        assert world.location().execute("rebuild_job", world.instance)
        assert checksums(world) == before
        assert all(e.passed for e in world.check(TODAY).values())
    finally:
        (world.data_dir / "heymilo.duckdb").unlink(missing_ok=True)
        backup.rename(world.data_dir / "heymilo.duckdb")
