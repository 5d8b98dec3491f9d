"""Beyond one machine: hosts that share nothing but PostgreSQL share the Dagster instance and the API key's
rate budget, with the instance configured as deploy/dagster.yaml configures it.

A real PostgreSQL server (started by the session fixture, torn down after) holds both; "hosts" are processes
with a data directory and a Dagster home of their own, so the only thing they can share is that database.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import dagster as dg
import httpx
import psycopg2
import pytest
import yaml

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.limits import BUDGET_TABLE, PostgresRateLimiter, budget_id
from heymilo_pipeline.api.settings import ClientSettings
from heymilo_pipeline.api.windows import day_of
from heymilo_pipeline.devservers import S3Server, new_database, sqlalchemy_url
from heymilo_pipeline.refresh import plan
from heymilo_pipeline.settings import Settings, variable
from heymilo_pipeline.shared_tables import S3_VARIABLES, shared_tables_at
from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.tables import CANDIDATES, PARTITION_LOADS, POSTINGS, RAW_RECORDS, WORKFLOW_STEPS
from heymilo_pipeline.warehouse import query
from heymilo_pipeline_tests.support import LAST, START, clean_environ, cli, finish, slots_from_processes, smallest_gap

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KEY = "sk_test_HOSTS-9f8e7d6c"
# As in test_concurrency: the simulator allows 20 requests in any 2 s, each host is told 540/min (9/s). Two
# hosts with budgets of their own send 18/s and meet 429s within seconds; sharing one they send 9/s together.
WINDOW_S, WINDOW_LIMIT, CLIENT_PER_MINUTE = 2.0, 20, 540

pytestmark = pytest.mark.integration


@pytest.fixture
def budget_db(postgres_url: str) -> str:
    return new_database(postgres_url, f"budget_{uuid.uuid4().hex[:8]}")


def _take_slots(url: str, count: int, queue: multiprocessing.Queue) -> None:
    limiter = PostgresRateLimiter(url, "shared", requests_per_window=1200, window_seconds=60.0, headroom=1.0)
    queue.put([limiter.reserve_slot() for _ in range(count)])
    limiter.close()


def test_processes_share_one_budget_in_postgres(budget_db: str) -> None:
    """Three processes taking 20 slots each get 60 distinct slots, never closer than the interval."""
    slots = slots_from_processes(_take_slots, budget_db)
    assert len(slots) == 60
    assert smallest_gap(slots) >= 60.0 / 1200 - 1e-6


def test_a_pause_holds_every_host(budget_db: str) -> None:
    a = PostgresRateLimiter(budget_db, "k", requests_per_window=6000)
    b = PostgresRateLimiter(budget_db, "k", requests_per_window=6000)
    other = PostgresRateLimiter(budget_db, "other key", requests_per_window=6000)
    a.pause_for(5)
    assert 4.9 < b.reserve() <= 5.0
    assert other.reserve() < 0.1  # another key's budget is its own
    for limiter in (a, b, other):
        limiter.close()


def test_the_budget_survives_a_dropped_connection(budget_db: str) -> None:
    limiter = PostgresRateLimiter(budget_db, "k", requests_per_window=600, headroom=1.0)
    first = limiter.reserve_slot()
    killer = psycopg2.connect(budget_db)
    killer.autocommit = True
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                       ("heymilo-rate-budget",))  # fmt: skip
    killer.close()
    assert limiter.reserve_slot() == pytest.approx(first + 0.1)  # a new connection, the same schedule
    limiter.close()


def test_the_key_and_the_password_stay_out_of_the_database_and_the_errors(budget_db: str) -> None:
    settings = ClientSettings.build(api_key="sk_live_SECRET", rate_budget_url=budget_db)
    limiter = settings.limiter()
    assert isinstance(limiter, PostgresRateLimiter)
    limiter.reserve()
    limiter.close()
    conn = psycopg2.connect(budget_db)
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT budget FROM {BUDGET_TABLE}")
        assert cursor.fetchall() == [(budget_id("sk_live_SECRET", settings.base_url),)]
    conn.close()
    host = budget_db.split("@", 1)[1].split("/", 1)[0]
    unreachable = f"postgresql://heymilo:hunter2-PASSWORD@{host.split(':')[0]}:1/postgres"
    broken = ClientSettings.build(api_key="sk_live_SECRET", rate_budget_url=unreachable).limiter()
    with pytest.raises(ConfigurationError) as raised:
        broken.reserve()
    message = str(raised.value)
    assert "HEYMILO_RATE_BUDGET_URL" in message and "cannot be used" in message
    assert "hunter2" not in message and "SECRET" not in message and "hunter2" not in repr(broken)


def production_home(root: Path) -> Path:
    """A Dagster home holding deploy/dagster.yaml, exactly as the image installs it."""
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    return home


def test_the_production_instance_loads(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/dagster.yaml: storage in PostgreSQL, runs in containers that get every setting compose passes."""
    database = new_database(postgres_url, f"instance_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", sqlalchemy_url(database))
    with dg.DagsterInstance.from_config(str(production_home(tmp_path))) as instance:
        storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        assert [type(s).__name__ for s in storages] == [
            "PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"
        ]  # fmt: skip
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "DockerRunLauncher"
        assert instance.run_monitoring_enabled
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    passed = set(compose["x-environment"])
    # A run container sees what the daemon passes on, and a variable listed but unset fails the launch: the two
    # lists must be the same, and hold only settings the pipeline (or Dagster's storage) reads.
    assert set(launcher.env_vars) == passed
    dagster_reads = {"DAGSTER_POSTGRES_URL", "DAGSTER_EVENT_BATCH_SIZE"}  # its storage; its batched event writes
    assert passed - dagster_reads - set(S3_VARIABLES) <= {variable(name) for name in Settings.model_fields}
    assert int(compose["x-environment"]["DAGSTER_EVENT_BATCH_SIZE"]) > 0
    s3 = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"}  # MinIO's
    shared = {"HEYMILO_SHARED_CATALOG_URL", "HEYMILO_SHARED_DATA_PATH", *s3}
    assert {"HEYMILO_RATE_BUDGET_URL", "HEYMILO_API_KEY", "DAGSTER_POSTGRES_URL", *shared} <= passed


