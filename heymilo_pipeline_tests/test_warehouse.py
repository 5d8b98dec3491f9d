"""The DuckDB warehouse: schema and comments, slice replacement, rollback, types, lock waiting."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from heymilo_pipeline.api.models import CandidateResponse, PostingResponse
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.flatten import flatten, postings_table
from heymilo_pipeline.interview_results import StoredResult
from heymilo_pipeline.interview_results import flatten as flatten_results
from heymilo_pipeline.lake import Lake, MonthFiles
from heymilo_pipeline.storage.local import LocalStore
from heymilo_pipeline.tables import (
    CANDIDATES,
    PARTITION_LOADS,
    RESULT_TABLES,
    SCORECARD,
    WAREHOUSE_TABLES,
    WORKFLOW_STEPS,
)
from heymilo_pipeline.warehouse import (
    SliceFiles,
    Warehouse,
    WarehouseLockedError,
    query,
    query_arrow,
)
from heymilo_pipeline_tests.factories import BIG, DAY, DAYS, fetched, fetched_on

# The results tables, empty: these tests store candidates only.
NO_RESULTS = {t.name: 0 for t in RESULT_TABLES}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    warehouse = Warehouse(tmp_path / "heymilo.duckdb")
    warehouse.ensure_schema()
    return warehouse


def publish(
    lake: Lake, warehouse: Warehouse, posting_id: str, per_day: tuple[int, ...], first: int = 0, run_id: str = "run-1"
) -> dict[str, int]:
    """Fetch-like records -> lake -> warehouse, for DAY .. DAY + len(per_day) - 1."""
    days = DayRange(DAY, DAY + timedelta(days=len(per_day) - 1))
    raw = fetched(posting_id, per_day, first)
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    files = lake.write_partitions(posting_id, days, raw, candidates, steps)
    return load(warehouse, posting_id, days, files, run_id)


def load(warehouse: Warehouse, posting_id: str, days: DayRange, files: dict[date, MonthFiles], run_id: str) -> dict:
    candidate_files = [f.candidates for f in files.values()]
    steps = [f.steps for f in files.values()]
    return warehouse.replace_slices([SliceFiles(posting_id, days, candidate_files, steps)], run_id)


def store_of(warehouse: Warehouse) -> LocalStore:
    """The store around the fixtures' lake and file (both under tmp_path): its reads and audits."""
    return LocalStore(warehouse.path.parent)


def fetch(warehouse: Warehouse, sql: str, params: list | None = None) -> list[tuple]:
    with warehouse.connect(read_only=True) as conn:
        return conn.execute(sql, params).fetchall()


def checksums(warehouse: Warehouse) -> dict[str, str]:
    return {
        t.name: store_of(warehouse).checksum(t.name, exclude=["loaded_at"] if t is PARTITION_LOADS else ())
        for t in WAREHOUSE_TABLES
    }


def test_a_changed_comment_is_rewritten_and_an_unchanged_schema_writes_nothing(warehouse: Warehouse) -> None:
    """Every run ensures the schema: only a comment that differs is written (each is a catalog write)."""
    warehouse.ensure_schema()
    with warehouse.connect() as conn:
        conn.execute('COMMENT ON COLUMN "candidates"."score" IS \'stale\'')
        conn.execute("CHECKPOINT")
    size = warehouse.path.stat().st_size, warehouse.path.stat().st_mtime_ns
    warehouse.ensure_schema()
    with warehouse.connect(read_only=True) as conn:
        (comment,) = conn.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'candidates' AND column_name = 'score'"
        ).fetchone()
    assert comment == next(c.description for c in CANDIDATES.columns if c.name == "score")
    assert (warehouse.path.stat().st_size, warehouse.path.stat().st_mtime_ns) != size  # the stale one was written
    size = warehouse.path.stat().st_size, warehouse.path.stat().st_mtime_ns
    warehouse.ensure_schema()
    assert (warehouse.path.stat().st_size, warehouse.path.stat().st_mtime_ns) == size


