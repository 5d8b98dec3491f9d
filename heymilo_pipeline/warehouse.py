"""The DuckDB warehouse: tables with comments, one-transaction slice replacement, lock-aware connections.

The lake's Parquet files are the only source of candidate rows: a slice (posting x day range) is
deleted and re-inserted from exactly the files the lake just wrote, so lake and warehouse agree.

DuckDB lets one process open a file read-write, and a process holding it blocks every other one,
readers included. ``Warehouse.connect`` therefore waits (with backoff, telling ``on_wait`` who is in
the way) instead of failing at once, and notebooks should use ``query``/``query_arrow``, which open
the file read-only for a single statement and let go of it at once.

Types: JSON text columns are DuckDB's JSON type (validated on insert, queryable with ->> etc.);
timestamps are TIMESTAMPTZ and every connection uses TimeZone 'UTC', so they read back in UTC.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.interview_results import flatten, stored_results
from heymilo_pipeline.lake import RESULTS, Lake
from heymilo_pipeline.storage import PostingsChange, StorageLockedError
from heymilo_pipeline.storage.reads import TableReads, delete_orphan_results, quote, table_counts
from heymilo_pipeline.tables import (
    CANDIDATES,
    PARTITION_LOADS,
    POSTINGS,
    RESULT_TABLES,
    WAREHOUSE_TABLES,
    WORKFLOW_STEPS,
    TableSpec,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("heymilo_pipeline.warehouse")

_LOCK_ERROR = "Could not set lock on file"
_READ = "read_parquet(?, hive_partitioning = false)"  # the lake's paths are never a source of columns
# Every month file of a table at once: files written before a column was added lack it (read as NULL).
READ_ALL = "read_parquet(?, hive_partitioning = false, union_by_name = true)"
_WITHIN_DAYS = "created_date BETWEEN ? AND ?"


# Every day of a slice, empty ones included, with its count: (posting_id, run_id, first day, last day).
LOADS_OF_SLICE = """
SELECT ?1, d.day::DATE, coalesce(c.n, 0), now(), ?2
FROM generate_series(?3::DATE, ?4::DATE, INTERVAL 1 DAY) AS d(day)
LEFT JOIN (
    SELECT created_date, count(*) AS n FROM candidates
    WHERE posting_id = ?1 AND created_date BETWEEN ?3 AND ?4 GROUP BY created_date
) AS c ON c.created_date = d.day::DATE
"""
_RECORD_LOADS = f"INSERT OR REPLACE INTO partition_loads {LOADS_OF_SLICE}"


@dataclass(frozen=True)
class SliceFiles:
    """One posting x day range and the lake files that hold it (month files: their other days are ignored)."""

    posting_id: str
    days: DayRange
    candidate_files: Sequence[Path]
    step_files: Sequence[Path]


class WarehouseLockedError(StorageLockedError):
    """Another process kept the DuckDB file open for longer than we were willing to wait."""


class Warehouse(TableReads):
    """One DuckDB file: its connections (waiting out other processes' locks), schema, writes and reads."""

    def __init__(
        self, path: Path | str, lock_timeout_s: float = 60.0, on_wait: Callable[[str], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.on_wait = on_wait or log.warning

    def __repr__(self) -> str:
        return f"Warehouse({str(self.path)!r})"

    def exists(self) -> bool:
        """Whether there is anything to read yet (a new warehouse is created by its first write)."""
        return self.path.exists()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection (TimeZone UTC), closed on exit; waits up to lock_timeout_s for another process."""
        if not read_only:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn = self._open(read_only)
        try:
            if not read_only:
                with suppress(PermissionError):  # not ours to change if another user created it
                    os.chmod(self.path, 0o600)  # candidate data is personal data
            conn.execute("SET TimeZone = 'UTC'")
            yield conn
        finally:
            conn.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        waited = False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if _LOCK_ERROR not in str(exc):
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WarehouseLockedError(
                        f"the DuckDB file {self.path} stayed locked by another process for {self.lock_timeout_s:g}s "
                        f"({exc}). Close the other connection (a notebook? use heymilo_pipeline.warehouse.query, "
                        "which never holds the file), or wait for the other run to finish, then retry."
                    ) from None
                if not waited:
                    waited = True
                    self.on_wait(
                        f"the DuckDB file {self.path} is open in another process (a notebook? {_holder(exc)}); "
                        f"waiting up to {self.lock_timeout_s:g}s for it to be released"
                    )
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)

    # --- schema -----------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create missing tables and columns, and (re)apply every table and column comment. Idempotent."""
        with self.connect() as conn:
            self._ensure(conn)

    def _ensure(self, conn: duckdb.DuckDBPyConnection) -> None:
        _ensure_schema(conn)

    # --- loads ------------------------------------------------------------------------------

    def replace_slices(self, slices: Sequence[SliceFiles], run_id: str) -> dict[str, int]:
        """Replace every slice's rows by its Parquet files, all in ONE transaction.

        For each slice: delete the posting's rows created within its days, insert the files' rows,
        and record every day of the range in partition_loads (0 rows for empty days). Any error rolls
        back every slice of the call. Returns the inserted row count per table.
        """
        with self.connect() as conn:
            return _replace_slices(conn, slices, run_id)

    def replace_postings(self, table: pa.Table) -> PostingsChange:
        with self.connect() as conn:
            self._ensure(conn)  # the postings asset may be the first to touch a new file
            return merge_postings(conn, table)

    def replace_results(self, tables: Mapping[str, pa.Table], remove: Sequence[str] = ()) -> dict[str, int]:
        """Replace interview results (``interview_results.flatten``'s tables) and remove those of ``remove``, in one
        transaction; returns rows inserted per table."""
        with self.connect() as conn:
            # No vacuum in the checkpoint that closing this connection makes: it rewrote row groups of the results
            # tables, the fuller the larger the tables (a 100,000-result backfill peaked 35-45 MiB higher with it,
            # bench/ANALYSIS.md, section 9). What it could reclaim is the space of results replaced by a newer
            # fetch; a rebuild (`heymilo-pipeline rebuild`) makes the tables anew from the lake.
            conn.execute("SET max_vacuum_tasks = 0")
            with _transaction(conn):
                return replace_results(conn, tables, remove, RESULT_TABLES)

    def delete_posting(self, posting_id: str) -> dict[str, int]:
        """Remove every candidate row of a posting (candidates, steps, results, partition_loads), in one
        transaction."""
        deleted = {}
        with self.connect() as conn:
            self._ensure(conn)
            with _transaction(conn):
                for table in (*RESULT_TABLES, WORKFLOW_STEPS, CANDIDATES, PARTITION_LOADS):
                    sql = f'DELETE FROM "{table.name}" WHERE posting_id = ?'
                    deleted[table.name] = conn.execute(sql, [posting_id]).fetchone()[0]
        return deleted

    def rebuild(self, lake: Lake, run_id: str) -> dict[str, int]:
        """Rebuild candidates, candidate_workflow_steps, partition_loads and the results from the lake alone, in one
        transaction: the tables are dropped and created from their current declarations, so this also
        applies a changed column. ``postings`` (not in the lake) is kept. Returns the rows per table."""
        files = {t.name: [str(p) for p in lake.paths(t.name)] for t in (CANDIDATES, WORKFLOW_STEPS)}
        covered = sorted(lake.partitions(CANDIDATES.name))
        with self.connect() as conn, _transaction(conn):
            for table in (*RESULT_TABLES, WORKFLOW_STEPS, CANDIDATES, PARTITION_LOADS):
                conn.execute(f'DROP TABLE IF EXISTS "{table.name}"')
            _create(conn)
            for table in (CANDIDATES, WORKFLOW_STEPS):
                if files[table.name]:
                    names = quoted_names(table)
                    conn.execute(
                        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM {READ_ALL}', [files[table.name]]
                    )
            if covered:
                days = pa.table({"posting_id": [p for p, _ in covered], "day": [d for _, d in covered]})
                conn.register("covered_days", days)
                conn.execute(
                    "INSERT INTO partition_loads SELECT d.posting_id, d.day, count(c.interview_id), now(), ? "
                    "FROM covered_days d LEFT JOIN candidates c "
                    "ON c.posting_id = d.posting_id AND c.created_date = d.day GROUP BY ALL",
                    [run_id],
                )
                conn.unregister("covered_days")
            # The results from their raw records, a file (a posting-month) at a time, as a results run stores them.
            for path in lake.paths(RESULTS):
                replace_results(conn, flatten(stored_results(lake.read_file(RESULTS, path))), (), RESULT_TABLES)
            counts = table_counts(conn)
        rebuilt = (CANDIDATES, WORKFLOW_STEPS, PARTITION_LOADS, *RESULT_TABLES)
        return {table.name: counts[table.name] for table in rebuilt}


# --- statements on an open connection (so one step can do everything on one connection) ---------


def _ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    with _transaction(conn):
        _create(conn)


def _create(conn: duckdb.DuckDBPyConnection) -> None:
    """Missing tables, columns and key, and the comments that differ: every run ensures the schema, and rewriting
    ~60 unchanged comments made each run write the file (and checkpoint it) for nothing."""
    for table in WAREHOUSE_TABLES:
        conn.execute(table.create_sql())
        listed = conn.execute(
            "SELECT column_name, comment FROM duckdb_columns() WHERE database_name = current_database() "
            "AND table_name = ?",
            [table.name],
        )
        comments: dict[str | None, str | None] = dict(listed.fetchall())
        described = conn.execute(
            "SELECT comment FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?",
            [table.name],
        )
        comments[None] = described.fetchone()[0]
        for column in table.columns:
            if column.name not in comments:  # a column added in a later release; old rows get NULL
                conn.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {column.sql_type}')
        if table.primary_key and table.indexed and not _has_primary_key(conn, table.name):
            if _add_primary_key(conn, table):
                comments = {}  # a table created again has none
        elif not table.indexed and _has_primary_key(conn, table.name):  # a file of a release that indexed it
            _recreate(conn, table, f'SELECT {quoted_names(table)} FROM "{table.name}"')
            comments = {}
        for statement in table.changed_comments(comments):
            conn.execute(statement)


def _has_primary_key(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    sql = "SELECT count(*) FROM duckdb_constraints() WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'"
    return conn.execute(sql, [table]).fetchone()[0] > 0


def _add_primary_key(conn: duckdb.DuckDBPyConnection, table: TableSpec) -> bool:
    """A file written before the key was declared: rows an earlier release stored twice (a candidate that
    moved to another day) keep only the copy of the later day, then the key is added. True if the table was
    created again (to drop those rows)."""
    key = ", ".join(quote(k) for k in table.primary_key)
    doubled = conn.execute(
        f'SELECT count(*) FROM (SELECT {key} FROM "{table.name}" GROUP BY ALL HAVING count(*) > 1)'
    ).fetchone()[0]
    if doubled:
        log.warning("%s: %d key(s) stored more than once; keeping the row of the latest day", table.name, doubled)
        # DuckDB will not index a table whose deleted rows are still in this transaction: copy, recreate, refill.
        _recreate(
            conn,
            table,
            f'SELECT {quoted_names(table)} FROM "{table.name}" '
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY created_date DESC) = 1",
        )
        return True
    conn.execute(f'ALTER TABLE "{table.name}" ADD PRIMARY KEY ({key})')
    return False


def _recreate(conn: duckdb.DuckDBPyConnection, table: TableSpec, rows: str) -> None:
    """The table dropped and created again as declared (DuckDB alters no key in place), holding ``rows``."""
    names = quoted_names(table)
    conn.execute(f"CREATE TEMP TABLE heymilo_keep AS {rows}")
    conn.execute(f'DROP TABLE "{table.name}"')
    conn.execute(table.create_sql())
    conn.execute(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM heymilo_keep')
    conn.execute("DROP TABLE heymilo_keep")


def _replace_slices(conn: duckdb.DuckDBPyConnection, slices: Sequence[SliceFiles], run_id: str) -> dict[str, int]:
    inserted = {CANDIDATES.name: 0, WORKFLOW_STEPS.name: 0}
    with _transaction(conn):
        for item in slices:
            bounds = [item.posting_id, item.days.first, item.days.last]
            candidate_files = [str(f) for f in item.candidate_files]
            moved_from: set[tuple[str, date]] = set()
            for table in (CANDIDATES, WORKFLOW_STEPS):
                conn.execute(
                    f'DELETE FROM "{table.name}" WHERE posting_id = ? AND created_date BETWEEN ? AND ?', bounds
                )
                if candidate_files:
                    # A candidate now under one of these days leaves whatever day (or posting) held it before:
                    # interview_id is the key of the whole table, not of a slice.
                    left = conn.execute(
                        f'DELETE FROM "{table.name}" WHERE interview_id IN '
                        f"(SELECT interview_id FROM {_READ} WHERE {_WITHIN_DAYS}) RETURNING posting_id, created_date",
                        [candidate_files, *bounds[1:]],
                    ).fetchall()
                    if table is CANDIDATES:
                        moved_from = set(left)
            for table, files in ((CANDIDATES, candidate_files), (WORKFLOW_STEPS, [str(f) for f in item.step_files])):
                inserted[table.name] += _insert_files(conn, table, files, bounds)
            delete_orphan_results(conn, *bounds)
            if moved_from:
                log.info("%s: candidates moved here from %d other day(s)", item.days, len(moved_from))
                for posting_id, day in moved_from:
                    conn.execute(
                        "UPDATE partition_loads SET rows = (SELECT count(*) FROM candidates "
                        "WHERE posting_id = ?1 AND created_date = ?2) WHERE posting_id = ?1 AND partition_date = ?2",
                        [posting_id, day],
                    )
                    delete_orphan_results(conn, posting_id, day, day)
            # one statement per slice (executemany cost ~2 ms a row, i.e. most of a year-long load)
            conn.execute(_RECORD_LOADS, [item.posting_id, run_id, item.days.first, item.days.last])
    return inserted


def _insert_files(conn: duckdb.DuckDBPyConnection, table: TableSpec, files: list[str], bounds: list[Any]) -> int:
    if not files:
        return 0
    names = quoted_names(table)
    # A row of another posting would land outside the slice and never be deleted by it. Checked first on
    # the one column it needs, so the rows then stream from the files into the table, with no staging copy.
    stray = conn.execute(f"SELECT count(*) FROM {_READ} WHERE posting_id IS DISTINCT FROM ?", [files, bounds[0]])
    if count := stray.fetchone()[0]:
        raise ValueError(f"{table.name}: {count} row(s) in {files} belong to another posting than {bounds[0]}")
    # A lake file holds a posting's month: the slice's days are the rows within its bounds.
    insert = f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM {_READ} WHERE {_WITHIN_DAYS}'
    return conn.execute(insert, [files, bounds[1], bounds[2]]).fetchone()[0]


def replace_results(
    conn: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table], remove: Sequence[str], specs: Sequence[TableSpec]
) -> dict[str, int]:
    """On an open transaction: every interview of ``tables`` (and of ``remove``) loses its stored results in each
    of ``specs``, then gets the incoming rows, if its candidate is still stored under the same posting and day (a
    candidates load may have erased or moved it while its results were fetched)."""
    first = tables[specs[0].name]
    incoming = first.column("interview_id").to_pylist()
    conn.register("heymilo_results_ids", pa.table({"interview_id": pa.array([*incoming, *remove], pa.string())}))
    # An interview's stored results sit under its candidate's posting and day (they are inserted only there, and a
    # candidates load that moves or erases a candidate removes them in the same transaction), so only the incoming
    # days are searched: DuckDB then skips every row group of other days unread. Each write adds a row group to
    # every table, and a search of the whole table read a block per row group: at 100,000 results, 70 MiB a write
    # (bench/ANALYSIS.md, section 9). A write that removes erased interviews (``remove``: their days are not given)
    # searches every day; erasures are rare.
    days, params = "", []
    if first.num_rows and not remove:
        bounds = pc.min_max(first["created_date"])
        days, params = " AND created_date BETWEEN ? AND ?", [bounds["min"].as_py(), bounds["max"].as_py()]
    inserted = {}
    try:
        for spec in specs:
            conn.execute(
                f'DELETE FROM "{spec.name}" WHERE interview_id IN (SELECT interview_id FROM heymilo_results_ids){days}',
                params,
            )
            rows = tables[spec.name]
            inserted[spec.name] = 0
            if not rows.num_rows:
                continue
            conn.register("heymilo_results", rows.select(spec.names).cast(spec.schema))
            names = quoted_names(spec)
            found = conn.execute(
                f'INSERT INTO "{spec.name}" ({names}) SELECT {names} FROM heymilo_results AS i WHERE EXISTS '
                "(SELECT 1 FROM candidates AS c WHERE c.interview_id = i.interview_id AND c.posting_id = i.posting_id "
                "AND c.created_date = i.created_date)"
            ).fetchone()
            inserted[spec.name] = found[0] if found else rows.num_rows
            conn.unregister("heymilo_results")
    finally:
        conn.unregister("heymilo_results_ids")
    return inserted


def merge_postings(conn: duckdb.DuckDBPyConnection, table: pa.Table, first: str | None = None) -> PostingsChange:
    """Merge a listing of every posting (see flatten.postings_table) into ``postings``, in one transaction.

    Listed postings replace their rows. A posting the listing no longer has keeps its last listed row,
    marked ``vanished_at`` (set once, when first found missing); one that comes back is unmarked.
    """
    if table.column_names != POSTINGS.names:
        raise ValueError(f"postings: columns {table.column_names} are not the declared {POSTINGS.names}")
    incoming = table.cast(POSTINGS.schema)
    names = quoted_names(POSTINGS)
    with _transaction(conn):
        if first is not None:  # the shared tables' SERIALIZE
            conn.execute(first)
        conn.register("incoming_postings", incoming)
        # SELECT, then UPDATE: DuckLake (the shared tables) has no UPDATE ... RETURNING.
        vanished = [
            pid
            for (pid,) in conn.execute(
                "SELECT posting_id FROM postings WHERE posting_id NOT IN "
                "(SELECT posting_id FROM incoming_postings) AND vanished_at IS NULL"
            ).fetchall()
        ]
        if vanished:
            conn.execute("UPDATE postings SET vanished_at = now() WHERE posting_id IN (SELECT unnest(?))", [vanished])
        conn.execute("DELETE FROM postings WHERE posting_id IN (SELECT posting_id FROM incoming_postings)")
        conn.execute(f"INSERT INTO postings ({names}) SELECT {names} FROM incoming_postings")
        conn.unregister("incoming_postings")
        gone = [pid for (pid,) in conn.execute(
            "SELECT posting_id FROM postings WHERE vanished_at IS NOT NULL ORDER BY posting_id"
        ).fetchall()]  # fmt: skip
    return PostingsChange(listed=incoming.num_rows, newly_vanished=sorted(vanished), vanished=gone)


@contextmanager
def _transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    conn.begin()
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def quoted_names(table: TableSpec) -> str:
    return ", ".join(quote(n) for n in table.names)


def _holder(exc: duckdb.IOException) -> str:
    # DuckDB names the holder: "Conflicting lock is held in /usr/bin/python3 (PID 1234)".
    text = str(exc)
    at = text.find("Conflicting lock is held in")
    return text[at:].split(". See also")[0].rstrip(".") if at >= 0 else "holder unknown"


def query(path: Path | str, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
    """Run one statement read-only and return a pandas DataFrame; the file is released right after.

    For notebooks: unlike a long-lived ``duckdb.connect``, this never blocks the pipeline for longer
    than the query itself.
    """
    with Warehouse(path).connect(read_only=True) as conn:
        return conn.execute(sql, params).df()


def query_arrow(path: Path | str, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
    """Like ``query``, as an Arrow table."""
    with Warehouse(path).connect(read_only=True) as conn:
        return conn.sql(sql, params=params).to_arrow_table()
