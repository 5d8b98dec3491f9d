"""The shared tables: DuckLake, with its catalog in PostgreSQL and its data files on S3 (or any path).

What several hosts can share where the single-machine setup has local month files and one DuckDB file: every
table the pipeline writes (``raw_candidates``, ``candidates``, ``candidate_workflow_steps``,
``partition_loads``, ``postings``, the interview results and ``raw_interview_results``), with the same columns
and comments as the DuckDB warehouse, minus the primary keys (DuckLake has none; a slice's replacement deletes
what it inserts, so keys stay unique).

- A slice (posting x days) is replaced in ONE DuckLake transaction: its raw records, rows, steps and the
  days it covers. A host killed before the commit leaves data files no snapshot references, never a half
  slice.
- Two writers always conflict: each write first updates the one row of ``heymilo_writes`` (``SERIALIZE``), and
  DuckLake refuses the later commit. The write then starts over from scratch, with jittered backoff, a bounded
  number of times; nothing of the losing attempt is visible. (DuckLake alone refuses only a commit that inserts
  where the other deleted: two first loads of the same days, deleting nothing, would both commit.)
- ``publish`` copies the tables into a DuckDB file for notebooks, in one transaction on that file (DuckDB's
  lock on the file: one loader at a time), all read from one snapshot.
- ``attach_sql`` is what an analyst runs to read the shared tables directly, read-only.

DuckDB cannot download extensions here, so ducklake, httpfs and postgres_scanner are loaded from the
``duckdb-extension-*`` wheels (the production extra); each is built for one DuckDB release.
"""

from __future__ import annotations

import importlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa

from heymilo_pipeline.api.limits import POSTGRES_SCHEMES, libpq_url
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.lake import conform, raw_table
from heymilo_pipeline.storage import SliceRows, StorageBusyError, StorageError
from heymilo_pipeline.storage.reads import delete_orphan_results
from heymilo_pipeline.tables import (
    CANDIDATES,
    PARTITION_LOADS,
    POSTINGS,
    RAW_RECORDS,
    RAW_RESULTS,
    RESULT_TABLES,
    WAREHOUSE_TABLES,
    WORKFLOW_STEPS,
    TableSpec,
)
from heymilo_pipeline.warehouse import LOADS_OF_SLICE, Warehouse, quoted_names, replace_results

log = logging.getLogger("heymilo_pipeline.shared_tables")

LAKE = "heymilo_lake"  # the name the catalog is attached under
EXTENSIONS = ("ducklake", "httpfs", "postgres_scanner")
TABLES = (RAW_RECORDS, CANDIDATES, WORKFLOW_STEPS, PARTITION_LOADS, POSTINGS, RAW_RESULTS, *RESULT_TABLES)
RESULTS = (*RESULT_TABLES, RAW_RESULTS)  # what a write of results replaces, the raw records last
SLICE_TABLES = (RAW_RECORDS, CANDIDATES, WORKFLOW_STEPS)  # what a slice replaces (partition_loads besides)
# DuckLake sees no conflict between two transactions that delete nothing and insert the same rows: two hosts loading
# the same posting-days for the first time would both commit, and every row would be there twice. Each write
# therefore first updates the one row of this table, and of two writers at once the later commit always fails.
WRITES_TABLE = "heymilo_writes"
SERIALIZE = f'UPDATE "{WRITES_TABLE}" SET writes = writes + 1'
# Every slice write deletes from and inserts into the same tables, so two writers at once always conflict and
# one starts over; with the pauses below, 12 attempts wait up to ~40 s in all, enough for hosts that each commit
# in well under a second.
ATTEMPTS = 12
BACKOFF_S = (0.1, 5.0)  # first and largest pause between attempts, jittered
# How long maintenance keeps expired snapshots (time travel) and a killed write's files.
RETENTION = timedelta(days=1)
_CONFLICT = "Transaction conflict"
T = TypeVar("T")


class SharedTablesError(StorageError):
    """The shared tables cannot be reached or written; the message says which and what to do."""


class SharedTablesBusyError(SharedTablesError, StorageBusyError):
    """Other writers won every attempt at one commit."""


# AWS's usual variables, read as every S3 client reads them (not HEYMILO_* settings).
S3_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
)  # fmt: skip


