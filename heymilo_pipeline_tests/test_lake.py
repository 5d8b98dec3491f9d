"""The Parquet lake: month layout, atomic replacement, empty days, permissions, raw round trip, temp files."""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from heymilo_pipeline.api.models import CandidateResponse
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.flatten import flatten
from heymilo_pipeline.lake import RAW, RESULT_GROUP_ROWS, RESULTS, Lake, month_of
from heymilo_pipeline.tables import CANDIDATES, RAW_RESULTS, WORKFLOW_STEPS
from heymilo_pipeline_tests.factories import BIG, DAY, DAYS, fetched, fetched_on, midnight, record

MONTH = month_of(DAY)


def write(lake: Lake, raw: list[dict[str, Any]], posting_id: str = "P1", days: DayRange = DAYS) -> dict:
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    return lake.write_partitions(posting_id, days, raw, candidates, steps)


def visible(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_and_round_trip(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    raw = fetched()
    files = write(lake, raw)
    assert sorted(files) == [MONTH]  # three days of one month: one file per table
    tables = ("candidates", "candidate_workflow_steps", RAW)
    assert visible(lake.root) == sorted(f"{table}/posting_id=P1/month=2026-03/part.parquet" for table in tables)
    assert files[MONTH].candidates == lake.root / "candidates/posting_id=P1/month=2026-03/part.parquet"
    assert lake.covered_days("candidates", "P1") == set(DAYS.days)
    candidates = lake.read("candidates")
    assert candidates.schema.equals(CANDIDATES.schema, check_metadata=True)
    assert candidates["interview_id"].to_pylist() == [r["interview_id"] for r in raw]
    assert lake.read("candidate_workflow_steps").num_rows == 3 * len(raw)
    # posting_id and created_date are real columns of the files, not only directory names.
    file_columns = pq.read_schema(files[MONTH].candidates).names
    assert file_columns[:2] == ["interview_id", "posting_id"] and "created_date" in file_columns
    # The raw records come back exactly as the API sent them: key order, floats, an int beyond 64 bits.
    assert lake.read_raw("P1", DAY) == raw[:3]
    assert list(lake.read_raw("P1", DAY)[0]) == list(raw[0])
    assert lake.read_raw("P1", DAY)[0]["data"]["ats"]["application_id"] == BIG


def test_raw_records_survive_what_json_allows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    raw = fetched(per_day=(3,))
    raw[0]["name"] = "Zoë \U0001f600 \u00e9"
    raw[1]["data"] = {"note": "\ud800 lone surrogate", "x": 1e16, "y": 0.1, "z": -(2**80)}
    raw[2]["data"] = {"nan": float("nan")}
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    lake.write_partitions("P1", DayRange.single(DAY), raw, candidates, steps)
    back = lake.read_raw("P1", DAY)
    assert back[:2] == raw[:2] and back[2]["data"]["nan"] != back[2]["data"]["nan"]


def test_empty_days_are_recorded_and_an_empty_month_gets_files_with_the_full_schema(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    write(lake, fetched(per_day=(1, 0, 0)))
    assert lake.covered_days("candidates", "P1") == set(DAYS.days)  # the two empty days are loaded too
    april = DayRange(DAY.replace(month=4, day=1), DAY.replace(month=4, day=2))
    empty = write(lake, [], days=april)[april.first]
    for path, spec in ((empty.candidates, CANDIDATES), (empty.steps, WORKFLOW_STEPS)):
        assert lake.read(spec.name, "P1", april).schema.equals(spec.schema, check_metadata=True)
        assert pq.read_metadata(path).num_rows == 0
    assert lake.covered_days("candidate_workflow_steps", "P1", april) == set(april.days)
    assert lake.read_raw("P1", DAY + timedelta(days=1)) == []
    assert lake.read("candidates", "P1", DayRange.single(DAY + timedelta(days=2))).num_rows == 0
    assert lake.read("candidates", "nope").schema.equals(CANDIDATES.schema)
    assert lake.partitions("candidates") == {("P1", d) for d in (*DAYS.days, *april.days)}


def test_rewrite_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    write(lake, fetched(per_day=(3, 1, 2)))
    write(lake, fetched(per_day=(1, 0, 0), first=100), days=DayRange.single(DAY))
    assert lake.read("candidates", days=DayRange.single(DAY))["interview_id"].to_pylist() == [f"{101:016X}"]
    assert lake.read("candidates").num_rows == 1 + 1 + 2  # the other days are untouched
    assert all(not name.startswith(".") for p in visible(tmp_path) for name in Path(p).parts)
    assert [p.name for p in lake.paths("candidates")] == ["part.parquet"]
    assert lake.read_raw("P1", DAY + timedelta(days=2)) == fetched(per_day=(3, 1, 2))[4:]  # carried over


def test_a_range_across_months_writes_each_month_and_keeps_their_other_days(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    march_end = DayRange(DAY.replace(day=30), DAY.replace(day=31))
    write(lake, fetched_on(march_end.first, (2, 1)), days=march_end)
    write(lake, fetched_on(DAY, (1,), first=40), days=DayRange.single(DAY))  # another day of March
    across = DayRange(DAY.replace(day=31), DAY.replace(month=4, day=2))
    files = write(lake, fetched_on(across.first, (1, 2, 0), first=80), days=across)
    assert sorted(files) == [MONTH, MONTH.replace(month=4)]
    by_day = {d: len(lake.read_raw("P1", d)) for d in (DAY, march_end.first, *across.days)}
    assert by_day == {DAY: 1, march_end.first: 2, across.first: 1, across.days[1]: 2, across.last: 0}
    assert lake.covered_days("candidates", "P1") == {DAY, march_end.first, *across.days}
    days = lake.read("candidates", "P1")["created_date"].to_pylist()
    assert days == sorted(days) and len(days) == 6  # each file ordered by day


def test_writers_of_different_days_of_one_month_do_not_lose_each_others_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(write, lake, fetched_on(DAY + timedelta(days=i), (2,), first=10 * i), "P1",
                        DayRange.single(DAY + timedelta(days=i)))
            for i in range(12)
        ]  # fmt: skip
        [f.result() for f in futures]
    assert lake.read("candidates", "P1").num_rows == 24
    assert lake.covered_days("candidates", "P1") == {DAY + timedelta(days=i) for i in range(12)}


def test_a_failed_write_keeps_the_previous_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    write(lake, fetched(per_day=(2,)), days=DayRange.single(DAY))
    before = lake.read("candidates").to_pylist(), lake.read_raw("P1", DAY)
    raw = fetched(per_day=(2,), first=50)
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    raw[1]["data"] = {"not json": object()}  # fails half way through writing the raw file
    with pytest.raises(TypeError, match="not JSON serializable"):
        lake.write_partitions("P1", DayRange.single(DAY), raw, candidates, steps)
    assert (lake.read("candidates").to_pylist(), lake.read_raw("P1", DAY)) == before
    assert all(not Path(p).name.startswith(".") for p in visible(tmp_path))


def test_rows_of_another_partition_are_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    raw = fetched(per_day=(1, 1))
    candidates, steps = flatten([CandidateResponse.model_validate(r) for r in raw])
    with pytest.raises(ValueError, match=r"created outside the range written \(2026-03-13\)"):
        lake.write_partitions("P1", DayRange.single(DAY), raw, candidates, steps)
    with pytest.raises(ValueError, match="posting_id other than P2"):
        lake.write_partitions("P2", DAYS, raw, candidates, steps)
    with pytest.raises(ValueError, match="outside the range"):
        lake.write_partitions("P1", DayRange.single(DAY), raw, candidates, steps)
    with pytest.raises(ValueError, match="raw records"):
        lake.write_partitions("P1", DayRange.single(DAY), raw[:0], candidates.slice(0, 1), steps.slice(0, 3))
    keyless = candidates.slice(0, 1).set_column(0, "interview_id", pa.array([None], pa.string()))
    with pytest.raises(ValueError, match="null values to non-nullable"):
        lake.write_partitions("P1", DayRange.single(DAY), raw[:1], keyless, steps.slice(0, 3))
    assert visible(tmp_path) == []


def test_personal_data_is_private(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "new" / "lake")
    files = write(lake, fetched())
    for path in (files[MONTH].candidates, files[MONTH].steps, files[MONTH].raw):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    directory = files[MONTH].candidates.parent
    while directory != tmp_path:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        directory = directory.parent


def test_temp_files_are_never_listed_and_are_cleaned(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    files = write(lake, fetched())
    crashed = files[MONTH].candidates.parent / ".part.parquet.tmp-0123abcd"
    crashed.write_bytes(b"half a parquet file")
    fresh = files[MONTH].raw.parent / ".part.parquet.tmp-4567"
    fresh.write_bytes(b"being written")
    now = time.time()  # the clock the cleaning reads (under faketime, not the file system's)
    os.utime(fresh, (now, now))
    os.utime(crashed, (1, 1))  # long ago
    assert crashed not in lake.paths("candidates") and len(lake.paths("candidates")) == 1
    assert lake.read("candidates").num_rows == 5
    everything = f"SELECT count(*) FROM read_parquet('{lake.root}/candidates/**/*.parquet')"
    assert duckdb.connect().execute(everything).fetchall() == [(5,)]
    assert lake.clean_temp_files() == [crashed]  # a recent temp file may belong to a write still running
    assert fresh.exists() and not crashed.exists()
    assert lake.clean_temp_files(older_than_s=0) == [fresh]
    assert lake.paths("candidates") == [files[MONTH].candidates]


def test_partitions_and_filters_with_unusual_posting_ids(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    ids = ["13D77095", "a/b c=d", ".hidden", "%41"]
    for n, posting_id in enumerate(ids):
        write(lake, fetched(posting_id, per_day=(1, 1, 0), first=10 * n), posting_id)
    assert lake.partitions("candidates") == {(p, d) for p in ids for d in DAYS.days}
    assert lake.partitions(RAW) == lake.partitions("candidate_workflow_steps") == lake.partitions("candidates")
    for posting_id in ids:
        table = lake.read("candidates", posting_id, DayRange(DAY, DAY + timedelta(days=1)))
        assert set(table["posting_id"].to_pylist()) == {posting_id} and table.num_rows == 2
    assert all(p.parent.parent.parent == lake.root / "candidates" for p in lake.paths("candidates"))
    with pytest.raises(ValueError, match="unknown lake table"):
        lake.paths("nope")


def test_hive_readers_see_the_same_posting_ids_as_the_files(tmp_path: Path) -> None:
    # With hive partitioning on, DuckDB replaces posting_id by the directory's value and adds `month`;
    # both agree with the files' own columns, so an ad-hoc glob in a notebook sees the same data.
    lake = Lake(tmp_path)
    for posting_id in ("P1", "P2"):
        write(lake, fetched(posting_id, first=0 if posting_id == "P1" else 10), posting_id)
    glob = f"{lake.root}/candidates/*/*/*.parquet"
    conn = duckdb.connect()
    hive = conn.execute(f"SELECT posting_id, created_date, month FROM read_parquet('{glob}', hive_partitioning=true)")
    with_directory_values = sorted(hive.fetchall())
    plain = conn.execute(f"SELECT posting_id, created_date FROM read_parquet('{glob}', hive_partitioning=false)")
    assert with_directory_values == sorted((p, d, f"{d:%Y-%m}") for p, d in plain.fetchall())
    assert pc.count_distinct(lake.read("candidates")["posting_id"]).as_py() == 2


def results_rows(raw: list[dict[str, Any]], state: str) -> pa.Table:
    candidates, _ = flatten([CandidateResponse.model_validate(r) for r in raw])
    n = candidates.num_rows
    columns = {
        "interview_id": candidates["interview_id"],
        "posting_id": candidates["posting_id"],
        "created_date": candidates["created_date"],
        "fetched_at": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
        "candidate_state": pa.array([state] * n),
        "record": pa.array(['{"web_interview": null}'] * n),
    }
    return pa.table(columns).cast(RAW_RESULTS.schema)


def test_results_files_are_rewritten_a_few_row_groups_at_a_time_and_stay_exact(tmp_path: Path) -> None:
    # More results than one row group, so the rewrite goes through several groups of the old file.
    lake = Lake(tmp_path)
    day_one, day_three = midnight(DAY), midnight(DAY + timedelta(days=2))
    raw = [record(n, created_at=day_one + 50 * n) for n in range(1_500)]
    raw += [record(n, created_at=day_three + 50 * (n - 1_500)) for n in range(1_500, 2_700)]
    write(lake, raw)
    ids = [r["interview_id"] for r in raw]
    lake.write_results(results_rows(raw, "first"))
    removed = ids[2_000:2_100]
    lake.write_results(results_rows(raw[:1_000], "again"), remove=removed)

    def stored() -> dict[str, str]:
        table = lake.read(RESULTS)
        return dict(zip(table["interview_id"].to_pylist(), table["candidate_state"].to_pylist(), strict=True))

    expected = {i: "again" if k < 1_000 else "first" for k, i in enumerate(ids) if i not in removed}
    assert stored() == expected
    [path] = lake.paths(RESULTS)
    groups = pq.ParquetFile(path).metadata
    assert groups.num_row_groups >= 3
    assert max(groups.row_group(g).num_rows for g in range(groups.num_row_groups)) <= RESULT_GROUP_ROWS
    # A candidates load of the first day without 300 of its candidates takes their results with them.
    write(lake, raw[:1_200], days=DayRange.single(DAY))
    assert stored() == {i: s for i, s in expected.items() if i not in ids[1_200:1_500]}
    assert len(stored()) == 2_700 - 100 - 300