def test_schema_with_comments_is_idempotent(warehouse: Warehouse) -> None:
    warehouse.ensure_schema()
    with warehouse.connect(read_only=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() ORDER BY table_name, column_index"
        ).fetchall()
        tables = dict(conn.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
    for spec in WAREHOUSE_TABLES:
        assert tables[spec.name] == spec.description
        declared = [(c.name, c.description) for c in spec.columns]
        assert [(name, comment) for table, name, _, comment in columns if table == spec.name] == declared
    types = {(table, name): data_type for table, name, data_type, _ in columns}
    assert types["candidates", "created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["candidates", "data"] == types["candidate_workflow_steps", "extra"] == "JSON"
    assert types["candidates", "created_date"] == "DATE"
    assert types["candidates", "sms_criteria_passed"] == "VARCHAR[]"
    assert types["partition_loads", "rows"] == "BIGINT"
    assert store_of(warehouse).table_counts() == {
        "candidates": 0,
        "candidate_workflow_steps": 0,
        "postings": 0,
        "partition_loads": 0,
        **NO_RESULTS,
    }


def test_schema_gains_columns_added_to_the_declarations(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute('CREATE TABLE candidates ("interview_id" VARCHAR NOT NULL, "posting_id" VARCHAR NOT NULL)')
    Warehouse(path).ensure_schema()
    assert query(path, "SELECT * FROM candidates").columns.tolist()[:2] == ["interview_id", "posting_id"]
    assert set(query(path, "SELECT * FROM candidates").columns) == set(CANDIDATES.names)


def test_slice_load_matches_the_lake_and_is_idempotent(lake: Lake, warehouse: Warehouse) -> None:
    assert publish(lake, warehouse, "P1", (3, 0, 2)) == {"candidates": 5, "candidate_workflow_steps": 15}
    first = checksums(warehouse)
    assert publish(lake, warehouse, "P1", (3, 0, 2)) == {"candidates": 5, "candidate_workflow_steps": 15}
    assert checksums(warehouse) == first
    assert store_of(warehouse).table_counts() == {
        "candidates": 5,
        "candidate_workflow_steps": 15,
        "postings": 0,
        "partition_loads": 3,
        **NO_RESULTS,
    }
    loads = fetch(warehouse, 'SELECT partition_date, "rows", run_id FROM partition_loads ORDER BY 1')
    assert loads == [(d, n, "run-1") for d, n in zip(DAYS.days, (3, 0, 2), strict=True)]
    # Lake and warehouse hold the same rows.
    for spec in (CANDIDATES, WORKFLOW_STEPS):
        stored = query_arrow(warehouse.path, f"SELECT * FROM {spec.name} ORDER BY ALL")
        assert (
            stored.to_pylist() == lake.read(spec.name).sort_by([(n, "ascending") for n in spec.names[:4]]).to_pylist()
        )


def test_json_and_timestamps_read_back_exactly_in_utc(lake: Lake, warehouse: Warehouse) -> None:
    publish(lake, warehouse, "P1", (1,))
    frame = query(
        warehouse.path,
        "SELECT created_at, data->>'$.ats.application_id' AS big, json_extract(data, '$.tags[2]') AS flag, "
        "metadata->>'source' AS source, sms_criteria_passed FROM candidates",
    )
    r = frame.iloc[0]
    assert r["big"] == str(BIG) and json.loads(r["flag"]) is True and r["source"] == "linkedin"
    assert r["created_at"].to_pydatetime() == datetime(2026, 3, 13, 0, 0, 0, 500000, tzinfo=UTC)
    assert str(r["created_at"].tz) in ("UTC", "Etc/UTC") and list(r["sms_criteria_passed"]) == ["age"]
    raw = query_arrow(warehouse.path, "SELECT data FROM candidates").column(0).to_pylist()[0]
    assert json.loads(raw)["ats"]["application_id"] == BIG


def test_replacing_a_slice_leaves_other_postings_and_days_alone(lake: Lake, warehouse: Warehouse) -> None:
    publish(lake, warehouse, "P1", (3, 1, 2))
    publish(lake, warehouse, "P2", (2, 2, 2), first=100)
    p2_before = query(warehouse.path, "SELECT * FROM candidates WHERE posting_id = 'P2' ORDER BY ALL")
    p1_others = "SELECT interview_id FROM candidates WHERE posting_id = 'P1' AND created_date <> ? ORDER BY 1"
    others_before = query(warehouse.path, p1_others, [DAY + timedelta(days=1)])

    # P1's middle day is fetched again: now two (new) candidates there.
    middle = DayRange.single(DAY + timedelta(days=1))
    raw = [r for r in fetched("P1", (0, 2), first=500)]
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    files = lake.write_partitions("P1", middle, raw, candidates, steps)
    assert load(warehouse, "P1", middle, files, "run-2") == {"candidates": 2, "candidate_workflow_steps": 6}

    assert query(warehouse.path, "SELECT * FROM candidates WHERE posting_id = 'P2' ORDER BY ALL").equals(p2_before)
    assert query(warehouse.path, p1_others, [DAY + timedelta(days=1)]).equals(others_before)
    middle_ids = query(
        warehouse.path,
        "SELECT interview_id FROM candidate_workflow_steps WHERE created_date = ? AND posting_id = 'P1'",
        [middle.first],
    )["interview_id"]
    assert set(middle_ids) == {f"{501:016X}", f"{502:016X}"}
    loads = fetch(warehouse, "SELECT posting_id, partition_date, rows, run_id FROM partition_loads ORDER BY 1, 2")
    assert loads[:3] == [("P1", DAY, 3, "run-1"), ("P1", middle.first, 2, "run-2"), ("P1", DAYS.last, 2, "run-1")]


def test_a_failing_load_rolls_back_completely(lake: Lake, warehouse: Warehouse, tmp_path: Path) -> None:
    publish(lake, warehouse, "P1", (3, 1, 2))
    publish(lake, warehouse, "P2", (1,), first=100)
    before = checksums(warehouse)
    files = lake.paths("candidates", "P1")
    with pytest.raises(duckdb.IOException):
        warehouse.replace_slices([SliceFiles("P1", DAYS, [*files, tmp_path / "missing.parquet"], [])], "run-bad")
    assert checksums(warehouse) == before
    # Files of another posting would put rows outside the slice: refused, and nothing changes either.
    with pytest.raises(ValueError, match="belong to another posting than P1"):
        warehouse.replace_slices([SliceFiles("P1", DAYS, lake.paths("candidates"), [])], "run-bad")
    assert checksums(warehouse) == before
    assert query(warehouse.path, "SELECT count(*) AS n FROM partition_loads WHERE run_id = 'run-bad'")["n"][0] == 0


def test_postings_are_replaced_by_each_listing(warehouse: Warehouse) -> None:
    posting = {
        "id": "13D77095",
        "company_id": "c",
        "title": "Engineer",
        "description": "d",
        "status": "active",
        "finalized": True,
        "archived": False,
        "test_posting": False,
        "extra_flag": 1,
    }
    models = [PostingResponse.model_validate(posting | {"id": f"P{i}"}) for i in range(3)]
    first = warehouse.replace_postings(postings_table(models, datetime(2026, 3, 1, tzinfo=UTC)))
    assert (first.listed, first.newly_vanished, first.vanished) == (3, [], [])
    second = warehouse.replace_postings(postings_table(models[:2], datetime(2026, 3, 2, tzinfo=UTC)))
    assert (second.listed, second.newly_vanished, second.vanished) == (2, ["P2"], ["P2"])
    third = warehouse.replace_postings(postings_table(models[:2], datetime(2026, 3, 3, tzinfo=UTC)))
    assert (third.newly_vanished, third.vanished) == ([], ["P2"])  # marked once, when first found missing
    frame = query(
        warehouse.path,
        "SELECT posting_id, listed_at, vanished_at, extra->>'extra_flag' AS flag FROM postings ORDER BY 1",
    )
    assert frame["posting_id"].tolist() == ["P0", "P1", "P2"] and frame["flag"].tolist() == ["1", "1", "1"]
    assert frame["listed_at"][0].to_pydatetime() == datetime(2026, 3, 3, tzinfo=UTC)
    # the vanished posting keeps its last listed state, marked
    assert frame["listed_at"][2].to_pydatetime() == datetime(2026, 3, 1, tzinfo=UTC)
    assert frame["vanished_at"].isna().tolist() == [True, True, False]
    back = warehouse.replace_postings(postings_table(models, datetime(2026, 3, 4, tzinfo=UTC)))
    assert back.vanished == [] and query(warehouse.path, "SELECT count(vanished_at) AS n FROM postings")["n"][0] == 0


def moved(posting_id: str, n: int, day: date) -> list[dict]:
    """Candidate ``n`` (as made by ``fetched``) again, now created on ``day``."""
    return fetched_on(day, (1,), first=n - 1) if posting_id == "P1" else []


@pytest.mark.parametrize("new_day", [DAY + timedelta(days=5), date(2026, 4, 2)], ids=["same month", "other month"])
def test_a_candidate_that_moves_to_another_day_is_stored_once(lake: Lake, warehouse: Warehouse, new_day: date) -> None:
    publish(lake, warehouse, "P1", (3, 0, 2))  # candidates 1..5; 1, 2 and 3 on DAY
    raw = moved("P1", 2, new_day)
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    files = lake.write_partitions("P1", DayRange.single(new_day), raw, candidates, steps)
    load(warehouse, "P1", DayRange.single(new_day), files, "run-2")
    moved_id = f"{2:016X}"
    rows = fetch(warehouse, "SELECT created_date FROM candidates WHERE interview_id = ?", [moved_id])
    assert rows == [(new_day,)]
    steps_days = fetch(
        warehouse, "SELECT DISTINCT created_date FROM candidate_workflow_steps WHERE interview_id = ?", [moved_id]
    )
    assert steps_days == [(new_day,)]
    for table in ("candidates", "candidate_workflow_steps", "raw/candidates"):
        stored = lake.read(table)
        assert {
            d
            for i, d in zip(stored["interview_id"].to_pylist(), stored["created_date"].to_pylist(), strict=True)
            if i == moved_id
        } == {new_day}, table
    assert lake.read("candidates").num_rows == 5 and store_of(warehouse).table_counts()["candidates"] == 5
    assert lake.covered_days("candidates", "P1") == {*DAYS.days, new_day}  # DAY itself stays loaded
    assert store_of(warehouse).duplicate_interview_ids() == {
        "duckdb": {"count": 0, "examples": []},
        "lake": {"count": 0, "examples": []},
    }


def test_results_leave_with_a_candidate_that_moves_and_a_fetch_replaces_them_once(
    lake: Lake, warehouse: Warehouse
) -> None:
    """A write of results searches only the incoming days for what it replaces: this holds because a candidates
    load that moves a candidate takes its results from the old day."""
    publish(lake, warehouse, "P1", (3, 0, 2))  # candidates 1..5; 1, 2 and 3 on DAY
    moved_id, new_day = f"{2:016X}", DAY + timedelta(days=5)

    def results(found: list[tuple[str, date]], score: int) -> dict[str, pa.Table]:
        question = {"question_id": "q1", "question_text": "Why?", "score": score, "score_weight": 3, "rank": 1}
        return flatten_results(
            StoredResult.of({"interview_id": i, "status": "completed", "web_interview": {"scorecard": [question]}},
                            "P1", day, 0.0, "state")
            for i, day in found
        )  # fmt: skip

    def stored(table: str) -> list[tuple]:
        return fetch(warehouse, f'SELECT interview_id, created_date FROM "{table}" ORDER BY ALL')

    days = fetch(warehouse, "SELECT interview_id, created_date FROM candidates ORDER BY 1")
    warehouse.replace_results(results(days, 5))
    warehouse.replace_results(results([(moved_id, DAY)], 6))  # fetched again: replaced, not doubled
    assert stored("interview_results") == stored("interview_scorecard") == days
    assert fetch(warehouse, "SELECT score FROM interview_scorecard WHERE interview_id = ?", [moved_id]) == [(6,)]
    raw = moved("P1", 2, new_day)
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    load(warehouse, "P1", DayRange.single(new_day), lake.write_partitions("P1", DayRange.single(new_day), raw,
         candidates, steps), "run-2")  # fmt: skip
    others = [(i, day) for i, day in days if i != moved_id]
    assert stored("interview_results") == stored("interview_scorecard") == others  # left with the old day
    warehouse.replace_results(results([(moved_id, new_day)], 7))
    assert stored("interview_results") == stored("interview_scorecard") == sorted([*others, (moved_id, new_day)])
    assert store_of(warehouse).results_problems() == {k: [] for k in store_of(warehouse).results_problems()}


def test_interview_id_is_the_key_of_the_whole_table(lake: Lake, warehouse: Warehouse) -> None:
    publish(lake, warehouse, "P1", (2,))
    with pytest.raises(duckdb.ConstraintException), warehouse.connect() as conn:
        conn.execute("INSERT INTO candidates SELECT * REPLACE (DATE '2026-01-01' AS created_date) FROM candidates")


def test_a_file_written_before_the_key_gets_it_keeping_the_later_copy(lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = Warehouse(path)
    old.ensure_schema()
    publish(lake, old, "P1", (2,))
    with duckdb.connect(str(path)) as conn:  # the table as an earlier release declared it (no key), a row twice
        conn.execute("CREATE TABLE c2 AS FROM candidates; DROP TABLE candidates")
        conn.execute(dataclasses.replace(CANDIDATES, primary_key=()).create_sql())
        conn.execute("INSERT INTO candidates FROM c2; DROP TABLE c2")
        conn.execute("INSERT INTO candidates SELECT * REPLACE (DATE '2026-01-01' AS created_date) FROM candidates")
    assert len(fetch(old, "SELECT * FROM candidates")) == 4
    old.ensure_schema()
    assert fetch(old, "SELECT interview_id, created_date FROM candidates ORDER BY 1") == [
        (f"{1:016X}", DAY),
        (f"{2:016X}", DAY),
    ]
    with pytest.raises(duckdb.ConstraintException), old.connect() as conn:
        conn.execute("INSERT INTO candidates SELECT * REPLACE (DATE '2026-01-01' AS created_date) FROM candidates")


def test_results_tables_of_a_file_that_indexed_their_keys_lose_the_index_and_keep_rows_and_comments(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.duckdb"
    old = Warehouse(path)
    old.ensure_schema()
    names = ("interview_id", "posting_id", "created_date", "question_id", "not_scored")
    row = "'I1', 'P1', DATE '2026-03-13', 'q1', false"
    with duckdb.connect(str(path)) as conn:  # interview_scorecard as the previous release declared it: indexed
        conn.execute("DROP TABLE interview_scorecard")
        conn.execute(dataclasses.replace(SCORECARD, indexed=True).create_sql())
        conn.execute(f"INSERT INTO interview_scorecard ({', '.join(names)}) VALUES ({row})")
        with pytest.raises(duckdb.ConstraintException):
            conn.execute(f"INSERT INTO interview_scorecard ({', '.join(names)}) VALUES ({row})")
    old.ensure_schema()
    assert fetch(old, "SELECT interview_id, question_id FROM interview_scorecard") == [("I1", "q1")]
    indexed = "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' AND table_name = ?"
    described = "SELECT comment FROM duckdb_tables() WHERE table_name = ?"
    with old.connect() as conn:
        for table in RESULT_TABLES:  # none indexed, each described
            assert conn.execute(indexed, [table.name]).fetchone() == (0,), table.name
            assert conn.execute(described, [table.name]).fetchone() == (table.description,), table.name
        assert conn.execute(indexed, ["candidates"]).fetchone() == (1,)  # the candidates' key stays indexed


def test_rebuild_from_the_lake_equals_the_original(lake: Lake, warehouse: Warehouse) -> None:
    publish(lake, warehouse, "P1", (3, 0, 2))
    publish(lake, warehouse, "P2", (1, 4), first=100)
    raw = moved("P1", 1, date(2026, 4, 2))
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    load(
        warehouse,
        "P1",
        DayRange.single(date(2026, 4, 2)),
        lake.write_partitions("P1", DayRange.single(date(2026, 4, 2)), raw, candidates, steps),
        "run-2",
    )
    exclude = {"partition_loads": ["loaded_at", "run_id"]}
    before = {t.name: store_of(warehouse).checksum(t.name, exclude.get(t.name, ())) for t in WAREHOUSE_TABLES}
    warehouse.path.unlink()  # the DuckDB file is lost
    rebuilt = Warehouse(warehouse.path).rebuild(lake, "rebuild-1")
    assert rebuilt == {"candidates": 10, "candidate_workflow_steps": 30, "partition_loads": 6, **NO_RESULTS}
    after = {t.name: store_of(warehouse).checksum(t.name, exclude.get(t.name, ())) for t in WAREHOUSE_TABLES}
    assert after == {**before, "postings": "0:0"}  # postings are not in the lake; the next listing fills them


def test_audits_find_planted_duplicates_orphans_and_differences(lake: Lake, warehouse: Warehouse) -> None:
    publish(lake, warehouse, "P1", (3, 0, 2))
    publish(lake, warehouse, "P2", (2,), first=100)
    assert store_of(warehouse).duplicate_interview_ids()["lake"]["count"] == 0
    assert store_of(warehouse).orphan_steps()["rows"] == 0 and store_of(warehouse).lake_differences() == []
    # a copy of a P1 candidate planted in another month of the lake
    planted = lake.read("candidates", "P1").slice(0, 1)
    planted = planted.set_column(
        planted.schema.get_field_index("created_date"), "created_date", pa.array([date(2026, 5, 1)])
    )
    target = lake.path("candidates", "P1", date(2026, 5, 1))
    target.parent.mkdir(parents=True)
    pq.write_table(planted, target)
    found = store_of(warehouse).duplicate_interview_ids()["lake"]
    assert found["count"] == 1 and found["examples"][0]["interview_id"] == f"{1:016X}"
    assert found["examples"][0]["days"] == [str(DAY), "2026-05-01"]
    assert store_of(warehouse).lake_differences() == [
        {"table": "candidates", "posting_id": "P1", "rows_only_in_duckdb": 0, "rows_only_in_lake": 1}
    ]
    target.unlink()
    # a step without its candidate, and a candidate DuckDB lost
    with warehouse.connect() as conn:
        conn.execute("DELETE FROM candidates WHERE interview_id = ?", [f"{101:016X}"])
    orphans = store_of(warehouse).orphan_steps()
    assert orphans["candidates"] == 1 and orphans["rows"] == 3 and orphans["by_posting"] == {"P2": 1}
    assert store_of(warehouse).lake_differences() == [
        {"table": "candidates", "posting_id": "P2", "rows_only_in_duckdb": 0, "rows_only_in_lake": 1}
    ]


def test_a_posting_can_be_deleted_from_lake_and_warehouse(lake: Lake, warehouse: Warehouse) -> None:
    publish(lake, warehouse, "P1", (3, 0, 2))
    publish(lake, warehouse, "P2", (2,), first=100)
    deleted = {"candidate_workflow_steps": 15, "candidates": 5, "partition_loads": 3, **NO_RESULTS}
    assert warehouse.delete_posting("P1") == deleted
    assert lake.postings() == {"P1", "P2"}
    assert lake.delete_posting("P1") == 3  # one month: three files
    assert lake.postings() == {"P2"}
    assert lake.paths("candidates", "P1") == [] and lake.read("candidates").num_rows == 2
    assert store_of(warehouse).table_counts()["candidates"] == 2 and store_of(warehouse).lake_differences() == []


HOLDER = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def hold(warehouse: Warehouse) -> Iterator[object]:
    """``hold(seconds)``: another process opens the file read-write and keeps it that long."""
    processes: list[subprocess.Popen[str]] = []

    def start(seconds: float) -> float:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(warehouse.path), str(seconds)], stdout=subprocess.PIPE, text=True
        )
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "holding"
        return time.monotonic()

    yield start
    for process in processes:
        process.kill()
        process.communicate()


@pytest.mark.integration
def test_connect_waits_for_another_process_then_succeeds(warehouse: Warehouse, hold) -> None:
    messages: list[str] = []
    patient = Warehouse(warehouse.path, lock_timeout_s=20, on_wait=messages.append)
    held_since = hold(1.0)
    with patient.connect() as conn:
        waited = time.monotonic() - held_since
        assert conn.execute("SELECT count(*) FROM candidates").fetchall() == [(0,)]
    assert waited > 0.5
    assert len(messages) == 1 and str(warehouse.path) in messages[0] and "another process" in messages[0]
    assert "PID" in messages[0]


@pytest.mark.integration
def test_connect_gives_up_after_the_timeout_naming_the_file(warehouse: Warehouse, hold) -> None:
    messages: list[str] = []
    impatient = Warehouse(warehouse.path, lock_timeout_s=0.3, on_wait=messages.append)
    hold(3.0)
    started = time.monotonic()
    with pytest.raises(WarehouseLockedError) as error, impatient.connect(read_only=True):
        pass
    assert 0.3 <= time.monotonic() - started < 2.0
    assert str(warehouse.path) in str(error.value) and "heymilo_pipeline.warehouse.query" in str(error.value)
    assert len(messages) == 1


def test_other_io_errors_are_not_taken_for_a_lock(tmp_path: Path) -> None:
    messages: list[str] = []
    missing = Warehouse(tmp_path / "absent.duckdb", lock_timeout_s=5, on_wait=messages.append)
    started = time.monotonic()
    with pytest.raises(duckdb.Error), missing.connect(read_only=True):
        pass
    assert time.monotonic() - started < 1.0 and messages == []


def test_oldest_unfinished_day(lake: Lake, warehouse: Warehouse) -> None:
    publish(lake, warehouse, "P1", (3, 0, 2))  # every candidate of `fetched` is in_progress
    assert store_of(warehouse).oldest_unfinished_day(DAY) == DAY
    assert store_of(warehouse).oldest_unfinished_day(DAY + timedelta(days=1)) == DAY + timedelta(days=2)
    with warehouse.connect() as conn:
        conn.execute("UPDATE candidates SET status = 'dismissed' WHERE created_date = ?", [DAY])
    assert store_of(warehouse).oldest_unfinished_day(DAY) == DAY + timedelta(days=2)
    assert LocalStore(warehouse.path.parent / "absent").oldest_unfinished_day(DAY) is None


def test_the_local_store_publishes_a_copy_and_its_own_file_as_is(
    lake: Lake, warehouse: Warehouse, tmp_path: Path
) -> None:
    publish(lake, warehouse, "P1", (3, 0, 2))
    store = store_of(warehouse)
    assert store.publish(warehouse.path, lock_timeout_s=1) == store.table_counts()  # already where notebooks read
    copy = tmp_path / "elsewhere" / "copy.duckdb"
    counts = store.publish(copy, lock_timeout_s=1)
    assert counts["candidates"] == 5 and counts["partition_loads"] == 3
    assert Warehouse(copy).checksum("candidates") == warehouse.checksum("candidates")
    publish(lake, warehouse, "P2", (1,), first=100)
    assert store.publish(copy, lock_timeout_s=1)["candidates"] == 6  # replaced, not appended
