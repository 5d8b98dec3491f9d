"""The Parquet lake: one directory per (table, posting, UTC day), written atomically, read back as Arrow.

Layout (hive-style directory names, so any engine can prune by posting and day)::

    root/candidates/posting_id=<id>/date=<YYYY-MM-DD>/part.parquet
    root/candidate_workflow_steps/posting_id=<id>/date=<YYYY-MM-DD>/part.parquet
    root/raw/candidates/posting_id=<id>/date=<YYYY-MM-DD>/part.jsonl.gz   (the API's records, verbatim)

posting_id and created_date stay real columns in the files: a file is complete without its path. The
directory names are only for locating and pruning, and our readers never derive columns from them
(DuckDB: ``hive_partitioning=false``; pyarrow: one file at a time). With hive partitioning on, DuckDB
and pyarrow both *replace* the file's posting_id with the directory's value and add a ``date``
column; naming the day key ``date`` (not created_date) keeps that addition from shadowing a real
column, and writes refuse rows whose posting_id/created_date disagree with their directory, so an
ad-hoc hive glob still sees the same values.

Every file is replaced atomically (temp file in the same directory, fsync, ``os.replace``). Temp
names start with "." and do not end in .parquet / .jsonl.gz, so no reader or glob ever sees them.
Candidate data is personal data: files are 0o600, directories 0o700.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydantic_core

from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.flatten import CANDIDATES, WORKFLOW_STEPS, TableSpec, split_by_day

RAW = "raw/candidates"
_PARQUET = {CANDIDATES.name: CANDIDATES, WORKFLOW_STEPS.name: WORKFLOW_STEPS}
_FILE_NAMES = {CANDIDATES.name: "part.parquet", WORKFLOW_STEPS.name: "part.parquet", RAW: "part.jsonl.gz"}
# Partitions are one posting-day (usually far below this); big backfill days still get several row
# groups, so readers can parallelise and skip by statistics.
ROW_GROUP_ROWS = 128 * 1024
FILE_MODE, DIR_MODE = 0o600, 0o700
# Threads writing one slice's partition files: enough to overlap the fsyncs (the journal commits
# concurrent ones together), few enough not to thrash two cores.
WRITE_THREADS = 8


@dataclass(frozen=True)
class _PlannedPartition:
    """One checked partition and its three writes, in the order they must happen (raw first)."""

    lake: Lake
    day: date
    files: PartitionFiles
    raw_records: Sequence[dict[str, Any]]
    candidates: pa.Table
    steps: pa.Table

    def writes(self) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
        atomic = self.lake._atomic_write
        return (
            lambda: atomic(self.files.raw, lambda f: _write_jsonl_gz(f, self.raw_records)),
            lambda: atomic(self.files.steps, lambda f: _write_parquet(f, self.steps)),
            lambda: atomic(self.files.candidates, lambda f: _write_parquet(f, self.candidates)),
        )


@dataclass(frozen=True)
class PartitionFiles:
    """The three files of one posting x day."""

    candidates: Path
    steps: Path
    raw: Path


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
        """Where the file of one partition lives (whether or not it exists)."""
        directory = self.root / table / f"posting_id={_dir_value(posting_id)}" / f"date={day.isoformat()}"
        return directory / _file_name(table)

    def paths(self, table: str, posting_id: str | None = None, days: DayRange | None = None) -> list[Path]:
        """Existing files of ``table``, optionally of one posting and a day range, sorted by posting and day."""
        return [p for _, _, p in self._scan(table, posting_id, days)]

    def partitions(self, table: str) -> set[tuple[str, date]]:
        """(posting_id, day) of every partition of ``table`` that has a file."""
        return {(posting_id, day) for posting_id, day, _ in self._scan(table, None, None)}

    def _scan(self, table: str, posting_id: str | None, days: DayRange | None) -> list[tuple[str, date, Path]]:
        name = _file_name(table)
        base = self.root / table
        if posting_id is not None:
            posting_dirs = [base / f"posting_id={_dir_value(posting_id)}"]
        else:
            posting_dirs = sorted(base.glob("posting_id=*")) if base.is_dir() else []
        found = []
        for posting_dir in posting_dirs:
            if not posting_dir.is_dir():
                continue
            for day_dir in sorted(posting_dir.glob("date=*")):
                try:
                    day = date.fromisoformat(day_dir.name.removeprefix("date="))
                except ValueError:
                    continue  # not ours
                file = day_dir / name
                if (days is None or days.first <= day <= days.last) and file.is_file():
                    found.append((unquote(posting_dir.name.removeprefix("posting_id=")), day, file))
        return found

    # --- writing ----------------------------------------------------------------------------

    def write_partition(
        self,
        posting_id: str,
        day: date,
        raw_records: Sequence[dict[str, Any]],
        candidates: pa.Table,
        steps: pa.Table,
    ) -> PartitionFiles:
        """Write (replace) the three files of one posting x day; an empty day gets empty files."""
        planned = self._plan(posting_id, day, raw_records, candidates, steps)
        for write in planned.writes():
            write()
        return planned.files

    def write_partitions(
        self,
        posting_id: str,
        days: DayRange,
        raw_records: Sequence[dict[str, Any]],
        candidates: pa.Table,
        steps: pa.Table,
    ) -> dict[date, PartitionFiles]:
        """Split one fetch of ``days`` by created_date and write every day of the range (empty ones too).

        Every partition is checked before the first file is written, so a refused slice leaves the lake
        as it was. Files are then written by a small thread pool (fsync, compression and Parquet encoding
        release the GIL: a year of one posting is ~1,100 files, each fsynced twice), one kind at a time:
        every raw file, then every steps file, then every candidates file, so whatever a crash
        interrupts, no table file is newer than its raw file.
        """
        by_day = split_by_day(candidates)
        steps_by_day = split_by_day(steps)
        outside = sorted(str(d) for d in (set(by_day) | set(steps_by_day)) - set(days.days))
        if outside:
            raise ValueError(f"posting {posting_id}: rows created on {outside}, outside the range written ({days})")
        # A raw record goes where its row went: that also covers rows filed under partition_day (no created_at).
        day_of_id = dict(
            zip(candidates["interview_id"].to_pylist(), candidates["created_date"].to_pylist(), strict=True)
        )
        raw_by_day: dict[date, list[dict[str, Any]]] = {}
        for record in raw_records:
            day = day_of_id.get(record.get("interview_id"))
            if day is None:
                raise ValueError(f"posting {posting_id}: raw record {record.get('interview_id')!r} has no table row")
            raw_by_day.setdefault(day, []).append(record)
        planned = [
            self._plan(
                posting_id,
                day,
                raw_by_day.get(day, []),
                by_day.get(day, CANDIDATES.empty()),
                steps_by_day.get(day, WORKFLOW_STEPS.empty()),
            )
            for day in days.days
        ]
        if len(planned) == 1:
            for write in planned[0].writes():
                write()
        else:
            with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="lake-write") as pool:
                for kind in range(3):  # raw, steps, candidates: each kind complete before the next starts
                    for future in [pool.submit(p.writes()[kind]) for p in planned]:
                        future.result()
        return {p.day: p.files for p in planned}

    def _plan(
        self,
        posting_id: str,
        day: date,
        raw_records: Sequence[dict[str, Any]],
        candidates: pa.Table,
        steps: pa.Table,
    ) -> _PlannedPartition:
        """Check one partition's rows and say what to write; nothing is written yet."""
        candidates = _conform(candidates, CANDIDATES, posting_id, day)
        steps = _conform(steps, WORKFLOW_STEPS, posting_id, day)
        raw_ids = sorted(str(r.get("interview_id")) for r in raw_records)
        if raw_ids != sorted(candidates["interview_id"].to_pylist()):
            raise ValueError(
                f"posting {posting_id} {day}: the raw records ({len(raw_ids)}) are not the candidates of the "
                f"table ({candidates.num_rows}); the raw partition must be able to rebuild the table"
            )
        files = PartitionFiles(*(self.path(t, posting_id, day) for t in (CANDIDATES.name, WORKFLOW_STEPS.name, RAW)))
        return _PlannedPartition(self, day, files, raw_records, candidates, steps)

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
        """The rows of a Parquet table (optionally one posting / day range) with its declared schema."""
        spec = _PARQUET.get(table)
        if spec is None:
            raise ValueError(f"{table!r} is not a Parquet table of the lake; known: {sorted(_PARQUET)}")
        parts = [pq.read_table(p, partitioning=None).cast(spec.schema) for p in self.paths(table, posting_id, days)]
        return pa.concat_tables(parts) if parts else spec.empty()

    def read_raw(self, posting_id: str, day: date) -> list[dict[str, Any]]:
        """The records the API returned for one posting x day, as it returned them."""
        path = self.path(RAW, posting_id, day)
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            return [json.loads(line) for line in lines]


