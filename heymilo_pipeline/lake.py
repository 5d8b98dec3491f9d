"""The Parquet lake: one file per (table, posting, UTC month), rewritten atomically, read back as Arrow.

Layout (hive-style directory names, so any engine can prune by posting and month)::

    root/candidates/posting_id=<id>/month=<YYYY-MM>/part.parquet
    root/candidate_workflow_steps/posting_id=<id>/month=<YYYY-MM>/part.parquet
    root/raw/candidates/posting_id=<id>/month=<YYYY-MM>/part.parquet   (the API's records, verbatim JSON)
    root/raw/results/posting_id=<id>/month=<YYYY-MM>/part.parquet      (interview results, scrubbed JSON)

The results' month is their candidate's (created_date). A results file is rewritten with its candidates' month,
under the same lock: results whose candidate the month no longer holds (erased, moved) leave with it.

Why months, when Dagster's partitions are days: a posting-day holds tens of candidates, and a file per
table and day made the lake three files per posting-day (a year of 20 postings: 21,900 files), where
file creation, not data, set the pace. A month file holds every day of that month that was ever
written; replacing days rewrites the month's files with the other days' rows carried over. Which days
a file holds (empty ones included: a day fetched with no candidates is still "loaded") is in its
schema metadata under ``heymilo.days``; ``Lake.covered_days`` reads it from the footers.

posting_id and created_date are real columns in the files: a file is complete without its path. The
directory names are only for locating and pruning, and our readers never derive columns from them
(DuckDB: ``hive_partitioning=false``; pyarrow: one file at a time). Writes refuse rows whose
posting_id disagrees with their directory, so an ad-hoc hive glob still sees the same values.

Every file is replaced atomically (temp file in the same directory, fsync, ``os.replace``); a lock per
posting-month serialises runs that rewrite the same month (a backfill and the daily update), so
neither loses the other's days. Temp names start with "." and do not end in .parquet, so no reader or
glob ever sees them. Candidate data is personal data: files are 0o600, directories 0o700.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.flatten import json_text
from heymilo_pipeline.tables import CANDIDATES, RAW_RECORDS, RAW_RESULTS, WORKFLOW_STEPS, TableSpec

RAW = "raw/candidates"
RESULTS = "raw/results"
_TABLES = {CANDIDATES.name: CANDIDATES, WORKFLOW_STEPS.name: WORKFLOW_STEPS, RAW: RAW_RECORDS, RESULTS: RAW_RESULTS}
FILE_NAME = "part.parquet"
DAYS_KEY = b"heymilo.days"
# A posting-month is usually far below this; a big month still gets several row groups, so readers can
# parallelise and skip by statistics.
ROW_GROUP_ROWS = 128 * 1024
# A raw result is kilobytes of JSON: groups of this many keep a results file's rewrite to a few MB at a time.
RESULT_GROUP_ROWS = 1024
FILE_MODE, DIR_MODE = 0o600, 0o700
# Months of one slice written at once: enough to overlap fsyncs and compression (which release the
# GIL), few enough not to thrash two cores.
WRITE_THREADS = 4


@dataclass(frozen=True)
class MonthFiles:
    """The three files of one posting x month."""

    candidates: Path
    steps: Path
    raw: Path


def month_of(day: date) -> date:
    """The first day of ``day``'s month: the key of the file that holds it."""
    return day.replace(day=1)


def month_days(month: date) -> DayRange:
    """Every day of the month starting at ``month``."""
    following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return DayRange(month, following - timedelta(days=1))


def _dir_value(posting_id: str) -> str:
    # Ids become one path segment: escape what a path cannot hold, and a leading "." (hidden, or "..").
    if not posting_id:
        raise ValueError("empty posting_id")
    text = quote(posting_id, safe="-_.")
    return "%2E" + text[1:] if text.startswith(".") else text


