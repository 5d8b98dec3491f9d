"""Where the pipeline's tables live: one interface (``Store``), two homes, one factory (``open_store``).

- ``LocalStore`` (``storage.local``): the Parquet lake and one DuckDB file under ``HEYMILO_DATA_DIR``.
- ``SharedStore`` (``storage.shared``): DuckLake, its catalog in PostgreSQL and its files on S3, shared by every
  host (``HEYMILO_SHARED_CATALOG_URL`` and ``HEYMILO_SHARED_DATA_PATH``).

Everything outside this package (assets, checks, jobs, the CLI, ``status``) holds a ``Store`` and never asks
which one it is. The implementations are imported when a store is opened, so importing this module costs
nothing and the engines (``warehouse``, ``shared_tables``) may import its types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from heymilo_pipeline.api.windows import DayRange

# Where things live under HEYMILO_DATA_DIR (the settings, the notebook helpers and the stores use these).
DUCKDB_NAME = "heymilo.duckdb"
LAKE_NAME = "lake"


class StorageError(RuntimeError):
    """The tables cannot be reached or written; the message says which and what to do."""


class StorageLockedError(StorageError):
    """Another process held the tables for longer than we were willing to wait: every posting would wait as long."""


class StorageBusyError(StorageError):
    """Other writers won every attempt at one commit; nothing of it is stored, and a rerun is safe."""


@dataclass(frozen=True)
class SliceRows:
    """One fetched slice as a store takes it: a posting x day range and every row it holds (empty days too)."""

    posting_id: str
    days: DayRange
    raw: pa.Table  # lake.RAW_TEXTS: (interview_id, JSON text as sent), row for row with candidates
    candidates: pa.Table
    steps: pa.Table


@dataclass
class PostingsChange:
    """What a listing changed: how many postings it listed, which vanished now, and which are vanished in all."""

    listed: int
    newly_vanished: list[str]
    vanished: list[str]


class Store(Protocol):
    """The pipeline's tables: ``candidates``, ``candidate_workflow_steps``, ``partition_loads``, ``postings``, the
    interview results (``tables.RESULT_TABLES``) and the raw records they are made from. Every write is one
    transaction: all of it is stored, or none."""

    description: str  # where the tables are, for people (never a password)

    # --- writes -------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether there is anything to read yet (a new store is created by its first write)."""

    def ensure_schema(self) -> None:
        """Create missing tables and columns, and apply every comment. Idempotent."""

    def tidy(self) -> int:
        """Remove what interrupted writes left (files nothing references); returns how many."""

    def write_slices(self, slices: Sequence[SliceRows], run_id: str) -> dict[str, int]:
        """Replace one posting's slices: their raw records, rows and covered days. A candidate now under one of the
        days leaves whatever day or posting held it before. Returns rows inserted per table."""

    def replace_postings(self, table: pa.Table) -> PostingsChange:
        """Merge a listing of every posting; one the listing lacks keeps its last row, marked ``vanished_at``."""

    def delete_posting(self, posting_id: str) -> dict[str, int]:
        """Remove everything of one posting but its ``postings`` row; returns what was removed."""

    def write_results(self, tables: Mapping[str, pa.Table], remove: Sequence[str], run_id: str) -> dict[str, int]:
        """Replace the results of the interviews in ``tables`` (``interview_results.flatten``'s, raw records
        included) and remove those of ``remove``; a result whose candidate is no longer stored under its posting
        and day is not inserted. Returns rows inserted per table. (A candidates write removes the results of the
        candidates it erases or moves.)"""

    # --- reads (read-only; none of them writes) ------------------------------------------------
    def connect(self, read_only: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A DuckDB connection whose unqualified table names are the tables, closed on exit."""

    def table_counts(self) -> dict[str, int]: ...
    def postings_with_rows(self) -> set[str]: ...
    def rows_by_day(self, posting_ids: Sequence[str], days: DayRange) -> dict[str, dict[date, int]]: ...
    def oldest_unfinished_day(self, since: date) -> date | None: ...
    def loaded_through(self) -> dict[str, date]: ...
    def loads_by_posting(self) -> list[tuple[str, int, date, date, int]]: ...
    def posting_labels(self) -> dict[str, tuple[str, str]]: ...
    def checksum(self, table: str, exclude: Sequence[str] = ()) -> str: ...
    def results_due(
        self,
        posting_ids: Sequence[str] | None = None,
        days: DayRange | None = None,
        finished_before: datetime | None = None,
    ) -> pa.Table: ...

    # --- audits ------------------------------------------------------------------------------
    def duplicate_interview_ids(self, limit: int = 10) -> dict[str, Any]:
        """interview_ids stored more than once, in the tables (``duckdb``) and in the raw records (``lake``)."""

    def orphan_steps(self, limit: int = 10) -> dict[str, Any]: ...
    def results_problems(self, limit: int = 10) -> dict[str, list[dict[str, Any]]]: ...

    def lake_differences(self) -> list[dict[str, Any]]:
        """Per table and posting, where the tables and the raw records (the lake) disagree."""

    # --- upkeep ------------------------------------------------------------------------------
    def rebuild(self, run_id: str) -> dict[str, int]:
        """Make the tables again from what the store keeps besides them, without the API; returns rows per table."""

    def publish(self, path: Path, lock_timeout_s: float) -> dict[str, int]:
        """Copy the tables into the DuckDB file at ``path`` in one transaction on it; returns rows per table."""

    def maintain(self, keep: timedelta) -> dict[str, int]:
        """Compact, and forget what is older than ``keep`` and no longer needed; returns how many of each."""


def open_store(
    data_dir: Path,
    *,
    lock_timeout_s: float = 60.0,
    shared_catalog_url: str | None = None,
    shared_data_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Store:
    """The store the settings name: the shared tables when both ``shared_*`` are given, else the data directory's.

    ``environ`` holds AWS's variables for S3 (as every S3 client reads them); ``on_wait`` hears when the DuckDB
    file is held by another process and the store waits for it."""
    if shared_catalog_url and shared_data_path:
        import os

        from heymilo_pipeline.storage.shared import SharedStore

        return SharedStore.at(shared_catalog_url, shared_data_path, os.environ if environ is None else environ)
    from heymilo_pipeline.storage.local import LocalStore

    return LocalStore(Path(data_dir), lock_timeout_s=lock_timeout_s, on_wait=on_wait)