@dataclass(frozen=True)
class S3:
    """Credentials and endpoint of S3-compatible storage (from AWS's usual environment variables)."""

    key_id: str
    secret: str
    region: str = "us-east-1"
    endpoint: str | None = None  # http(s)://host:port of a non-AWS server (MinIO, moto, R2 ...)
    session_token: str | None = None  # temporary credentials (an assumed role)

    def __repr__(self) -> str:
        return f"S3(region={self.region!r}, endpoint={self.endpoint!r})"  # never the key or secret

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> S3 | None:
        key_id, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
        if not key_id or not secret:
            return None
        endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(key_id, secret, region, endpoint, environ.get("AWS_SESSION_TOKEN") or None)

    def secret_sql(self) -> str:
        options = {"KEY_ID": self.key_id, "SECRET": self.secret, "REGION": self.region}
        if self.session_token:
            options["SESSION_TOKEN"] = self.session_token
        use_ssl = "true"
        if self.endpoint:
            # AWS's variable is a URL; a bare host:port is taken as HTTPS, as the AWS CLI would.
            parts = urlsplit(self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}")
            options |= {"ENDPOINT": parts.netloc, "URL_STYLE": "path"}
            use_ssl = "false" if parts.scheme == "http" else "true"
        listed = ", ".join(f"{name} {_literal(value)}" for name, value in options.items())
        return f"CREATE OR REPLACE SECRET heymilo_s3 (TYPE s3, {listed}, USE_SSL {use_ssl})"


@dataclass(frozen=True)
class Catalog:
    """Where the shared tables live: a PostgreSQL database (the catalog) and a data path (s3://... or a dir)."""

    url: str  # postgresql://user:password@host:port/db; the password is never shown
    data_path: str
    s3: S3 | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(POSTGRES_SCHEMES):
            raise SharedTablesError(
                f"the shared tables' catalog must be a PostgreSQL URL ({', '.join(POSTGRES_SCHEMES)}...)"
            )
        if self.data_path.startswith("s3://") and self.s3 is None:
            raise SharedTablesError(
                f"the shared tables' data path {self.data_path} is on S3, but AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY are not set (and AWS_ENDPOINT_URL for storage other than AWS)"
            )

    def __repr__(self) -> str:
        return f"Catalog({self.shown_url!r}, {self.data_path!r})"

    @property
    def shown_url(self) -> str:
        """The URL without its password: what errors and logs may name."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{user}{host}{port}{parts.path}"

    def attach_sql(self, read_only: bool = False) -> str:
        """The ATTACH statement (after the extensions and the S3 secret); it holds the password, if any."""
        dsn = libpq_url(self.url)
        options = [f"DATA_PATH {_literal(self.data_path)}"] + (["READ_ONLY"] if read_only else [])
        return f"ATTACH {_literal('ducklake:postgres:' + dsn)} AS {LAKE} ({', '.join(options)})"

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB connection (TimeZone UTC) whose default catalog is the shared tables."""
        conn = duckdb.connect()
        try:
            conn.execute("SET TimeZone = 'UTC'")
            self.attach(conn, read_only)
            with self.scrubbed():
                conn.execute(f"USE {LAKE}")
                yield conn
        finally:
            conn.close()

    def attach(self, conn: duckdb.DuckDBPyConnection, read_only: bool = False) -> None:
        """Attach the shared tables to ``conn`` as ``heymilo_lake`` (extensions and S3 secret first)."""
        for name in EXTENSIONS:
            conn.execute(f"LOAD {_literal(str(extension_path(name)))}")
        if self.s3 is not None:
            conn.execute(self.s3.secret_sql())
        try:
            conn.execute(self.attach_sql(read_only))
        except duckdb.Error as exc:
            raise SharedTablesError(
                f"cannot attach the shared tables (catalog {self.shown_url}, data {self.data_path}): "
                f"{self.scrub(str(exc))}. Check that the database is reachable and that its user may create tables "
                "(the first writer creates DuckLake's catalog tables)."
            ) from None

    def scrub(self, text: str) -> str:
        """``text`` without the URL's password (DuckDB's postgres extension repeats the URL in its errors)."""
        password = urlsplit(self.url).password
        for url in (self.url, libpq_url(self.url)):
            text = text.replace(url, self.shown_url)
        return text.replace(password, "***") if password else text

    @contextmanager
    def scrubbed(self) -> Iterator[None]:
        """DuckDB errors raised in the block, of the same type, without the password."""
        try:
            yield
        except duckdb.Error as exc:
            text = self.scrub(str(exc))
            if text == str(exc):
                raise
            raise type(exc)(text) from None


