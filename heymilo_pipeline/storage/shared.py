"""The multi-host store: the shared tables (``shared_tables.py``), DuckLake with its catalog in PostgreSQL and its
files on S3. There is no separate lake: the raw records are a table of the same catalog, written in the same
transaction as the rows, and the audits compare the rows with them."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from heymilo_pipeline.shared_tables import SERIALIZE, SharedTables, shared_tables_at
from heymilo_pipeline.storage import PostingsChange, SliceRows
from heymilo_pipeline.storage.reads import TableReads, doubled_ids, table_counts
from heymilo_pipeline.tables import CANDIDATES, PARTITION_LOADS, RAW_RECORDS, RESULT_TABLES
from heymilo_pipeline.warehouse import merge_postings

log = logging.getLogger("heymilo_pipeline.storage")

# partition_loads' rows again from the rows stored: what a rebuild can recompute on the shared tables.
_RECOUNT = """
UPDATE partition_loads SET rows = (
    SELECT count(*) FROM candidates AS c
    WHERE c.posting_id = partition_loads.posting_id AND c.created_date = partition_loads.partition_date
)
"""


class SharedStore(TableReads):
    """The pipeline's tables in one DuckLake that every host shares; writes are retried when another host wins."""

    def __init__(self, tables: SharedTables) -> None:
        self.tables = tables
        catalog = tables.catalog
        self.description = f"shared tables (catalog {catalog.shown_url}, files {catalog.data_path})"

    @classmethod
    def at(cls, url: str, data_path: str, environ: Mapping[str, str]) -> SharedStore:
        return cls(shared_tables_at(url, data_path, environ))

    def __repr__(self) -> str:
        return f"SharedStore({self.tables.catalog!r})"

    def exists(self) -> bool:
        return True  # the catalog is there or the store could not have been opened

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        # One attached catalog for reads and writes: read_only is the caller's intent; the reads never write.
        with self.tables.session() as conn:
            yield conn

    def ensure_schema(self) -> None:
        self.tables.ensure_schema()

    def tidy(self) -> int:
        return 0  # a killed write leaves files no snapshot references; maintain() deletes them once old enough

    def write_slices(self, slices: Sequence[SliceRows], run_id: str) -> dict[str, int]:
        if slices:
            log.info("posting %s: writing to the shared tables", slices[0].posting_id)
        return self.tables.replace_slices(slices, run_id)

    def write_results(self, tables: Mapping[str, pa.Table], remove: Sequence[str], run_id: str) -> dict[str, int]:
        return self.tables.replace_results(tables, remove)

    def replace_postings(self, table: pa.Table) -> PostingsChange:
        self.tables.ensure_schema()  # the postings asset may be the first to touch a new catalog

        def merge() -> PostingsChange:
            with self.connect() as conn:
                # An empty listing changes nothing: no write, so no snapshot (every listing would add one).
                return merge_postings(conn, table, first=SERIALIZE if table.num_rows else None)

        return self.tables.retrying("the postings listing", merge)

    def delete_posting(self, posting_id: str) -> dict[str, int]:
        return self.tables.delete_posting(posting_id)

    def postings_with_rows(self) -> set[str]:
        with self.connect(read_only=True) as conn:
            found = conn.execute(f'SELECT DISTINCT posting_id FROM "{PARTITION_LOADS.name}"').fetchall()
        return {posting_id for (posting_id,) in found}

    def duplicate_interview_ids(self, limit: int = 10) -> dict[str, Any]:
        with self.connect(read_only=True) as conn:
            return {
                where: doubled_ids(conn, f'"{table}"', [], limit)
                for where, table in (("duckdb", CANDIDATES.name), ("lake", RAW_RECORDS.name))
            }

    def lake_differences(self) -> list[dict[str, Any]]:
        """Per posting, candidates rows without their raw record and raw records without their row: written in the
        same transactions, they can still disagree after a bug or a hand edit."""
        sql = f"""
            WITH db AS (SELECT interview_id, posting_id, created_date FROM "{CANDIDATES.name}"),
            raw AS (SELECT interview_id, posting_id, created_date FROM "{RAW_RECORDS.name}"),
            only_db AS (SELECT posting_id, count(*) AS n FROM (FROM db EXCEPT ALL FROM raw) GROUP BY 1),
            only_raw AS (SELECT posting_id, count(*) AS n FROM (FROM raw EXCEPT ALL FROM db) GROUP BY 1)
            SELECT coalesce(d.posting_id, r.posting_id), coalesce(d.n, 0), coalesce(r.n, 0)
            FROM only_db d FULL JOIN only_raw r ON d.posting_id = r.posting_id ORDER BY 1
        """
        with self.connect(read_only=True) as conn:
            return [
                {"table": CANDIDATES.name, "posting_id": posting_id,
                 "rows_only_in_duckdb": only_db, "rows_only_in_lake": only_raw}
                for posting_id, only_db, only_raw in conn.execute(sql).fetchall()
            ]  # fmt: skip

    def rebuild(self, run_id: str) -> dict[str, int]:
        """The declared schema applied (new columns, comments) and partition_loads recounted from the rows, in one
        transaction. The rows themselves need no reload: they and their raw records are written together."""

        def recount(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
            conn.execute(_RECOUNT)
            return table_counts(conn)

        self.tables.ensure_schema()
        counts = self.tables.write("rebuilding partition_loads", recount)
        rebuilt = (CANDIDATES.name, "candidate_workflow_steps", PARTITION_LOADS.name, *(t.name for t in RESULT_TABLES))
        return {name: counts[name] for name in rebuilt}

    def publish(self, path: Path, lock_timeout_s: float) -> dict[str, int]:
        return self.tables.publish(path, lock_timeout_s=lock_timeout_s)

    def maintain(self, keep: timedelta) -> dict[str, int]:
        return self.tables.maintain(keep)
