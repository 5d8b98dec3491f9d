"""The single-machine store: the Parquet lake (``lake.py``) and one DuckDB file (``warehouse.py``) under a directory.

A posting's slices go to the lake first (one atomic file per table and month) and then into DuckDB in one
transaction, so a crash in between leaves the lake newer than DuckDB, never the reverse; ``rebuild`` reloads
DuckDB from the lake alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from heymilo_pipeline.lake import Lake
from heymilo_pipeline.storage import DUCKDB_NAME, LAKE_NAME, PostingsChange, SliceRows
from heymilo_pipeline.storage.reads import TableReads, doubled_ids, table_counts
from heymilo_pipeline.tables import CANDIDATES, RAW_RESULTS, WAREHOUSE_TABLES, WORKFLOW_STEPS
from heymilo_pipeline.warehouse import READ_ALL, SliceFiles, Warehouse, quoted_names

log = logging.getLogger("heymilo_pipeline.storage")


class LocalStore(TableReads):
    """``lake/`` and ``heymilo.duckdb`` under ``root`` (HEYMILO_DATA_DIR)."""

    def __init__(
        self, root: Path | str, lock_timeout_s: float = 60.0, on_wait: Callable[[str], None] | None = None
    ) -> None:
        self.root = Path(root)
        self.lake = Lake(self.root / LAKE_NAME)
        self.warehouse = Warehouse(self.root / DUCKDB_NAME, lock_timeout_s=lock_timeout_s, on_wait=on_wait)
        self.description = f"DuckDB {self.warehouse.path}"

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def exists(self) -> bool:
        return self.warehouse.exists()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.warehouse.connect(read_only) as conn:
            yield conn

    def ensure_schema(self) -> None:
        self.warehouse.ensure_schema()

    def tidy(self, older_than_s: float = 3600.0) -> int:
        # Hidden temp files of writes a kill interrupted hold personal data; older than an hour, no live writer
        # (Dagster runs partitions in parallel) can still own them.
        return len(self.lake.clean_temp_files(older_than_s))

    def write_slices(self, slices: Sequence[SliceRows], run_id: str) -> dict[str, int]:
        plan = []
        for item in slices:
            files = self.lake.write_partitions(item.posting_id, item.days, item.raw, item.candidates, item.steps)
            plan.append(
                SliceFiles(
                    item.posting_id,
                    item.days,
                    [f.candidates for f in files.values()],
                    [f.steps for f in files.values()],
                )
            )
        if slices:
            log.info("posting %s: lake written; loading into DuckDB", slices[0].posting_id)
        return self.warehouse.replace_slices(plan, run_id)

    def write_results(self, tables: Mapping[str, pa.Table], remove: Sequence[str], run_id: str) -> dict[str, int]:
        # The lake first, as for candidates: a crash in between leaves the lake newer, and a rebuild or the next
        # results run (which finds them still due in DuckDB) makes DuckDB catch up.
        self.lake.write_results(tables[RAW_RESULTS.name], remove)
        return self.warehouse.replace_results(tables, remove)

    def replace_postings(self, table: pa.Table) -> PostingsChange:
        return self.warehouse.replace_postings(table)

    def delete_posting(self, posting_id: str) -> dict[str, int]:
        deleted = self.warehouse.delete_posting(posting_id)
        return {**deleted, "lake_files": self.lake.delete_posting(posting_id)}

    def postings_with_rows(self) -> set[str]:
        stored = set(self.loaded_through()) if self.exists() else set()
        return stored | self.lake.postings()

    def duplicate_interview_ids(self, limit: int = 10) -> dict[str, Any]:
        lake_files = [str(p) for p in self.lake.paths(CANDIDATES.name)]
        with self.connect(read_only=True) as conn:
            in_lake = doubled_ids(conn, READ_ALL, [lake_files], limit) if lake_files else {"count": 0, "examples": []}
            return {"duckdb": doubled_ids(conn, "candidates", [], limit), "lake": in_lake}

    def lake_differences(self) -> list[dict[str, Any]]:
        """Per table and posting, where DuckDB and the lake's Parquet disagree (as multisets of rows)."""
        out = []
        with self.connect(read_only=True) as conn:
            for table in (CANDIDATES, WORKFLOW_STEPS):
                files = [str(p) for p in self.lake.paths(table.name)]
                names = quoted_names(table)
                in_lake = f"SELECT {names} FROM {READ_ALL}" if files else f'SELECT {names} FROM "{table.name}" LIMIT 0'
                sql = f"""
                    WITH lake AS ({in_lake}), db AS (SELECT {names} FROM "{table.name}"),
                    only_db AS (SELECT posting_id, count(*) AS n FROM (FROM db EXCEPT ALL FROM lake) GROUP BY 1),
                    only_lake AS (SELECT posting_id, count(*) AS n FROM (FROM lake EXCEPT ALL FROM db) GROUP BY 1)
                    SELECT coalesce(d.posting_id, l.posting_id), coalesce(d.n, 0), coalesce(l.n, 0)
                    FROM only_db d FULL JOIN only_lake l ON d.posting_id = l.posting_id ORDER BY 1
                """
                for posting_id, only_db, only_lake in conn.execute(sql, [files] if files else []).fetchall():
                    out.append(
                        {"table": table.name, "posting_id": posting_id,
                         "rows_only_in_duckdb": only_db, "rows_only_in_lake": only_lake}
                    )  # fmt: skip
        return out

    def rebuild(self, run_id: str) -> dict[str, int]:
        """DuckDB's candidates, steps, partition_loads and results dropped and made again from the lake, in one
        transaction (so a changed column applies too); ``postings``, which the lake does not hold, is kept."""
        return self.warehouse.rebuild(self.lake, run_id)

    def publish(self, path: Path, lock_timeout_s: float) -> dict[str, int]:
        """The tables copied into another DuckDB file; the store's own file is already published."""
        if Path(path).resolve() == self.warehouse.path.resolve():
            return self.table_counts()
        target = Warehouse(path, lock_timeout_s=lock_timeout_s)
        target.ensure_schema()
        with target.connect() as conn:
            conn.execute(f"ATTACH '{str(self.warehouse.path).replace(chr(39), chr(39) * 2)}' AS source (READ_ONLY)")
            conn.begin()
            try:
                for table in WAREHOUSE_TABLES:
                    names = quoted_names(table)
                    conn.execute(f'DELETE FROM "{table.name}"')
                    conn.execute(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM source."{table.name}"')
                counts = table_counts(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        return counts

    def maintain(self, keep: timedelta) -> dict[str, int]:
        """What interrupted writes left (older than ``keep``) removed, and DuckDB's file checkpointed."""
        started = time.monotonic()
        removed = self.tidy(keep.total_seconds())
        with self.connect() as conn:
            conn.execute("CHECKPOINT")
        log.info("local store maintained in %.1fs", time.monotonic() - started)
        return {"temp_files_deleted": removed}