def _two_hosts(
    url: str, root: Path, shared: dict[str, str], tenant: Tenant, busiest: str
) -> tuple[list[str], dict, list[dict[str, str]]]:
    """Host a backfills the busiest posting while host b runs the daily update, each from its own directories;
    returns their outputs, the simulator's request statistics of the two, and each host's environment."""
    envs = []
    for name in ("a", "b"):
        host = root / name
        envs.append({
            **clean_environ(), **shared,
            "HEYMILO_API_KEY": KEY, "HEYMILO_BASE_URL": url, "HEYMILO_DATA_DIR": str(host / "data"),
            "HEYMILO_START_DATE": START.isoformat(), "HEYMILO_RATE_LIMIT": str(CLIENT_PER_MINUTE),
            "HEYMILO_ACTIVE_DAYS": "0",  # the update's days must not depend on what the backfill loaded first
            "DAGSTER_HOME": str(production_home(host)),
        })  # fmt: skip
        finish(cli(envs[-1], "postings"))
    time.sleep(WINDOW_S)  # the listings' requests out of the window
    httpx.post(f"{url}/_sim/stats/reset", headers={"X-API-KEY": KEY})
    backfill = cli(
        envs[0],
        "backfill",
        "--start",
        START.isoformat(),
        "--end",
        LAST.isoformat(),
        "--posting",
        busiest,
        "--no-results",
    )
    update = cli(envs[1], "update", "--as-of", (LAST + timedelta(days=1)).isoformat(), "--no-results")
    outputs = [finish(backfill), finish(update)]
    return outputs, httpx.get(f"{url}/_sim/stats", headers={"X-API-KEY": KEY}).json(), envs