def extension_path(name: str) -> Path:
    """The extension file a ``duckdb-extension-<name>`` wheel ships for the running DuckDB."""
    package = f"duckdb_extension_{name}"
    version = duckdb.__version__
    wanted = f"pip install 'duckdb=={version}' 'duckdb-extension-{name.replace('_', '-')}=={version}'"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise SharedTablesError(f"the DuckDB extension {name} is not installed: {wanted}") from None
    path = Path(module.__file__ or "").parent / "extensions" / f"v{version}" / f"{name}.duckdb_extension"
    if not path.is_file():
        built = sorted(p.name for p in path.parent.parent.glob("v*"))
        raise SharedTablesError(
            f"the DuckDB extension {name} was built for DuckDB {', '.join(built) or '?'}, not {version}: {wanted}"
        )
    return path


class SharedTables:
    """The pipeline's tables in one DuckLake (see the module docstring)."""

    def __init__(self, catalog: Catalog, attempts: int = ATTEMPTS) -> None:
        self.catalog = catalog
        self.attempts = attempts
        self.conflicts = 0  # commits lost to another writer (and then retried), since this object was made
        self._base: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SharedTables({self.catalog!r})"

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection whose default catalog is the shared tables, closed on exit.

        Loading the three extensions and attaching the catalog costs ~0.25 s, more than a posting's transaction:
        it is done once per object, and each session is a cursor of that attached database (thread-safe).
        """
        with self._lock:
            if self._base is None:
                base = duckdb.connect()
                try:
                    self.catalog.attach(base)
                except BaseException:
                    base.close()
                    raise
                self._base = base
            cursor = self._base.cursor()
        try:
            # After the attach, DuckDB opens PostgreSQL connections as it needs them (a dropped one, a bigger
            # pool), even for USE: their errors repeat the URL, password included.
            with self.catalog.scrubbed():
                cursor.execute("SET TimeZone = 'UTC'")
                cursor.execute(f"USE {LAKE}")
                yield cursor
        finally:
            cursor.close()

    def ensure_schema(self) -> None:
        """Create missing tables and columns and apply every comment. Idempotent, and safe to race."""
        self.write("creating the shared tables", _create, serialize=False)

    def replace_slices(self, slices: Sequence[SliceRows], run_id: str) -> dict[str, int]:
        """Replace every slice (its raw records, rows, steps and covered days) in ONE transaction.

        Every slice is checked first (columns, posting, days), so a refused one writes nothing. A candidate now
        under one of the days leaves whatever day or posting held it before. Returns rows inserted per table.
        """
        checked = [_checked(s) for s in slices]
        where = "; ".join(f"posting {s.posting_id}, days {s.days}" for s in slices[:5])
        return self.write(where, lambda conn: _replace(conn, checked, run_id))

    def replace_results(self, tables: Mapping[str, pa.Table], remove: Sequence[str] = ()) -> dict[str, int]:
        """Replace interview results (``interview_results.flatten``'s tables, the raw records' included) and remove
        those of ``remove``, in ONE transaction; returns rows inserted per table."""
        return self.write(f"results of {len(tables[RAW_RESULTS.name])} interview(s)",
                          lambda conn: replace_results(conn, tables, remove, RESULTS))  # fmt: skip

    def delete_posting(self, posting_id: str) -> dict[str, int]:
        """Remove every row of one posting (all tables but postings), in one transaction."""
        tables = (*SLICE_TABLES, PARTITION_LOADS, *RESULTS)

        def delete(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
            return {
                t.name: conn.execute(f'DELETE FROM "{t.name}" WHERE posting_id = ?', [posting_id]).fetchone()[0]
                for t in tables
            }

        return self.write(f"posting {posting_id}", delete)

    def read(self, table: TableSpec, posting_id: str | None = None, days: DayRange | None = None) -> pa.Table:
        """A table's rows (optionally one posting and day range) as Arrow, with its declared schema."""
        where, params = _where(posting_id, days)
        with self.session() as conn:
            found = conn.execute(f'SELECT {quoted_names(table)} FROM "{table.name}"{where}', params).to_arrow_table()
        return found.cast(table.schema)

    def maintain(self, keep: timedelta = RETENTION) -> dict[str, int]:
        """Compact and forget: merge the small files that daily updates add, expire snapshots older than ``keep``
        and delete their files, and delete files that killed writes left (older than ``keep`` too, so a write in
        progress keeps its own). Until then a deleted candidate is still in older snapshots' files: ``keep`` is
        how long personal data outlives its deletion. Returns how many of each were done."""
        since = f"now() - INTERVAL '{int(keep.total_seconds())} seconds'"
        steps = {
            "files_merged": f"CALL ducklake_merge_adjacent_files('{LAKE}')",
            "snapshots_expired": f"CALL ducklake_expire_snapshots('{LAKE}', older_than => {since})",
            "old_files_deleted": f"CALL ducklake_cleanup_old_files('{LAKE}', cleanup_all => true)",
            "orphaned_files_deleted": f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => {since})",
        }
        done = {}
        with self.session() as conn:
            for name, sql in steps.items():
                done[name] = self.retrying(f"maintenance ({name})", lambda sql=sql: len(conn.execute(sql).fetchall()))
        return done

    def publish(self, path: Path | str, lock_timeout_s: float = 300.0) -> dict[str, int]:
        """Copy the warehouse's tables (candidates, steps, partition_loads, postings; not the raw records) from the
        shared tables into the DuckDB file at ``path``, in one transaction on the file.

        The file gets the warehouse's schema (keys and comments) and exactly the shared tables' rows of one
        snapshot. DuckDB's lock on the file makes loaders take turns (each waits up to ``lock_timeout_s``); readers
        of the file see the previous copy until the commit. Returns rows per table.
        """
        with self.session():
            pass  # an unreachable catalog fails here, before the file is created or touched
        warehouse = Warehouse(path, lock_timeout_s=lock_timeout_s)
        warehouse.ensure_schema()
        with warehouse.connect() as conn:
            self.catalog.attach(conn, read_only=True)
            conn.execute("BEGIN TRANSACTION")
            try:
                with self.catalog.scrubbed():
                    for table in WAREHOUSE_TABLES:
                        names = quoted_names(table)
                        conn.execute(f'DELETE FROM "{table.name}"')
                        conn.execute(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM {LAKE}."{table.name}"')
                    counts = {
                        t.name: conn.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0] for t in WAREHOUSE_TABLES
                    }
            except duckdb.ConstraintException as exc:
                conn.execute("ROLLBACK")
                raise SharedTablesError(
                    f"the shared tables hold a key twice, which the DuckDB file refuses ({exc}); {path} keeps its "
                    "previous copy. The warehouse checks (unique_interview_id) name the rows."
                ) from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return counts

    def retrying(self, where: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` (one whole transaction), again while another writer wins the commit: at most
        ``attempts`` times, with jittered exponential pauses. ``where`` names the write in the error."""
        pause = BACKOFF_S[0]
        for number in range(1, self.attempts + 1):
            try:
                return attempt()
            except duckdb.TransactionException as exc:
                if _CONFLICT not in str(exc):
                    raise
                with self._lock:
                    self.conflicts += 1
                if number == self.attempts:
                    raise SharedTablesBusyError(
                        f"{where}: another writer of the shared tables won each of {self.attempts} attempts to "
                        "commit; nothing of this write is in the tables. Rerun it: it replaces whole slices, so "
                        "running it again is safe."
                    ) from None
                log.info("%s: commit conflicted with another writer (attempt %d); retrying", where, number)
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, BACKOFF_S[1])
        raise AssertionError("unreachable")

    def write(self, where: str, work: Callable[[duckdb.DuckDBPyConnection], T], *, serialize: bool = True) -> T:
        """``work(conn)`` in one transaction on one connection, retried on conflict; ``serialize`` makes it conflict
        with every other write at once (``SERIALIZE``)."""
        with self.session() as conn:

            def attempt() -> T:
                conn.execute("BEGIN TRANSACTION")
                try:
                    if serialize:
                        conn.execute(SERIALIZE)
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    # A failed commit has already ended the transaction; a failed statement has not.
                    with suppress(duckdb.Error):
                        conn.execute("ROLLBACK")
                    raise
                return result

            return self.retrying(where, attempt)


def shared_tables_at(url: str, data_path: str, environ: Mapping[str, str]) -> SharedTables:
    """The shared tables of a catalog URL and a data path, with S3 credentials from AWS's variables."""
    return SharedTables(Catalog(url, data_path, S3.from_environ(environ)))


def _create(conn: duckdb.DuckDBPyConnection) -> None:
    """Missing tables and columns, and comments that differ (each changed statement is a catalog write; an
    unchanged schema writes nothing, so runs do not pile up empty snapshots)."""
    comments = {
        (table, column): comment
        for table, column, comment in conn.execute(
            "SELECT table_name, NULL, comment FROM duckdb_tables() WHERE database_name = ?1 UNION ALL "
            "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE database_name = ?1",
            [LAKE],
        ).fetchall()
    }
    if (WRITES_TABLE, None) not in comments:
        conn.execute(f'CREATE TABLE "{WRITES_TABLE}" (writes BIGINT NOT NULL)')
        conn.execute(f'INSERT INTO "{WRITES_TABLE}" VALUES (0)')
        note = "The count of writes: each write updates it, so two writes at once conflict."
        conn.execute(f"COMMENT ON TABLE \"{WRITES_TABLE}\" IS '{note}'")
    for table in TABLES:
        if (table.name, None) not in comments:
            conn.execute(table.create_sql(primary_key=False))
        for column in table.columns:
            if (table.name, None) in comments and (table.name, column.name) not in comments:
                # A column added in a later release; old rows get NULL.
                conn.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {column.sql_type}')
        for statement in table.changed_comments({c: text for (t, c), text in comments.items() if t == table.name}):
            conn.execute(statement)


def _checked(item: SliceRows) -> SliceRows:
    candidates = conform(item.candidates, CANDIDATES, item.posting_id, item.days)
    steps = conform(item.steps, WORKFLOW_STEPS, item.posting_id, item.days)
    raw = raw_table(item.posting_id, item.days, item.raw, candidates)
    return SliceRows(item.posting_id, item.days, raw, candidates, steps)


def _replace(conn: duckdb.DuckDBPyConnection, slices: Sequence[SliceRows], run_id: str) -> dict[str, int]:
    inserted = {t.name: 0 for t in SLICE_TABLES}
    for item in slices:
        bounds = [item.posting_id, item.days.first, item.days.last]
        rows = {RAW_RECORDS.name: item.raw, CANDIDATES.name: item.candidates, WORKFLOW_STEPS.name: item.steps}
        conn.register("heymilo_incoming_ids", item.candidates.select(["interview_id"]))
        try:
            # A candidate now under one of these days leaves whatever day (or posting) held it before:
            # interview_id is the key of the whole table. Those days' counts change too.
            moved = conn.execute(
                "SELECT DISTINCT posting_id, created_date FROM candidates WHERE interview_id IN "
                "(SELECT interview_id FROM heymilo_incoming_ids) "
                "AND NOT (posting_id = ? AND created_date BETWEEN ? AND ?)",
                bounds,
            ).fetchall()
            for table in SLICE_TABLES:
                conn.execute(
                    f'DELETE FROM "{table.name}" WHERE (posting_id = ? AND created_date BETWEEN ? AND ?) '
                    "OR interview_id IN (SELECT interview_id FROM heymilo_incoming_ids)",
                    bounds,
                )
                if rows[table.name].num_rows:
                    conn.register("heymilo_incoming", rows[table.name])
                    names = quoted_names(table)
                    conn.execute(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM heymilo_incoming')
                    conn.unregister("heymilo_incoming")
                inserted[table.name] += rows[table.name].num_rows
        finally:
            conn.unregister("heymilo_incoming_ids")
        conn.execute(
            f'DELETE FROM "{PARTITION_LOADS.name}" WHERE posting_id = ? AND partition_date BETWEEN ? AND ?', bounds
        )
        conn.execute(_RECORD_LOADS, [item.posting_id, run_id, item.days.first, item.days.last])
        delete_orphan_results(conn, *bounds, tables=RESULTS)
        for posting_id, day in moved:
            conn.execute(
                f'UPDATE "{PARTITION_LOADS.name}" SET rows = (SELECT count(*) FROM candidates '
                "WHERE posting_id = ?1 AND created_date = ?2) WHERE posting_id = ?1 AND partition_date = ?2",
                [posting_id, day],
            )
            delete_orphan_results(conn, posting_id, day, day, tables=RESULTS)
    return inserted


# DuckLake has no keys to replace on: the caller deleted the slice's days first.
_RECORD_LOADS = f'INSERT INTO "{PARTITION_LOADS.name}" {LOADS_OF_SLICE}'


def _where(posting_id: str | None, days: DayRange | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if posting_id is not None:
        clauses.append("posting_id = ?")
        params.append(posting_id)
    if days is not None:
        clauses.append("created_date BETWEEN ? AND ?")
        params += [days.first, days.last]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
