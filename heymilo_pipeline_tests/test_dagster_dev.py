"""A backfill through a real ``dagster dev`` (webserver + daemon), launched over GraphQL.

The simulator serves a small tenant on loopback, ``heymilo-pipeline postings`` registers its postings,
then ``dagster dev`` runs the code location against a temporary DAGSTER_HOME. The backfill of every
posting x every day of raw_candidates and interview_results (what the docs tell users to select) is launched
with the GraphQL mutation the UI uses, and the daemon does the rest: the candidates, then their results.
Afterwards the partitions Dagster marks materialized must be exactly the (posting, day) rows written
to DuckDB, those rows exactly the simulator's ground truth, and the results those of its finished candidates.

Slow-ish (~2-3 min: a code location load, four turns of the backfill daemon's 30 s loop, two runs
per posting); it makes no timing assertions, only timeouts that fail with dagster dev's output.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest

from heymilo_pipeline.cli import Location
from heymilo_pipeline.defs.checks import AFTER_LOADS, WAREHOUSE_CHECKS
from heymilo_pipeline.defs.results import RANGES_CHECK
from heymilo_pipeline.interview_results import FINISHED
from heymilo_pipeline.settings import Settings
from heymilo_pipeline.warehouse import query
from heymilo_pipeline_tests.dagster_ui import (
    CHECKS,
    check_names,
    expect_type,
    free_port,
    graphql,
    launch_backfill,
    loaded_repository,
    server_answers,
    signal_group,
    tail,
    wait_for,
)
from heymilo_pipeline_tests.support import product_yesterday

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
API_KEY = "sk_test_dagster-dev-3f9a"
DAYS = 20  # HEYMILO_START_DATE = today - DAYS; the partitions end yesterday
# raw_candidates is partitioned (posting x day); the DuckDB tables it loads are whole tables, recorded once a run.
ASSETS = ("raw_candidates", "candidates", "candidate_workflow_steps")
PARTITIONED = "raw_candidates"
RESULTS = "interview_results"
TABLES = ("candidates", "candidate_workflow_steps")
# The daemon dequeues every second and launches up to 4 runs at once; the "duckdb" pool (default
# limit 1) makes the warehouse loads take turns. Schedules and sensors stay stopped (their default).
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
run_queue:
  dequeue_interval_seconds: 1
  dequeue_use_threads: true
  dequeue_num_workers: 4
"""
STARTUP_TIMEOUT_S = 180.0
BACKFILL_TIMEOUT_S = 360.0
STOP_TIMEOUT_S = 30.0


# --- processes --------------------------------------------------------------------------------------