def test_two_hosts_sharing_only_postgres_share_one_rate_budget(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = Tenant(TenantSpec(seed=45, postings=4, start=START, end=LAST, candidates_per_posting=(1500, 2500)))
    registered = [p["id"] for p in tenant.postings() if not p["test_posting"]]
    per_posting = Counter(r["posting_id"] for r in tenant.truth())
    busiest = max(registered, key=lambda p: per_posting[p])
    database = sqlalchemy_url(new_database(postgres_url, f"hosts_{uuid.uuid4().hex[:8]}"))  # one URL for both
    faults = Faults(rate_limit=WINDOW_LIMIT, rate_window_s=WINDOW_S)
    with serve_in_thread(create_app(tenant, KEY, faults)) as url:
        # Without the shared budget (each host its own file) the same two commands overrun the key: the control.
        _, alone, alone_envs = _two_hosts(url, tmp_path / "alone", {"DAGSTER_POSTGRES_URL": database}, tenant, busiest)
        time.sleep(WINDOW_S)
        shared = {"DAGSTER_POSTGRES_URL": database, "HEYMILO_RATE_BUDGET_URL": database}
        outputs, stats, _ = _two_hosts(url, tmp_path / "shared", shared, tenant, busiest)
    assert alone["rate_limited"] > 0, alone
    status = finish(cli(alone_envs[1], "status"))  # each host reports its own DuckDB file
    assert re.search(r"DuckDB .*heymilo\.duckdb:\n(.*\n)*  candidates +[1-9][\d,]* rows", status), status
    assert stats["rate_limited"] == 0, stats  # both hosts together stayed under the limit
    assert stats["max_requests_in_window"] <= WINDOW_LIMIT
    # Busy all along: the two together used most of the key (time-scaled: 10 requests a second).
    requests = sum(stats["requests_by_route"].values())
    assert requests > 60, stats
    # Each host's tables are the truth of what it loaded.
    updated = {d for r in plan(LAST + timedelta(days=1), START, 7, 7).ranges for d in r.days}
    truth = [r for r in tenant.truth() if r["posting_id"] in registered and day_of(r["created_at"]) <= LAST]
    expected = {
        "a": {r["interview_id"] for r in truth if r["posting_id"] == busiest},
        "b": {r["interview_id"] for r in truth if day_of(r["created_at"]) in updated},
    }
    for host, ids in expected.items():
        table = query(tmp_path / "shared" / host / "data" / "heymilo.duckdb", "SELECT interview_id FROM candidates")
        assert len(table) == len(ids) and set(table["interview_id"]) == ids, host
    # Both hosts' runs are in the one instance in PostgreSQL, whichever home reads it.
    run_ids = [m for output in outputs for m in re.findall(r"run ([0-9a-f-]{36}): succeeded", output)]
    assert len(run_ids) >= 2
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", database)
    with dg.DagsterInstance.from_config(str(tmp_path / "shared" / "a" / "dagster_home")) as instance:
        assert all(instance.get_run_by_id(run_id) is not None for run_id in run_ids)


def test_two_hosts_sharing_postgres_and_s3_write_one_set_of_tables(
    postgres_url: str, s3: S3Server, tmp_path: Path
) -> None:
    """The production profile whole: Dagster, the rate budget and the tables' catalog in one PostgreSQL database,
    the tables' files on S3. Host a backfills the busiest posting while host b runs the daily update, each from
    its own directories: both write the same tables, under one budget; then b publishes the DuckDB file."""
    tenant = Tenant(TenantSpec(seed=46, postings=4, start=START, end=LAST, candidates_per_posting=(1500, 2500)))
    registered = [p["id"] for p in tenant.postings() if not p["test_posting"]]
    per_posting = Counter(r["posting_id"] for r in tenant.truth())
    busiest = max(registered, key=lambda p: per_posting[p])
    database = sqlalchemy_url(new_database(postgres_url, f"production_{uuid.uuid4().hex[:8]}"))
    data_path = f"s3://{s3.bucket}/hosts-{uuid.uuid4().hex[:8]}/"
    shared = {
        "DAGSTER_POSTGRES_URL": database, "HEYMILO_RATE_BUDGET_URL": database,
        "HEYMILO_SHARED_CATALOG_URL": database, "HEYMILO_SHARED_DATA_PATH": data_path, **s3.environ(),
    }  # fmt: skip
    with serve_in_thread(create_app(tenant, KEY, Faults(rate_limit=WINDOW_LIMIT, rate_window_s=WINDOW_S))) as url:
        outputs, stats, envs = _two_hosts(url, tmp_path, shared, tenant, busiest)
    assert stats["rate_limited"] == 0, stats
    assert stats["max_requests_in_window"] <= WINDOW_LIMIT
    # No host wrote a DuckDB file or lake files of its own: the tables are the shared ones.
    for host in ("a", "b"):
        data = tmp_path / host / "data"
        assert not (data / "heymilo.duckdb").exists() and not list((data / "lake").rglob("*.parquet")), host
    # The shared tables hold exactly the truth of what the two loaded together: every row once, as the API has it.
    updated = {d for r in plan(LAST + timedelta(days=1), START, 7, 7).ranges for d in r.days}
    truth = {
        r["interview_id"]: r
        for r in tenant.truth()
        if r["posting_id"] in registered and day_of(r["created_at"]) <= LAST
        and (r["posting_id"] == busiest or day_of(r["created_at"]) in updated)
    }  # fmt: skip
    tables = shared_tables_at(database, data_path, s3.environ())
    stored = tables.read(CANDIDATES).select(["interview_id", "posting_id", "status", "score"]).to_pylist()
    assert len(stored) == len(truth) and {r["interview_id"] for r in stored} == set(truth)
    assert all((r["posting_id"], r["status"], r["score"]) == (
        truth[r["interview_id"]]["posting_id"], truth[r["interview_id"]]["status"], truth[r["interview_id"]]["score"]
    ) for r in stored)  # fmt: skip
    raw_ids = tables.read(RAW_RECORDS)["interview_id"].to_pylist()
    assert sorted(raw_ids) == sorted(truth)
    loaded = tables.read(PARTITION_LOADS)
    assert loaded.num_rows == len(set(zip(loaded["posting_id"].to_pylist(), loaded["partition_date"].to_pylist(),
                                          strict=True)))  # fmt: skip
    assert tables.read(POSTINGS).num_rows == len(tenant.postings())
    # The update's audits ran on the shared tables (completeness fails: most days were never backfilled).
    for check in ("candidates:unique_interview_id", "candidate_workflow_steps:steps_reference_candidates"):
        assert re.search(rf"{check}\s+passed", outputs[1]), outputs[1][-3000:]
    # Host b publishes the DuckDB file its notebooks read: the shared tables, row for row.
    published = finish(cli(envs[1], "publish"))
    assert f"candidates {len(truth):,}" in published, published
    in_file = query(tmp_path / "b" / "data" / "heymilo.duckdb", "SELECT interview_id FROM candidates")
    assert sorted(in_file["interview_id"]) == sorted(truth)
    status = finish(cli(envs[0], "status"))  # either host reports the shared tables
    assert re.search(rf"\n  candidates +{len(truth):,} rows", status), status
    assert "shared tables (catalog postgresql://" in status and "production_" in status, status
    requests = sum(stats["requests_by_route"].values())
    print(
        f"\nshared tables, two hosts: {requests} requests, {stats['rate_limited']} 429s, at most "
        f"{stats['max_requests_in_window']} of {WINDOW_LIMIT} in any {WINDOW_S:g} s; {len(stored)} candidates stored, "
        f"{len(truth)} in the truth; {len(in_file)} published"
    )


def test_a_host_killed_while_writing_the_shared_tables_leaves_whole_postings(
    postgres_url: str, s3: S3Server, tmp_path: Path
) -> None:
    """kill -9 of a backfill just as it begins writing a posting to the shared tables, after one with candidates:
    every posting is then in the tables whole (all its days, raw records and steps) or not at all; the rerun
    completes them."""
    tenant = Tenant(TenantSpec(seed=47, postings=4, start=START, end=LAST, candidates_per_posting=(1500, 2500)))
    registered = [p["id"] for p in tenant.postings() if not p["test_posting"]]
    database = new_database(postgres_url, f"killed_{uuid.uuid4().hex[:8]}")
    data_path = f"s3://{s3.bucket}/killed-{uuid.uuid4().hex[:8]}/"
    env = {
        **clean_environ(), **s3.environ(),
        "HEYMILO_API_KEY": KEY, "HEYMILO_DATA_DIR": str(tmp_path / "data"), "HEYMILO_START_DATE": START.isoformat(),
        "HEYMILO_SHARED_CATALOG_URL": database, "HEYMILO_SHARED_DATA_PATH": data_path,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }  # fmt: skip
    (tmp_path / "dagster_home").mkdir()
    truth = [r for r in tenant.truth() if r["posting_id"] in registered and day_of(r["created_at"]) <= LAST]
    backfill = ["backfill", "--start", START.isoformat(), "--end", LAST.isoformat(), "--no-results"]
    tables = shared_tables_at(database, data_path, s3.environ())
    with serve_in_thread(create_app(tenant, KEY)) as url:
        env["HEYMILO_BASE_URL"] = url
        finish(cli(env, "postings"))
        command = [sys.executable, "-m", "heymilo_pipeline.cli", "--verbose", *backfill]
        host = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        holding = {r["posting_id"] for r in truth}
        written: list[str] = []
        seen = []
        assert host.stdout is not None
        for line in host.stdout:
            seen.append(line)
            if found := re.search(r"posting (\S+): writing to the shared tables", line):
                # The next posting's write begins after one with candidates began (and, most likely, committed).
                if set(written) & holding:
                    os.killpg(host.pid, signal.SIGKILL)
                    break
                written.append(found.group(1))
        host.wait(timeout=60)
        assert host.returncode == -signal.SIGKILL, "".join(seen[-40:])
        # Whole postings only: each stored posting has every day, its candidates as the API has them, their raw
        # records and steps; the days' counts agree.
        # (A posting's days are in partition_loads even when they hold no candidate.)
        loads = tables.read(PARTITION_LOADS).to_pylist()
        stored = {r["posting_id"] for r in loads}
        assert stored < set(registered), stored  # killed before the last posting was written
        assert stored & holding, "no posting with candidates was stored before the kill"
        days = (LAST - START).days + 1
        assert len(loads) == days * len(stored)  # every day of each stored posting
        per_day = Counter((r["posting_id"], day_of(r["created_at"])) for r in truth if r["posting_id"] in stored)
        assert all(r["rows"] == per_day[(r["posting_id"], r["partition_date"])] for r in loads)
        expected = {r["interview_id"] for r in truth if r["posting_id"] in stored}
        assert sorted(tables.read(CANDIDATES)["interview_id"].to_pylist()) == sorted(expected)
        assert sorted(tables.read(RAW_RECORDS)["interview_id"].to_pylist()) == sorted(expected)
        steps = set(tables.read(WORKFLOW_STEPS)["interview_id"].to_pylist())
        assert steps <= expected and steps == {r["interview_id"] for r in truth if r["posting_id"] in stored
                                               and r.get("workflow", {}).get("steps")}  # fmt: skip
        # The rerun completes the tables: every posting, every candidate once.
        finish(cli(env, *backfill))
    final = tables.read(CANDIDATES)["interview_id"].to_pylist()
    assert sorted(final) == sorted(r["interview_id"] for r in truth)
    print(
        f"\nkilled writing posting {len(written) + 1}: {len(stored)} whole posting(s), {len(expected)} candidates "
        f"stored; {len(final)} after the rerun"
    )
