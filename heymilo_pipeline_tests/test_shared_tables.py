"""The shared tables (DuckLake: catalog in a throwaway PostgreSQL, files on a throwaway S3): slice replacement in
one transaction, writers from several processes on the same posting-month, a writer killed mid-commit, the DuckDB
file published for notebooks, an analyst's read-only attach, and errors that keep the password out."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import pyarrow as pa
import pytest

from heymilo_pipeline import shared_tables
from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.models import CandidateResponse
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.devservers import S3Server, new_database
from heymilo_pipeline.flatten import flatten
from heymilo_pipeline.interview_results import StoredResult
from heymilo_pipeline.interview_results import flatten as flatten_results
from heymilo_pipeline.lake import RAW_TEXTS, raw_json
from heymilo_pipeline.shared_tables import (
    LAKE,
    S3,
    Catalog,
    SharedTables,
    SharedTablesBusyError,
    SharedTablesError,
    extension_path,
)
from heymilo_pipeline.storage import SliceRows
from heymilo_pipeline.storage.shared import SharedStore
from heymilo_pipeline.tables import CANDIDATES, POSTINGS, RAW_RECORDS, RESULT_TABLES, WORKFLOW_STEPS
from heymilo_pipeline.warehouse import Warehouse
from heymilo_pipeline_tests.factories import DAY, DAYS, fetched, fetched_on

SLICE_TABLE_NAMES = ("raw_candidates", "candidates", "candidate_workflow_steps")


def slice_of(raw: list[dict[str, Any]], posting_id: str = "P1", days: DayRange = DAYS) -> SliceRows:
    """Records as a fetch hands them over: flattened, and their JSON text row for row with the candidates."""
    for record in raw:
        record["posting_id"] = posting_id
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    by_id = dict(zip((r["interview_id"] for r in raw), raw_json(raw).to_pylist(), strict=True))
    ids = candidates["interview_id"].to_pylist()
    texts = pa.table({"interview_id": ids, "record": [by_id[i] for i in ids]}, schema=RAW_TEXTS)
    return SliceRows(posting_id, days, texts, candidates, steps)


def rows(tables: SharedTables, table: str = "candidates") -> list[tuple]:
    with tables.session() as conn:
        return conn.execute(f"SELECT interview_id, posting_id, created_date FROM {table} ORDER BY ALL").fetchall()


def keys_of(candidates: pa.Table) -> list[tuple]:
    return list(zip(*(candidates[c].to_pylist() for c in ("interview_id", "posting_id", "created_date")), strict=True))


def loads(tables: SharedTables) -> list[tuple]:
    with tables.session() as conn:
        return conn.execute("SELECT posting_id, partition_date, rows FROM partition_loads ORDER BY ALL").fetchall()


def new_catalog(postgres_url: str, s3: S3Server) -> Catalog:
    name = f"lake_{uuid.uuid4().hex[:10]}"
    return Catalog(new_database(postgres_url, name), f"s3://{s3.bucket}/{name}/", S3.from_environ(s3.environ()))


@pytest.fixture
def catalog(postgres_url: str, s3: S3Server) -> Catalog:
    return new_catalog(postgres_url, s3)


@pytest.fixture
def shared(catalog: Catalog) -> SharedTables:
    tables = SharedTables(catalog)
    tables.ensure_schema()
    return tables


# --- fast: settings and messages (no servers) ---------------------------------------------------------------


def test_s3_settings_from_the_usual_variables_never_show_the_secret() -> None:
    assert S3.from_environ({"AWS_ACCESS_KEY_ID": "AK"}) is None  # half a credential is none
    s3 = S3.from_environ(
        {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "it's-secret", "AWS_ENDPOINT_URL": "http://minio:9000"}
    )
    assert s3 is not None and s3.region == "us-east-1"
    assert "secret" not in repr(s3) and "AK" not in repr(s3)
    sql = s3.secret_sql()
    assert "SECRET 'it''s-secret'" in sql  # quoted, not injected
    assert "ENDPOINT 'minio:9000'" in sql and "USE_SSL false" in sql and "URL_STYLE 'path'" in sql
    aws = S3("AK", "S", "eu-west-1").secret_sql()
    assert "ENDPOINT" not in aws and "USE_SSL true" in aws and "REGION 'eu-west-1'" in aws


def test_a_catalog_names_what_is_missing_and_hides_its_password() -> None:
    catalog = Catalog("postgresql+psycopg2://heymilo:hunter2@db:5432/lake", "/data/lake/")
    assert "hunter2" not in repr(catalog) and catalog.shown_url == "postgresql://heymilo@db:5432/lake"
    assert "ducklake:postgres:postgresql://heymilo:hunter2@db:5432/lake" in catalog.attach_sql()
    assert "READ_ONLY" in catalog.attach_sql(read_only=True)
    with pytest.raises(SharedTablesError, match="AWS_ACCESS_KEY_ID"):
        Catalog("postgresql://db/lake", "s3://bucket/lake/")
    with pytest.raises(SharedTablesError, match="postgresql://"):
        Catalog("mysql://db/lake", "/data/lake/")
    with pytest.raises(SharedTablesError, match=r"pip install 'duckdb==.*' 'duckdb-extension-nothing=="):
        extension_path("nothing")
    assert extension_path("ducklake").is_file()  # the production extra's wheel, for this DuckDB


def test_the_upkeep_job_exists_only_with_shared_tables() -> None:
    from heymilo_pipeline.definitions import build_defs
    from heymilo_pipeline.settings import Settings

    local = build_defs(Settings(), secrets_from_env=False)
    shared = build_defs(
        Settings(shared_catalog_url="postgresql://db/lake", shared_data_path="/data/lake/"), secrets_from_env=False
    )
    names = {d.name for d in shared.resolve_all_job_defs()} - {d.name for d in local.resolve_all_job_defs()}
    assert names == {"shared_tables_maintenance_job"}
    assert [s.name for s in shared.schedules or []] == [s.name for s in local.schedules or []] + [
        "shared_tables_maintenance"
    ]
    with pytest.raises(Exception, match="both or neither"):
        Settings(shared_catalog_url="postgresql://db/lake")
    shared_env = {"HEYMILO_SHARED_CATALOG_URL": "postgresql://db/lake", "HEYMILO_SHARED_DATA_PATH": "s3://b/lake/"}
    with pytest.raises(ConfigurationError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"):
        Settings.from_env(shared_env)
    keys = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "S"}
    assert Settings.from_env({**shared_env, **keys}).shared_data_path == "s3://b/lake/"


# --- with PostgreSQL and S3 --------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_slice_round_trips_with_its_empty_days_and_files_on_s3(shared: SharedTables, s3: S3Server) -> None:
    raw = fetched_on(DAY, (300, 0, 200))  # beyond DuckLake's inlining: real files on S3
    item = slice_of(raw)
    inserted = shared.replace_slices([item], "run-1")
    assert inserted == {"raw_candidates": 500, "candidates": 500, "candidate_workflow_steps": item.steps.num_rows}
    back = shared.read(CANDIDATES, "P1", DAYS).sort_by("interview_id")
    assert back.equals(item.candidates.cast(CANDIDATES.schema).sort_by("interview_id"))
    steps = shared.read(WORKFLOW_STEPS).sort_by([("interview_id", "ascending"), ("step_id", "ascending")])
    assert steps.equals(item.steps.cast(WORKFLOW_STEPS.schema).sort_by(
        [("interview_id", "ascending"), ("step_id", "ascending")]
    ))  # fmt: skip
    assert sorted(shared.read(RAW_RECORDS)["record"].to_pylist()) == sorted(item.raw["record"].to_pylist())
    assert loads(shared) == [("P1", DAY, 300), ("P1", DAY + timedelta(days=1), 0), ("P1", DAY + timedelta(days=2), 200)]
    prefix = shared.catalog.data_path.removeprefix(f"s3://{s3.bucket}/")
    assert any(k.endswith(".parquet") for k in s3.keys(prefix)), "the rows should be in Parquet files on S3"


@pytest.mark.integration
def test_replacing_days_replaces_them_and_a_moved_candidate_leaves_its_old_day(shared: SharedTables) -> None:
    shared.replace_slices([slice_of(fetched(per_day=(3, 0, 2)))], "run-1")
    before = rows(shared)
    # The last day again, now with one candidate; and candidate 1 (day 1) now created on day 3.
    last = DayRange.single(DAYS.last)
    again = fetched_on(DAYS.last, (1,), first=10)
    moved = fetched_on(DAYS.last, (1,), first=0)  # interview_id of n=1, created on the last day now
    shared.replace_slices([slice_of(again + moved, days=last)], "run-2")
    after = rows(shared)
    assert len(before) == 5 and len(after) == 4  # 3 - 1 moved on day 1, 2 -> 2 on the last day
    assert [r for r in after if r[2] == DAY] == [r for r in before if r[2] == DAY and r[0] != moved[0]["interview_id"]]
    assert {r[0] for r in after if r[2] == DAYS.last} == {again[0]["interview_id"], moved[0]["interview_id"]}
    assert loads(shared)[0] == ("P1", DAY, 2)  # the day it left is recounted
    assert len(rows(shared, "raw_candidates")) == 4
    with pytest.raises(ValueError, match="outside the range"):  # checked before anything is written
        shared.replace_slices([slice_of(fetched(per_day=(1,)), days=last)], "run-3")
    assert rows(shared) == after


def round_of(posting_id: str, first_day: int, n: int) -> SliceRows:
    """Round ``n`` of a writer of ten days of one posting-month: its own candidates, 1-3 a day."""
    days = DayRange(DAY + timedelta(days=first_day), DAY + timedelta(days=first_day + 9))
    per_day = tuple((n + d) % 3 + 1 for d in range(10))
    offset = {"P1": 0, "P2": 500_000}[posting_id] + 10_000 * first_day + 100 * n
    return slice_of(fetched_on(days.first, per_day, first=offset), posting_id, days)


def write_rounds(catalog: Catalog, posting_id: str, first_day: int, rounds: int, queue: Any) -> None:
    """A writer host: ``rounds`` replacements of its ten days, each round a new version."""
    tables = SharedTables(catalog, attempts=20)
    for n in range(rounds):
        tables.replace_slices([round_of(posting_id, first_day, n)], f"{posting_id}-{first_day}-{n}")
    queue.put(tables.conflicts)


@pytest.mark.integration
def test_two_hosts_writing_one_posting_month_at_once_lose_nothing(catalog: Catalog) -> None:
    SharedTables(catalog).ensure_schema()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    rounds, writers = 6, (("P1", 0), ("P1", 10), ("P2", 0))
    hosts = [ctx.Process(target=write_rounds, args=(catalog, p, first, rounds, queue)) for p, first in writers]
    for host in hosts:
        host.start()
    for host in hosts:
        host.join(timeout=240)
        assert host.exitcode == 0, "a writer failed (its error is above)"
    conflicts = [queue.get(timeout=10) for _ in hosts]
    # Exactly every writer's last round: nothing lost, nothing doubled.
    last = [round_of(p, first, rounds - 1).candidates for p, first in writers]
    expected = sorted(row for t in last for row in keys_of(t))
    tables = SharedTables(catalog)
    assert rows(tables) == expected
    assert len(rows(tables, "raw_candidates")) == len(expected)
    assert len(loads(tables)) == 30
    assert sum(conflicts) > 0, "the writers never collided: the test did not test the retry"
    print(f"\nthree writers x {rounds} rounds: {sum(conflicts)} conflicts retried; {len(expected)} rows, the last")


@pytest.mark.integration
def test_two_first_loads_of_the_same_days_at_once_store_them_once(catalog: Catalog) -> None:
    """Two hosts load the same posting-days for the first time at the same moment: neither deletes anything, which
    DuckLake alone would let both commit (every row twice). Both write, then both commit; the later one must lose,
    start over, and replace the first one's rows."""
    SharedTables(catalog).ensure_schema()
    item = round_of("P1", 0, 0)
    arrived = threading.Barrier(2, timeout=120)

    def host(name: str) -> None:
        tables = SharedTables(catalog)
        first = [True]

        def work(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
            done = shared_tables._replace(conn, [shared_tables._checked(item)], name)
            if first[0]:  # both have written before either commits (on the first attempt; a retry goes alone)
                first[0] = False
                arrived.wait()
            return done

        tables.write(name, work)

    threads = [threading.Thread(target=host, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    tables = SharedTables(catalog)
    assert rows(tables) == sorted(keys_of(item.candidates))
    assert len(rows(tables, "raw_candidates")) == item.candidates.num_rows
    assert len(loads(tables)) == 10


@pytest.mark.integration
def test_a_writer_that_keeps_losing_gives_up_with_what_to_do(catalog: Catalog) -> None:
    tables = SharedTables(catalog, attempts=3)
    tables.ensure_schema()
    tables.replace_slices([slice_of(fetched(per_day=(2, 1, 1)))], "run-1")
    before = rows(tables)
    item = shared_tables._checked(slice_of(fetched(per_day=(1, 1, 1), first=50)))
    with catalog.connect() as mine, catalog.connect() as other:
        victim = other.execute("SELECT * FROM candidates ORDER BY interview_id LIMIT 1").to_arrow_table()
        other.register("victim", victim)

        def attempt() -> dict[str, int]:
            # Between this writer's statements and its commit, another host deletes (and puts back) a row of
            # the table it inserts into, every time: DuckLake refuses each commit.
            mine.execute("BEGIN TRANSACTION")
            written = shared_tables._replace(mine, [item], "run-2")
            other.execute("DELETE FROM candidates WHERE interview_id = ?", [victim["interview_id"][0].as_py()])
            other.execute("INSERT INTO candidates SELECT * FROM victim")
            mine.execute("COMMIT")
            return written

        busy = r"posting P1, days .*: another writer .* each of 3 .* Rerun it"
        with pytest.raises(SharedTablesBusyError, match=busy):
            tables.retrying(f"posting P1, days {DAYS}", attempt)
    assert tables.conflicts == 3
    assert rows(tables) == before  # nothing of the losing attempts


def write_forever(catalog: Catalog, ready: Any) -> None:
    """A host rewriting one big slice, round after round, until killed."""
    tables = SharedTables(catalog)
    n = 0
    ready.set()
    while True:
        n += 1
        tables.replace_slices([slice_of(fetched_on(DAY, (400, 400, 400), first=10_000 * n))], f"forever-{n}")


@pytest.mark.integration
def test_a_host_killed_mid_write_leaves_a_whole_snapshot(catalog: Catalog, s3: S3Server) -> None:
    tables = SharedTables(catalog)
    tables.ensure_schema()
    tables.replace_slices([slice_of(fetched_on(DAY, (400, 400, 400)))], "before")
    prefix = catalog.data_path.removeprefix(f"s3://{s3.bucket}/")
    ctx = multiprocessing.get_context("spawn")
    outcomes = []
    for files in (1, 2, 3):
        ready = ctx.Event()
        host = ctx.Process(target=write_forever, args=(catalog, ready))
        host.start()
        assert ready.wait(60)
        # Killed once the write in progress has put 1, 2, 3 new data files on S3 (one per table it reached).
        seen = set(s3.keys(prefix))
        deadline = time.monotonic() + 60
        while len(set(s3.keys(prefix)) - seen) < files and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(host.pid, signal.SIGKILL)
        host.join(timeout=30)
        # Every table holds one and the same round: 1,200 candidates (ids n of that round), 400 a day.
        ids = {t: sorted({i for i, _, _ in rows(tables, t)}) for t in SLICE_TABLE_NAMES}
        rounds = {(int(i, 16) - 1) // 10_000 for i in ids["candidates"]}
        outcomes.append(sorted(rounds))
        assert len(ids["candidates"]) == 1200 and len(rounds) == 1, rounds
        assert ids["raw_candidates"] == ids["candidates"] == ids["candidate_workflow_steps"]
        assert loads(tables) == [("P1", d, 400) for d in DAYS.days]
        with tables.session() as conn:
            runs = conn.execute("SELECT DISTINCT run_id FROM partition_loads").fetchall()
        assert runs == [(f"forever-{rounds.pop()}" if rounds != {0} else "before",)]
    # The kills landed inside transactions: files on S3 that no snapshot of the catalog ever registered.
    assert unregistered(catalog, s3), f"no kill hit a write in progress: {outcomes}"
    tables.replace_slices([slice_of(fetched_on(DAY, (1, 1, 1)))], "after")  # nothing left locked or half-done
    assert len(rows(tables)) == 3


def unregistered(catalog: Catalog, s3: S3Server) -> list[str]:
    """Data files on S3 that the catalog never registered (in any snapshot): what killed transactions wrote."""
    with catalog.connect(read_only=True) as conn:
        meta = "__ducklake_metadata_heymilo_lake"
        known = {
            path.rsplit("/", 1)[-1]
            for (path,) in conn.execute(
                f"SELECT path FROM {meta}.ducklake_data_file UNION ALL SELECT path FROM {meta}.ducklake_delete_file"
            ).fetchall()
        }
    prefix = catalog.data_path.removeprefix(f"s3://{s3.bucket}/")
    return [k for k in s3.keys(prefix) if k.rsplit("/", 1)[-1] not in known]


@pytest.mark.integration
def test_published_file_equals_the_shared_tables_and_analysts_attach_read_only(
    shared: SharedTables, tmp_path: Path
) -> None:
    shared.replace_slices([slice_of(fetched(per_day=(3, 0, 2)))], "run-1")
    shared.replace_slices([slice_of(fetched(per_day=(1, 1, 1), first=20), "P2")], "run-1")
    db = tmp_path / "heymilo.duckdb"
    counts = shared.publish(db)
    assert counts["candidates"] == 8 and counts["partition_loads"] == 6
    warehouse = Warehouse(db)
    with warehouse.connect(read_only=True) as conn:
        published = conn.execute(
            "SELECT interview_id, posting_id, created_date FROM candidates ORDER BY ALL"
        ).fetchall()
        keys = conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'")
        assert keys.fetchone()[0] >= 2  # the warehouse's schema, keys included
    assert published == rows(shared)
    # Published again after a change: the file follows (a replacement, not an append).
    shared.replace_slices([slice_of(fetched(per_day=(1, 0, 0), first=20), "P2")], "run-2")
    assert shared.publish(db)["candidates"] == 6
    # An analyst reads the shared tables directly, and cannot write through that attach.
    with shared.catalog.connect(read_only=True) as analyst:
        assert analyst.execute("SELECT count(*) FROM candidates").fetchone()[0] == 6
        with pytest.raises(duckdb.Error):
            analyst.execute("DELETE FROM candidates")


@pytest.mark.integration
def test_upkeep_leaves_no_file_holding_a_deleted_posting(shared: SharedTables, s3: S3Server) -> None:
    for n in range(3):  # three versions of P1, and one of P2
        shared.replace_slices([slice_of(fetched_on(DAY, (300, 300, 300), first=10_000 * n))], f"run-{n}")
    shared.replace_slices([slice_of(fetched_on(DAY, (200,), first=90_000), "P2", DayRange.single(DAY))], "run-p2")
    prefix = shared.catalog.data_path.removeprefix(f"s3://{s3.bucket}/")
    before = s3.keys(prefix)
    shared.delete_posting("P1")
    assert rows(shared) and {p for _, p, _ in rows(shared)} == {"P2"}

    def posting_ids_in_files() -> set[str]:
        # What any reader of the bucket (not only through the catalog) can still find there.
        with shared.session() as conn:
            found = conn.execute(
                "SELECT DISTINCT posting_id FROM read_parquet(?, union_by_name = true) WHERE posting_id IS NOT NULL",
                [f"{shared.catalog.data_path}**/*.parquet"],
            ).fetchall()
        return {p for (p,) in found}

    assert "P1" in posting_ids_in_files()  # deleted from the tables, still in older snapshots' files
    done = shared.maintain(keep=timedelta(0))
    assert done["snapshots_expired"] > 0 and done["old_files_deleted"] > 0, done
    assert posting_ids_in_files() == {"P2"}
    assert len(s3.keys(prefix)) < len(before)
    assert {p for _, p, _ in rows(shared)} == {"P2"} and len(rows(shared, "raw_candidates")) == 200


def snapshots(tables: SharedTables) -> int:
    with tables.session() as conn:
        return conn.execute(f"SELECT count(*) FROM {LAKE}.snapshots()").fetchone()[0]


@pytest.mark.integration
def test_an_unchanged_schema_writes_no_snapshot(shared: SharedTables) -> None:
    before = snapshots(shared)
    shared.ensure_schema()
    SharedStore(shared).replace_postings(POSTINGS.empty())  # what each listing does first
    assert snapshots(shared) == before


@pytest.mark.integration
def test_the_lake_audits_fail_on_planted_bad_rows(shared: SharedTables) -> None:
    shared.replace_slices([slice_of(fetched(per_day=(3, 0, 2)))], "run-1")
    store = SharedStore(shared)
    assert store.lake_differences() == []
    assert {w: f["count"] for w, f in store.duplicate_interview_ids().items()} == {
        "duckdb": 0, "lake": 0
    }  # fmt: skip
    with shared.session() as conn:  # a hand edit: one raw record twice, one candidate without its raw record
        conn.execute("INSERT INTO raw_candidates SELECT * FROM raw_candidates LIMIT 1")
        conn.execute("DELETE FROM raw_candidates WHERE interview_id = (SELECT max(interview_id) FROM raw_candidates)")
    doubled = store.duplicate_interview_ids()
    assert doubled["lake"]["count"] == 1 and doubled["duckdb"]["count"] == 0
    differences = store.lake_differences()
    assert differences == [
        {"table": "candidates", "posting_id": "P1", "rows_only_in_duckdb": 1, "rows_only_in_lake": 1}
    ]


@pytest.mark.integration
def test_a_rebuild_recounts_partition_loads_from_the_rows(shared: SharedTables) -> None:
    shared.replace_slices([slice_of(fetched(per_day=(3, 0, 2)))], "run-1")
    store = SharedStore(shared)
    with shared.session() as conn:  # a hand edit: a day's count no longer its rows'
        conn.execute("UPDATE partition_loads SET rows = 99 WHERE rows = 3")
    rebuilt = {"candidates": 5, "candidate_workflow_steps": 15, "partition_loads": 3}
    assert store.rebuild("rebuild-1") == {**rebuilt, **{t.name: 0 for t in RESULT_TABLES}}
    with shared.session() as conn:
        assert conn.execute("SELECT list(rows ORDER BY partition_date) FROM partition_loads").fetchone()[0] == [3, 0, 2]


@pytest.mark.integration
def test_publishing_refuses_doubled_keys_and_an_unreachable_catalog_touches_no_file(
    shared: SharedTables, postgres_url: str, s3: S3Server, tmp_path: Path
) -> None:
    shared.replace_slices([slice_of(fetched(per_day=(3, 0, 2)))], "run-1")
    db = tmp_path / "heymilo.duckdb"
    shared.publish(db)
    with shared.session() as conn:
        conn.execute("INSERT INTO candidates SELECT * FROM candidates LIMIT 1")
    with pytest.raises(SharedTablesError, match=r"hold a key twice.*keeps its previous copy.*unique_interview_id"):
        shared.publish(db)
    with Warehouse(db).connect(read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM candidates").fetchone()[0] == 5
    port = int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    nowhere = Catalog(f"postgresql://heymilo@127.0.0.1:{port + 1}/x", f"s3://{s3.bucket}/x/", shared.catalog.s3)
    with pytest.raises(SharedTablesError, match="cannot attach"):
        SharedTables(nowhere).publish(tmp_path / "other.duckdb")
    assert not (tmp_path / "other.duckdb").exists()


@pytest.mark.integration
def test_errors_after_the_attach_never_show_the_password(postgres_url: str, s3: S3Server) -> None:
    name = f"lake_{uuid.uuid4().hex[:10]}"
    database = new_database(postgres_url, name)
    # The test server trusts every local user, so any password gets in: the URL carries one, as production's do.
    url = database.replace("postgresql://heymilo@", "postgresql://heymilo:hunter2@", 1)
    tables = SharedTables(Catalog(url, f"s3://{s3.bucket}/{name}/", S3.from_environ(s3.environ())), attempts=1)
    tables.ensure_schema()
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:  # the database goes away under the attached catalog
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        with pytest.raises(duckdb.Error) as caught:
            tables.read(CANDIDATES)
        message = str(caught.value)
        assert ("hunter2" not in message and "***" not in message) or "hunter2" not in message
        assert "hunter2" not in message, message
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()


def publish_into(catalog: Catalog, path: str, queue: Any) -> None:
    queue.put(SharedTables(catalog).publish(path)["candidates"])


@pytest.mark.integration
def test_loaders_publishing_one_file_at_once_take_turns(shared: SharedTables, tmp_path: Path) -> None:
    shared.replace_slices([slice_of(fetched_on(DAY, (300, 300, 300)))], "run-1")
    db = tmp_path / "heymilo.duckdb"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    loaders = [ctx.Process(target=publish_into, args=(shared.catalog, str(db), queue)) for _ in range(3)]
    for loader in loaders:
        loader.start()
    for loader in loaders:
        loader.join(timeout=120)
        assert loader.exitcode == 0  # each waited for the file rather than fail on DuckDB's lock
    assert [queue.get(timeout=10) for _ in loaders] == [900, 900, 900]
    with Warehouse(db).connect(read_only=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT interview_id) FROM candidates").fetchone() == (900, 900)


@pytest.mark.integration
def test_an_unreachable_catalog_is_named_without_its_password(postgres_url: str, s3: S3Server) -> None:
    port = int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    url = f"postgresql://heymilo:hunter2@127.0.0.1:{port + 1}/nowhere"  # nothing listens there
    catalog = Catalog(url, f"s3://{s3.bucket}/nowhere/", S3.from_environ(s3.environ()))
    with pytest.raises(SharedTablesError) as caught:
        SharedTables(catalog).ensure_schema()
    message = str(caught.value)
    assert "hunter2" not in message and f"postgresql://heymilo@127.0.0.1:{port + 1}/nowhere" in message
    assert "reachable" in message


@pytest.mark.integration
def test_results_are_stored_published_and_leave_with_their_candidates(shared: SharedTables, tmp_path: Path) -> None:
    """Interview results in the shared tables: written in one transaction with their raw records, copied by
    publish, and gone once a later load no longer holds their candidate (erased in HeyMilo)."""
    store = SharedStore(shared)
    item = round_of("P1", 0, 0)
    store.write_slices([item], "run-1")
    ids = item.candidates["interview_id"].to_pylist()
    days = dict(zip(ids, item.candidates["created_date"].to_pylist(), strict=True))

    def result(i: str) -> StoredResult:
        question = {"question_id": "q1", "question_text": "Why?", "score": 7, "score_weight": 3, "rank": 1}
        record = {"interview_id": i, "status": "completed", "score": 80.0, "web_interview": {"scorecard": [question]}}
        return StoredResult.of(record, "P1", days[i], 1_767_312_000.0, "state")

    written = store.write_results(flatten_results(result(i) for i in ids), [], "results-1")
    assert written["interview_results"] == written["interview_scorecard"] == len(ids)
    with store.connect(read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw_interview_results").fetchone()[0] == len(ids)
    published = store.publish(tmp_path / "published.duckdb", lock_timeout_s=5)
    assert published["interview_results"] == published["interview_scorecard"] == len(ids)
    # Written again, a result replaces itself; one of the interviews gone (a 404) loses its results.
    store.write_results(flatten_results(result(i) for i in ids[1:]), [ids[0]], "results-2")
    assert sorted(rows(shared, "interview_results")) == sorted(r for r in keys_of(item.candidates) if r[0] != ids[0])
    # The next load of those days no longer holds the second candidate: its results leave with its row.
    records = [json.loads(t) for i, t in zip(ids, item.raw["record"].to_pylist(), strict=True) if i != ids[1]]
    later = slice_of(records, "P1", item.days)
    store.write_slices([later], "run-2")
    left = {r[0] for r in rows(shared, "interview_results")}
    assert left == set(ids[2:]) and {r[0] for r in rows(shared, "raw_interview_results")} == left
    assert store.results_problems() == {k: [] for k in store.results_problems()}
    assert store.delete_posting("P1")["interview_results"] == len(left)