@dataclass
class Process:
    """A subprocess in its own session (so its whole process group can be signalled), logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float

    @classmethod
    def start(cls, name: str, args: list[str], env: dict[str, str], cwd: Path) -> Process:
        log = cwd / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        return cls(name, popen, log, time.monotonic())

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with code {self.popen.returncode}; its output ends with:\n{tail(self.log)}"
            )

    def output(self, lines: int = 80) -> str:
        """The tail of the log, for wait_for's timeout message."""
        return f"{self.name} output:\n{tail(self.log, lines)}"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the whole group, SIGKILL to whatever is left after ``timeout_s``."""
        pgid = self.popen.pid  # start_new_session: the leader's pid is the group id
        signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout_s)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pgid):
            print(f"{self.name}: process group {pgid} still alive after {timeout_s:g}s, killing it")
            signal_group(pgid, signal.SIGKILL)
            self.popen.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the environment --------------------------------------------------------------------------------


@dataclass
class Setup:
    tmp: Path
    env: dict[str, str]
    first_day: date
    last_day: date
    dagster_home: Path
    data_dir: Path

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range((self.last_day - self.first_day).days + 1)]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    # `dagster dev` reads the real clock: the days are its partitions', as the product computes them
    last_day = product_yesterday()
    if product_yesterday(420) != last_day:
        pytest.skip("too close to midnight UTC: the daily partitions would change while the test runs")
    first_day = last_day - timedelta(days=DAYS - 1)
    dagster_home, data_dir = tmp_path / "dagster_home", tmp_path / "data"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(dagster_home),
        HEYMILO_API_KEY=API_KEY,
        HEYMILO_DATA_DIR=str(data_dir),
        HEYMILO_START_DATE=first_day.isoformat(),
        # The simulator imposes no limit; the results (half of it) then take seconds, not minutes.
        HEYMILO_RATE_LIMIT="6000",
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return Setup(tmp_path, env, first_day, last_day, dagster_home, data_dir)


@pytest.fixture
def simulator(setup: Setup) -> Iterator[str]:
    """``heymilo-sim serve`` on a free loopback port, with a small tenant and light faults; yields its URL."""
    args = [
        str(BIN / "heymilo-sim"), "serve", "--host", "127.0.0.1", "--port", "0", "--api-key", API_KEY,
        "--seed", "5", "--postings", "5", "--start", setup.first_day.isoformat(), "--end", setup.last_day.isoformat(),
        "--min-candidates", "50", "--max-candidates", "300", "--error-rate", "0.05", "--drop-rate", "0.02",
    ]  # fmt: skip
    process = Process.start("simulator", args, setup.env, setup.tmp)
    try:

        def url() -> str | None:
            for line in process.log.read_text(errors="replace").splitlines():
                if line.startswith("HeyMilo simulator on "):
                    return line.split()[3]
            return None

        base_url = wait_for("the simulator to listen", url, 60.0, process, interval_s=0.1)
        setup.env["HEYMILO_BASE_URL"] = base_url
        yield base_url
    finally:
        process.stop(timeout_s=10.0)


@pytest.fixture
def postings(setup: Setup, simulator: str) -> list[str]:
    """The postings ``heymilo-pipeline postings`` registers as partitions (in DAGSTER_HOME)."""
    done = subprocess.run(
        [str(BIN / "heymilo-pipeline"), "postings"],
        env=setup.env, cwd=setup.tmp, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, f"heymilo-pipeline postings failed:\n{done.stdout}\n{done.stderr}"
    with dg.DagsterInstance.from_config(str(setup.dagster_home)) as instance:
        registered = list(instance.get_dynamic_partitions("postings"))
    assert registered, done.stdout
    return registered


@pytest.fixture
def dagster_dev(setup: Setup, postings: list[str]) -> Iterator[tuple[str, Process]]:
    """``dagster dev`` (webserver + daemon + code server) in its own process group; yields (URL, process)."""
    port = free_port()
    args = [str(BIN / "dagster"), "dev", "-m", "heymilo_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)]
    process = Process.start("dagster_dev", args, setup.env, setup.tmp)
    url = f"http://127.0.0.1:{port}"
    failed = True
    try:
        wait_for("the webserver to answer", lambda: server_answers(url), STARTUP_TIMEOUT_S, process)
        yield url, process
        failed = False
    finally:
        process.stop()
        if failed:
            print(f"\n--- dagster dev output (tail) ---\n{tail(process.log, 150)}")


# --- GraphQL ----------------------------------------------------------------------------------------


PARTITION_STATS = """
query Stats($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } }
  }
}
"""


# --- ground truth -----------------------------------------------------------------------------------


def truth_of(simulator: str, postings: list[str], days: list[date]) -> tuple[Counter[tuple[str, date]], set[str]]:
    """Candidates per (posting, created day) of the registered postings within the days, and the interview ids of
    the finished ones among them, per the simulator."""
    response = httpx.get(f"{simulator}/_sim/truth", headers={"X-API-KEY": API_KEY}, timeout=60.0, trust_env=False)
    response.raise_for_status()
    content = response.content
    # httpx decodes a Content-Encoding: gzip response itself; this one is a gzip *file* (application/gzip).
    lines = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
    wanted, first, end = set(postings), days[0], days[-1] + timedelta(days=1)
    counts: Counter[tuple[str, date]] = Counter()
    finished: set[str] = set()
    for line in lines.splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        day = datetime.fromtimestamp(doc["created_at"], UTC).date()
        if doc["posting_id"] in wanted and first <= day < end:
            counts[doc["posting_id"], day] += 1
            if doc["status"] in FINISHED:
                finished.add(doc["interview_id"])
    return counts, finished


# --- the test ---------------------------------------------------------------------------------------


def test_backfill_through_dagster_dev(
    setup: Setup, simulator: str, postings: list[str], dagster_dev: tuple[str, Process]
) -> None:
    url, process = dagster_dev

    # 1. The code location loaded with everything it defines (sensors and schedules stopped).
    repo = wait_for("the code location to load", lambda: loaded_repository(url), STARTUP_TIMEOUT_S, process)
    nodes = {"/".join(node["assetKey"]["path"]): node for node in repo["assetNodes"]}
    assert set(nodes) == {"postings", *ASSETS, "posting_funnel", "interview_results"}, sorted(nodes)
    assert {key for key, node in nodes.items() if node["isPartitioned"]} == {PARTITIONED, "interview_results"}
    checks = check_names(repo)
    assert checks == CHECKS, checks
    assert {job["name"] for job in repo["jobs"]} >= {"candidates_job", "postings_job"}
    assert {(s["name"], s["scheduleState"]["status"]) for s in repo["schedules"]} == {
        ("daily_update", "STOPPED"),
        ("daily_checks", "STOPPED"),
    }
    assert {(s["name"], s["sensorState"]["status"]) for s in repo["sensors"]} == {
        ("checks_after_loads", "RUNNING"),  # requests nothing until a load
        ("new_postings", "STOPPED"),
        ("update_after_postings", "RUNNING"),  # it acts only on the daily update's listing
        ("results_after_candidates", "RUNNING"),  # acts only once a candidates run ends
    }
    print(f"\ncode location {repo['location']['name']} loaded {time.monotonic() - process.started:.1f}s after start")

    # 2. Backfill every partition (all registered postings x every day) of the candidates and their results.
    selection = [{"path": [PARTITIONED]}, {"path": [RESULTS]}]
    params = {"assetSelection": selection, "allPartitions": True, "title": "test"}
    launched_at = time.monotonic()
    backfill = launch_backfill(url, params, BACKFILL_TIMEOUT_S, process)
    runs = backfill["runs"]
    print(f"backfill: {backfill['status']} {time.monotonic() - launched_at:.1f}s after launch, {len(runs)} runs")
    expected = {(posting, day) for posting in postings for day in setup.days}
    assert backfill["numPartitions"] == len(expected)

    # One candidates run per posting, covering all its days (BackfillPolicy.single_run); then, in runs of their
    # own once those partitions are materialized, the results of the same days (a policy of their own).
    run_postings: dict[str, str] = {}
    results_runs: dict[str, str] = {}
    for run in runs:
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        posting, first = split_key(tags["dagster/asset_partition_range_start"])
        assert (first, split_key(tags["dagster/asset_partition_range_end"])) == (
            setup.first_day, (posting, setup.last_day)
        ), tags  # fmt: skip
        selected = {"/".join(key["path"]) for key in run["assetSelection"]}
        assert selected in ({PARTITIONED}, {RESULTS}), selected
        (run_postings if selected == {PARTITIONED} else results_runs)[run["runId"]] = posting
    assert sorted(run_postings.values()) == sorted(results_runs.values()) == sorted(postings)

    for key in (PARTITIONED, RESULTS):
        node = expect_type(graphql(url, PARTITION_STATS, {"key": {"path": [key]}})["assetNodeOrError"], "AssetNode")
        assert node["partitionStats"] == {
            "numMaterialized": len(expected), "numPartitions": len(expected), "numFailed": 0, "numMaterializing": 0
        }, key  # fmt: skip

    # 3. The daemon's checks_after_loads then evaluates the checks that read only what is stored, in a run of
    #    their own once no load is in progress (its ticks are a minute apart): the tables' checks are not left
    #    "not evaluated" after a load.
    after_loads = [dg.AssetCheckKey(WAREHOUSE_CHECKS[name][0], name) for name in AFTER_LOADS]

    def evaluated() -> dict[str, bool] | None:
        with dg.DagsterInstance.from_config(str(setup.dagster_home)) as instance:
            latest = {k: instance.event_log_storage.get_asset_check_execution_history(k, limit=1) for k in after_loads}
        done = {k.name: r[0] for k, r in latest.items() if r and r[0].status.value in ("SUCCEEDED", "FAILED")}
        if len(done) < len(after_loads):
            return None
        assert not {r.run_id for r in done.values()} & set(run_postings)  # not inside a load's run
        return {name: r.event.asset_check_evaluation.passed for name, r in done.items()}

    passed = wait_for("checks_after_loads to evaluate the checks", evaluated, 240, process, interval_s=2)
    assert passed == dict.fromkeys(AFTER_LOADS, True), passed

    # 4. After dagster dev is stopped: what Dagster recorded vs. what DuckDB holds vs. the simulator's truth.
    process.stop()
    with dg.DagsterInstance.from_config(str(setup.dagster_home)) as instance:
        materialized = set(map(split_key, instance.get_materialized_partitions(dg.AssetKey(PARTITIONED))))
        # Each table: one materialization per run that loaded it (one a posting here), unpartitioned.
        tables = {
            key: [
                r.asset_materialization
                for r in instance.fetch_materializations(dg.AssetKey(key), limit=100).records
                if r.asset_materialization
            ]
            for key in TABLES
        }
        checks_run = {
            (key, name): instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(key), name), limit=100
            )
            for key, names in CHECKS.items()
            for name in names
        }
    # The slice rules passed in every load run, the range rules of the results in every results run. The warehouse
    # checks judge the whole warehouse: no load run plans or runs them; the daily audit's own (freshness,
    # completeness) nothing has run yet. Those of interview_results Dagster plans with each results run (an
    # asset's checks come with it), where they leave no result: only the audit judges them.
    in_step = {PARTITIONED: set(run_postings), RANGES_CHECK: set(results_runs)}
    for (key, name), records in checks_run.items():
        if key in in_step or name in in_step:
            assert {r.run_id for r in records} == in_step.get(key, in_step.get(name)), (key, name)
            assert {r.status.value for r in records} == {"SUCCEEDED"}, (key, name, records)
        elif key == RESULTS:
            assert {r.run_id for r in records} == set(results_runs), (key, name)
            assert {r.status.value for r in records} == {"PLANNED"}, (key, name, records)
        else:
            assert not {r.run_id for r in records} & {*run_postings, *results_runs}, (key, name, records)
            assert (name in AFTER_LOADS) == bool(records), (key, name, records)
    for key, events in tables.items():
        assert len(events) == len(run_postings) and all(e.partition is None for e in events), (key, events)
    # The daily audit, after the backfill: every warehouse check evaluated, and passed.
    # The same settings the code location read from setup.env, read the same way.
    location = Location.build(Settings.from_env(setup.env), secrets_from_env=False)
    with dg.DagsterInstance.from_config(str(setup.dagster_home)) as instance:
        assert location.execute("warehouse_checks_job", instance)
        latest = {
            (key, name): instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(key), name), limit=1
            )[0]
            for key, names in CHECKS.items()
            if key != PARTITIONED
            for name in names
            if name != RANGES_CHECK  # evaluated in the runs above
        }
    assert {k: r.status.value for k, r in latest.items()} == dict.fromkeys(latest, "SUCCEEDED")
    sql = "SELECT posting_id, CAST(partition_date AS VARCHAR) AS day, rows, run_id FROM partition_loads"
    loads = {
        (row.posting_id, date.fromisoformat(row.day)): (row.rows, row.run_id)
        for row in query(setup.data_dir / "heymilo.duckdb", sql).itertuples()
    }
    assert materialized == set(loads) == expected
    # Each (posting, day) was loaded by that posting's run of this backfill.
    assert {key: run_postings.get(run_id) for key, (_, run_id) in loads.items()} == {key: key[0] for key in loads}

    truth, finished = truth_of(simulator, postings, setup.days)
    assert sum(truth.values()) > 0 and finished
    assert {key: rows for key, (rows, _) in loads.items()} == {key: truth[key] for key in expected}
    (total,) = query(setup.data_dir / "heymilo.duckdb", "SELECT count(*) AS n FROM candidates")["n"]
    assert total == sum(truth.values())
    # The results runs came after the candidates (none would be due otherwise): every finished candidate's, once.
    results = query(setup.data_dir / "heymilo.duckdb", "SELECT interview_id FROM interview_results")["interview_id"]
    assert sorted(results) == sorted(finished)
    print(
        f"{len(expected)} partitions, {total} candidates, {len(results)} results; "
        f"{time.monotonic() - process.started:.1f}s since dagster dev"
    )


def split_key(partition_key: str) -> tuple[str, date]:
    """'2026-01-31|ABCD1234' (a multi-partition key: dimensions in name order, date then posting)."""
    day, posting = partition_key.split("|")
    return posting, date.fromisoformat(day)