class Lake:
    """The lake under ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # --- paths ------------------------------------------------------------------------------

    def path(self, table: str, posting_id: str, day: date) -> Path:
        """The file that holds ``day`` of one posting (its month's), whether or not it exists."""
        _spec(table)
        directory = self.root / table / f"posting_id={_dir_value(posting_id)}" / f"month={day:%Y-%m}"
        return directory / FILE_NAME

    def paths(self, table: str, posting_id: str | None = None, days: DayRange | None = None) -> list[Path]:
        """Existing files of ``table`` (optionally of one posting, and of the months a day range touches),
        sorted by posting and month."""
        return [p for _, _, p in self._scan(table, posting_id, days)]

    def postings(self) -> set[str]:
        """Postings that have files in the lake (any table)."""
        return {
            unquote(d.name.removeprefix("posting_id="))
            for table in _TABLES
            if (self.root / table).is_dir()
            for d in (self.root / table).glob("posting_id=*")
        }

    def covered_days(self, table: str, posting_id: str, days: DayRange | None = None) -> set[date]:
        """The days of one posting the lake holds for ``table`` (written, empty or not), within ``days``."""
        covered = {day for _, _, path in self._scan(table, posting_id, days) for day in _days_of(path)}
        return covered if days is None else {d for d in covered if days.first <= d <= days.last}

    def partitions(self, table: str) -> set[tuple[str, date]]:
        """(posting_id, day) of every day the lake holds for ``table``."""
        return {(posting_id, day) for posting_id, _, path in self._scan(table, None, None) for day in _days_of(path)}

    def _scan(self, table: str, posting_id: str | None, days: DayRange | None) -> list[tuple[str, date, Path]]:
        _spec(table)
        base = self.root / table
        if posting_id is not None:
            posting_dirs = [base / f"posting_id={_dir_value(posting_id)}"]
        else:
            posting_dirs = sorted(base.glob("posting_id=*")) if base.is_dir() else []
        found = []
        for posting_dir in posting_dirs:
            if not posting_dir.is_dir():
                continue
            for month_dir in sorted(posting_dir.glob("month=*")):
                try:
                    month = date.fromisoformat(month_dir.name.removeprefix("month=") + "-01")
                except ValueError:
                    continue  # not ours
                file = month_dir / FILE_NAME
                overlaps = days is None or (month <= days.last and month_days(month).last >= days.first)
                if overlaps and file.is_file():
                    found.append((unquote(posting_dir.name.removeprefix("posting_id=")), month, file))
        return found

    # --- writing ----------------------------------------------------------------------------

    def write_partitions(
        self,
        posting_id: str,
        days: DayRange,
        raw_records: Sequence[dict[str, Any]] | pa.Table,
        candidates: pa.Table,
        steps: pa.Table,
    ) -> dict[date, MonthFiles]:
        """Replace every day of ``days`` of one posting by one fetch of that range (empty days too).

        Everything is checked before the first file is written, so a refused slice leaves the lake as it
        was. Then each month the range touches is rewritten under its lock: the month's other days are
        carried over from its current files, and the three files are replaced one kind at a time, raw
        first and candidates last, so whatever a crash interrupts, no table file is newer than its raw
        file. Returns the files per month (keyed by the month's first day).
        """
        candidates = conform(candidates, CANDIDATES, posting_id, days)
        steps = conform(steps, WORKFLOW_STEPS, posting_id, days)
        raw = raw_table(posting_id, days, raw_records, candidates)
        months = sorted({month_of(d) for d in days.days})
        # A candidate now under one of these days leaves the day that held it before (its created_at
        # changed): interview_id is unique across the posting's lake, not only within a day.
        incoming = candidates["interview_id"].combine_chunks()
        elsewhere = [
            month
            for _, month, path in self._scan(CANDIDATES.name, posting_id, None)
            if month not in months and _holds_any(path, incoming)
        ]

        def write_month(month: date) -> MonthFiles:
            span = month_days(month)
            part = DayRange(max(span.first, days.first), min(span.last, days.last)) if month in months else None
            files = MonthFiles(*(self.path(t, posting_id, month) for t in (CANDIDATES.name, WORKFLOW_STEPS.name, RAW)))
            # Raw first, candidates last: a crash between them leaves no table file newer than its raw file.
            order = ((files.raw, RAW_RECORDS, raw), (files.steps, WORKFLOW_STEPS, steps))
            order += ((files.candidates, CANDIDATES, candidates),)
            with self._month_lock(posting_id, month):
                for path, spec, rows in order:
                    merged = _merge(path, spec, _within(rows, part) if part else spec.empty(), part, incoming)
                    self._atomic_write(path, lambda f, t=merged: _write_parquet(f, t))
                self._keep_results_of(self.path(RESULTS, posting_id, month), merged)
            return files

        todo = months + elsewhere
        if len(todo) == 1:
            written = {todo[0]: write_month(todo[0])}
        else:
            with ThreadPoolExecutor(max_workers=min(len(todo), WRITE_THREADS), thread_name_prefix="lake") as pool:
                written = dict(zip(todo, pool.map(write_month, todo), strict=True))
        return {month: written[month] for month in months}

    def write_results(self, raw: pa.Table, remove: Sequence[str] = ()) -> list[Path]:
        """Store interview results (rows of RAW_RESULTS), replacing what each interview had, and remove the results
        of the interviews ``remove`` names. Each posting-month file is rewritten atomically under its month's lock;
        returns the files written."""
        raw = raw.select(RAW_RESULTS.names).cast(RAW_RESULTS.schema)
        replaced = pa.array(sorted({*raw["interview_id"].to_pylist(), *remove}), pa.string())
        keys = zip(raw["posting_id"].to_pylist(), raw["created_date"].to_pylist(), strict=True)
        months = {(posting_id, month_of(day)) for posting_id, day in keys}
        # An interview removed, or now under another month, may have results in any month of the lake.
        if len(replaced) > len(raw):
            months |= {(p, m) for p, m, path in self._scan(RESULTS, None, None) if _holds_any(path, replaced)}

        def unreplaced(old: pa.Table) -> pa.Array:
            return pc.invert(pc.is_in(old["interview_id"], value_set=replaced))

        written = []
        for posting_id, month in sorted(months):
            path = self.path(RESULTS, posting_id, month)
            with self._month_lock(posting_id, month):
                self._rewrite_results(path, unreplaced, _in_month(raw, posting_id, month))
            written.append(path)
        return written

    def _keep_results_of(self, path: Path, candidates: pa.Table) -> None:
        """The results file of a month just rewritten, without the results of interviews it no longer holds."""
        if not path.is_file():
            return
        stored = pq.read_table(path, columns=["interview_id", "created_date"], partitioning=None)
        keys = pa.table([candidates["interview_id"], candidates["created_date"]], names=["interview_id", "day"])
        kept = stored.join(keys, ["interview_id", "created_date"], ["interview_id", "day"], join_type="left semi")
        if kept.num_rows == stored.num_rows:
            return
        # Interview ids are unique in a month's file: what is kept is known by id alone.
        held = kept["interview_id"].combine_chunks()
        self._rewrite_results(path, lambda old: pc.is_in(old["interview_id"], value_set=held), RAW_RESULTS.empty())

    def _rewrite_results(self, path: Path, keep: Callable[[pa.Table], pa.Array], extra: pa.Table) -> None:
        """Rewrite a results file atomically with the rows of it ``keep`` selects, then ``extra``, a few row
        groups at a time: a raw result is kilobytes of JSON, and a busy posting-month holds tens of thousands, so
        reading the month whole would make a run's memory grow with the posting (the benchmark's section 9)."""

        def write(file: IO[bytes]) -> None:
            with pq.ParquetWriter(file, RAW_RESULTS.schema, compression="zstd") as writer:
                pending: list[pa.Table] = []
                held = 0
                for batch in _batches(path) if path.is_file() else ():
                    old = _conformed(pa.Table.from_batches([batch]), RAW_RESULTS)
                    kept = old.filter(keep(old))
                    pending.append(kept)
                    held += kept.num_rows
                    if held >= RESULT_GROUP_ROWS:  # whole groups, however much each rewrite drops
                        writer.write_table(pa.concat_tables(pending), row_group_size=RESULT_GROUP_ROWS)
                        pending, held = [], 0
                rest = pa.concat_tables([*pending, extra])
                if rest.num_rows:
                    writer.write_table(rest, row_group_size=RESULT_GROUP_ROWS)

        self._atomic_write(path, write)

    def delete_posting(self, posting_id: str) -> int:
        """Remove every file of one posting (all tables and months); returns how many files were removed."""
        removed = 0
        for table in _TABLES:
            directory = self.root / table / f"posting_id={_dir_value(posting_id)}"
            if directory.is_dir():
                removed += sum(1 for p in directory.rglob("*") if p.is_file())
                shutil.rmtree(directory)
        return removed

    def _month_lock(self, posting_id: str, month: date) -> AbstractContextManager[None]:
        return self._directory_lock(self.path(RAW, posting_id, month).parent)

    @contextmanager
    def _directory_lock(self, directory: Path) -> Iterator[None]:
        # flock on a directory (no lock file to leave behind): released by the kernel if the process dies,
        # so a killed run never leaves anything locked.
        self._make_dirs(directory)
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _atomic_write(self, path: Path, write: Callable[[IO[bytes]], None]) -> None:
        self._make_dirs(path.parent)
        temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask
            with open(fd, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        # The rename itself must reach the disk, or a crash could bring the old file back.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir(mode=DIR_MODE, exist_ok=True)  # one level at a time: makedirs gives parents the umask's mode
            os.chmod(d, DIR_MODE)

    def clean_temp_files(self, older_than_s: float = 3600.0) -> list[Path]:
        """Remove leftovers of crashed writes (``.*.tmp-*``) older than ``older_than_s``.

        The age limit protects writes still running in other processes (Dagster runs partitions in
        parallel): removing their temp file would make their rename fail.
        """
        if not self.root.is_dir():
            return []
        cutoff = time.time() - older_than_s
        removed = []
        for temp in self.root.rglob(".*.tmp-*"):
            try:
                if temp.is_file() and temp.stat().st_mtime <= cutoff:
                    temp.unlink()
                    removed.append(temp)
            except FileNotFoundError:
                continue  # its writer finished (or cleaned up) meanwhile
        return sorted(removed)

    # --- reading ----------------------------------------------------------------------------

    def read(self, table: str, posting_id: str | None = None, days: DayRange | None = None) -> pa.Table:
        """The rows of a table (optionally one posting / day range) with its declared schema."""
        spec = _spec(table)
        parts = [_within(_read(p, spec), days) for p in self.paths(table, posting_id, days)]
        return pa.concat_tables(parts) if parts else spec.empty()

    def read_file(self, table: str, path: Path) -> pa.Table:
        """One file of ``table`` (from ``paths``) with the table's declared schema."""
        return _read(path, _spec(table))

    def read_raw(self, posting_id: str, day: date) -> list[dict[str, Any]]:
        """The records the API returned for one posting x day, as it returned them."""
        table = self.read(RAW, posting_id, DayRange.single(day))
        return [json.loads(text) for text in table["record"].to_pylist()]


def _spec(table: str) -> TableSpec:
    if table not in _TABLES:
        raise ValueError(f"unknown lake table {table!r}; known: {sorted(_TABLES)}")
    return _TABLES[table]


def _days_of(path: Path) -> list[date]:
    metadata = pq.read_schema(path).metadata or {}
    return [date.fromisoformat(d) for d in json.loads(metadata.get(DAYS_KEY, b"[]"))]


def _read(path: Path, spec: TableSpec) -> pa.Table:
    return _conformed(pq.read_table(path, partitioning=None), spec)


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    with pq.ParquetFile(path) as source:
        yield from source.iter_batches(batch_size=RESULT_GROUP_ROWS)


def _conformed(table: pa.Table, spec: TableSpec) -> pa.Table:
    # A file written before a column was added lacks it: the column reads as nulls.
    for field in spec.schema:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table.select(spec.names).cast(spec.schema)


def _within(table: pa.Table, days: DayRange | None) -> pa.Table:
    if days is None:
        return table
    day = table["created_date"]
    keep = pc.and_(pc.greater_equal(day, pa.scalar(days.first)), pc.less_equal(day, pa.scalar(days.last)))
    return table.filter(keep)


def _merge(path: Path, spec: TableSpec, rows: pa.Table, days: DayRange | None, moved: pa.Array) -> pa.Table:
    """The month file's new content: its rows of other days (but none of the ``moved`` candidates, which
    ``rows`` now hold under another day), then ``rows``, ordered by day (stably). ``days`` None: the month
    only loses its moved candidates."""
    covered = set(days.days) if days else set()
    if path.is_file():
        old = _read(path, spec)
        keep = pc.invert(pc.is_in(old["interview_id"], value_set=moved))
        if days is not None:
            outside = pc.or_(
                pc.less(old["created_date"], pa.scalar(days.first)),
                pc.greater(old["created_date"], pa.scalar(days.last)),
            )
            keep = pc.and_(keep, outside)
        rows = pa.concat_tables([old.filter(keep), rows])
        covered |= set(_days_of(path))
    rows = rows.take(pc.sort_indices(rows["created_date"]))
    metadata = {**(spec.schema.metadata or {}), DAYS_KEY: json.dumps(sorted(map(str, covered))).encode()}
    return rows.replace_schema_metadata(metadata)


def _in_month(table: pa.Table, posting_id: str, month: date) -> pa.Table:
    span = month_days(month)
    return _within(table.filter(pc.equal(table["posting_id"], posting_id)), span)


def _holds_any(candidates_file: Path, interview_ids: pa.Array) -> bool:
    if not len(interview_ids):
        return False
    stored = pq.read_table(candidates_file, columns=["interview_id"])["interview_id"]
    return bool(pc.any(pc.is_in(stored, value_set=interview_ids)).as_py())


def conform(table: pa.Table, spec: TableSpec, posting_id: str, days: DayRange) -> pa.Table:
    """The table with its declared schema (descriptions included), if every row belongs to the slice."""
    if table.column_names != spec.names:
        raise ValueError(f"{spec.name}: columns {table.column_names} are not the declared {spec.names}")
    table = table.cast(spec.schema)
    if not table.num_rows:
        return table
    other = pc.sum(pc.fill_null(pc.not_equal(table["posting_id"], posting_id), True).cast(pa.int64())).as_py()
    if other:
        raise ValueError(f"{spec.name}: {other} row(s) with a posting_id other than {posting_id} cannot be written")
    outside = table.num_rows - _within(table, days).num_rows
    if outside:
        first, last = pc.min_max(table["created_date"]).values()
        raise ValueError(
            f"posting {posting_id}: {spec.name} has {outside} row(s) created outside the range written ({days}); "
            f"rows span {first}..{last}"
        )
    return table


# What a fetch keeps of its records for the lake: (interview_id, the record's JSON text as sent).
RAW_TEXTS = pa.schema([("interview_id", pa.string()), ("record", pa.string())])


def raw_json(records: Sequence[dict[str, Any]]) -> pa.Array:
    """Records (as parsed from the API's JSON) -> their JSON text, exact: key order, floats, big ints."""
    return pa.array([json_text(r) for r in records], pa.string())


def raw_table(
    posting_id: str, days: DayRange, raw: Sequence[dict[str, Any]] | pa.Table, candidates: pa.Table
) -> pa.Table:
    """The raw records as rows of RAW_RECORDS, each on its candidate's row (so its day, partition_day included).

    ``raw`` is either the records themselves, matched to rows by interview_id, or a RAW_TEXTS table
    (interview_id, JSON text) row for row with ``candidates``, as ``ingest.fetch_slice`` builds it.
    """
    if isinstance(raw, pa.Table):
        aligned = raw.num_rows == candidates.num_rows and (
            not raw.num_rows or pc.all(pc.equal(raw["interview_id"], candidates["interview_id"])).as_py()
        )
        if not aligned:
            raise ValueError(
                f"posting {posting_id}, days {days}: the raw records ({raw.num_rows}) are not the candidates of the "
                f"table ({candidates.num_rows}) row for row; the raw records must be able to rebuild the table"
            )
        texts = raw["record"]
    else:
        ids = candidates["interview_id"].to_pylist()
        raw_ids = [r.get("interview_id") for r in raw]
        if sorted(map(str, raw_ids)) != sorted(ids):
            raise ValueError(
                f"posting {posting_id}, days {days}: the raw records ({len(raw_ids)}) are not the candidates of "
                f"the table ({candidates.num_rows}); the raw records must be able to rebuild the table"
            )
        text_of_id = dict(zip(raw_ids, raw_json(raw).to_pylist(), strict=True))
        texts = pa.array([text_of_id[i] for i in ids], pa.string())
    keys = candidates.select(["interview_id", "posting_id", "created_date"])
    return keys.append_column("record", texts).cast(RAW_RECORDS.schema)


def _write_parquet(file: IO[bytes], table: pa.Table) -> None:
    pq.write_table(table, file, compression="zstd", row_group_size=ROW_GROUP_ROWS)