def _file_name(table: str) -> str:
    if table not in _FILE_NAMES:
        raise ValueError(f"unknown lake table {table!r}; known: {sorted(_FILE_NAMES)}")
    return _FILE_NAMES[table]


def _conform(table: pa.Table, spec: TableSpec, posting_id: str, day: date) -> pa.Table:
    """The table with its declared schema (descriptions included), if every row belongs to this partition."""
    if table.column_names != spec.names:
        raise ValueError(f"{spec.name}: columns {table.column_names} are not the declared {spec.names}")
    table = table.cast(spec.schema)
    for column, value in (("posting_id", posting_id), ("created_date", day)):
        same = pc.equal(table[column], pa.scalar(value, table.schema.field(column).type))
        strays = table.num_rows - pc.sum(pc.fill_null(same, False).cast(pa.int64())).as_py() if table.num_rows else 0
        if strays:
            rows = f"{strays} row(s) with a {column} other than {value}"
            raise ValueError(f"{spec.name}: {rows} cannot be written to the partition of posting {posting_id}, {day}")
    return table


def _write_parquet(file: IO[bytes], table: pa.Table) -> None:
    pq.write_table(table, file, compression="zstd", row_group_size=ROW_GROUP_ROWS)


def _json_line(record: dict[str, Any]) -> bytes:
    # pydantic's Rust serializer is ~3x faster than json.dumps, and as exact (key order, big ints, floats);
    # json.dumps takes over for what it refuses, e.g. a lone surrogate from a "\ud800" escape.
    try:
        return pydantic_core.to_json(record) + b"\n"
    except pydantic_core.PydanticSerializationError:
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _write_jsonl_gz(file: IO[bytes], records: Iterable[dict[str, Any]]) -> None:
    # Level 3: twice as fast as the default 6 for a slightly bigger file. mtime=0 and no name: the same
    # records give the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0, compresslevel=3) as out:
        out.write(b"".join(map(_json_line, records)))
