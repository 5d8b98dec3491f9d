"""The reads and audits both stores answer with the same SQL, each on its own connection (``TableReads.connect``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Any

import duckdb
import pyarrow as pa

from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.interview_results import FINISHED_SQL, doubled_keys_sql, out_of_range_sql, state_sql
from heymilo_pipeline.tables import INTERVIEW_RESULTS, RESULT_TABLES, WAREHOUSE_TABLES, TableSpec

# Statuses after which a candidate's record rarely changes: a recruiter (or a knockout) has decided.
FINAL_STATUSES = ("shortlisted", "dismissed", "knocked_out")
# interview_ids stored more than once in a source ({}): (id, times, postings, days)
DOUBLED_IDS = (
    "SELECT interview_id, count(*) AS n, list(DISTINCT posting_id) AS postings, "
    "list(created_date ORDER BY created_date) AS days FROM {} GROUP BY 1 HAVING count(*) > 1 ORDER BY 1"
)


class TableReads:
    """Reads over the warehouse tables; a store provides ``connect`` and ``exists``."""

    def connect(self, read_only: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def table_counts(self) -> dict[str, int]:
        with self.connect(read_only=True) as conn:
            return table_counts(conn)

    def rows_by_day(self, posting_ids: Sequence[str], days: DayRange) -> dict[str, dict[date, int]]:
        """Stored candidates per posting and created_date within ``days`` (days without rows absent), in one query."""
        sql = (
            "SELECT posting_id, created_date, count(*) FROM candidates "
            "WHERE posting_id IN (SELECT unnest(?)) AND created_date BETWEEN ? AND ? GROUP BY 1, 2"
        )
        with self.connect(read_only=True) as conn:
            rows = conn.execute(sql, [list(posting_ids), days.first, days.last]).fetchall()
        out: dict[str, dict[date, int]] = {posting_id: {} for posting_id in posting_ids}
        for posting_id, day, n in rows:
            out[posting_id][day] = n
        return out

    def oldest_unfinished_day(self, since: date) -> date | None:
        """The oldest created_date on or after ``since`` holding a candidate no recruiter decision has closed
        (not shortlisted, dismissed or knocked out); None without such a day or without any tables."""
        if not self.exists():
            return None
        sql = (
            "SELECT min(created_date) FROM candidates WHERE created_date >= ? "
            f"AND status NOT IN ({', '.join(repr(s) for s in FINAL_STATUSES)})"
        )
        with self.connect(read_only=True) as conn:
            return conn.execute(sql, [since]).fetchone()[0]

    def loaded_through(self) -> dict[str, date]:
        """Per posting, the newest day in partition_loads."""
        with self.connect(read_only=True) as conn:
            return dict(
                conn.execute("SELECT posting_id, max(partition_date) FROM partition_loads GROUP BY 1").fetchall()
            )

    def loads_by_posting(self) -> list[tuple[str, int, date, date, int]]:
        """Per posting: (posting, days loaded, first day, last day, rows)."""
        with self.connect(read_only=True) as conn:
            return conn.execute(
                "SELECT posting_id, count(*), min(partition_date), max(partition_date), sum(rows)::BIGINT "
                "FROM partition_loads GROUP BY posting_id ORDER BY posting_id"
            ).fetchall()

    def posting_labels(self) -> dict[str, tuple[str, str]]:
        """Per posting, (title, status) of the latest listing: what a person recognises a posting id by."""
        if not self.exists():
            return {}
        with self.connect(read_only=True) as conn:
            rows = conn.execute("SELECT posting_id, title, status FROM postings").fetchall()
        return {posting_id: (title, status) for posting_id, title, status in rows}

    def checksum(self, table: str, exclude: Sequence[str] = ()) -> str:
        """A hash of a table's content that ignores row order: ``"<rows>:<sum>"``.

        Each row is rendered as text (timestamps in UTC) and md5-hashed, and the hashes are summed (not
        XORed, so a duplicated row changes the result). For comparing tables across runs, e.g. in tests.
        """
        if table not in {t.name for t in WAREHOUSE_TABLES}:
            raise ValueError(f"unknown table {table!r}")
        columns = f"* EXCLUDE ({', '.join(quote(c) for c in exclude)})" if exclude else "*"
        rows = f'SELECT {columns} FROM "{table}"'
        sql = f"SELECT count(*), coalesce(sum(md5_number_lower(CAST(r AS VARCHAR))), 0) FROM ({rows}) r"
        with self.connect(read_only=True) as conn:
            count, total = conn.execute(sql).fetchone()
        return f"{count}:{total}"

    def results_due(
        self,
        posting_ids: Sequence[str] | None = None,
        days: DayRange | None = None,
        finished_before: datetime | None = None,
    ) -> pa.Table:
        """Finished candidates (of these postings and days; last active before ``finished_before``) whose results
        are missing or were fetched for another state, newest day first: (interview_id, posting_id, created_date,
        candidate_state)."""
        with self.connect(read_only=True) as conn:
            return results_due(conn, posting_ids, days, finished_before)

    def results_problems(self, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
        with self.connect(read_only=True) as conn:
            return results_problems(conn, limit)

    def orphan_steps(self, limit: int = 10) -> dict[str, Any]:
        """Step rows whose candidate is not in ``candidates`` (or sits under another posting or day)."""
        sql = """
            SELECT s.interview_id, s.posting_id, s.created_date, count(*) FROM candidate_workflow_steps s
            ANTI JOIN candidates c ON c.interview_id = s.interview_id AND c.posting_id = s.posting_id
                AND c.created_date = s.created_date
            GROUP BY ALL ORDER BY 2, 3, 1
        """
        with self.connect(read_only=True) as conn:
            rows = conn.execute(sql).fetchall()
        return {
            "candidates": len(rows),
            "rows": sum(r[3] for r in rows),
            "by_posting": _count_by(r[1] for r in rows),
            "examples": [{"interview_id": i, "posting_id": p, "day": str(d)} for i, p, d, _ in rows[:limit]],
        }


# Finished candidates without results fetched for their current state ({where}: more conditions on c).
_DUE = f"""
    SELECT c.interview_id, c.posting_id, c.created_date, {state_sql("c")} AS candidate_state
    FROM candidates AS c LEFT JOIN "{INTERVIEW_RESULTS.name}" AS r
      ON r.interview_id = c.interview_id AND r.posting_id = c.posting_id AND r.created_date = c.created_date
    WHERE c.status IN {FINISHED_SQL} AND r.candidate_state IS DISTINCT FROM {state_sql("c")}{{where}}
"""


def _due_filter(
    posting_ids: Sequence[str] | None, days: DayRange | None, finished_before: datetime | None
) -> tuple[str, list[Any]]:
    where, params = "", []
    if posting_ids is not None:
        where += " AND c.posting_id IN (SELECT unnest(?))"
        params.append(list(posting_ids))
    if days is not None:
        where += " AND c.created_date BETWEEN ? AND ?"
        params += [days.first, days.last]
    if finished_before is not None:
        where += " AND coalesce(c.workflow_last_activity_at, c.interviewed_at, c.created_at) < ?"
        params.append(finished_before)
    return where, params


def results_due(
    conn: duckdb.DuckDBPyConnection,
    posting_ids: Sequence[str] | None = None,
    days: DayRange | None = None,
    finished_before: datetime | None = None,
) -> pa.Table:
    where, params = _due_filter(posting_ids, days, finished_before)
    sql = _DUE.format(where=where) + " ORDER BY c.created_date DESC, c.posting_id, c.interview_id"
    return conn.execute(sql, params).to_arrow_table()


def results_problems(conn: duckdb.DuckDBPyConnection, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    """What the results tables hold that they must not: values outside the documented ranges, a key twice, rows
    whose candidate is not stored under the same posting and day, and child rows without their interview's row."""

    def rows(sql: str) -> list[dict[str, Any]]:
        result = conn.execute(sql)
        names = [d[0] for d in result.description]
        return [
            {n: (str(v) if isinstance(v, date) else v) for n, v in zip(names, row, strict=True)}
            for row in result.fetchall()
        ]

    orphans = " UNION ALL ".join(
        f"(SELECT '{t.name}' AS table_name, interview_id, posting_id, created_date, count(*) AS n "
        f'FROM "{t.name}" AS r ANTI JOIN candidates AS c ON c.interview_id = r.interview_id '
        f"AND c.posting_id = r.posting_id AND c.created_date = r.created_date GROUP BY ALL ORDER BY ALL LIMIT {limit})"
        for t in RESULT_TABLES
    )
    unparented = " UNION ALL ".join(
        f"(SELECT '{t.name}' AS table_name, interview_id, posting_id, created_date, count(*) AS n "
        f'FROM "{t.name}" AS x ANTI JOIN "{INTERVIEW_RESULTS.name}" AS r ON r.interview_id = x.interview_id '
        f"AND r.posting_id = x.posting_id AND r.created_date = x.created_date GROUP BY ALL ORDER BY ALL LIMIT {limit})"
        for t in RESULT_TABLES
        if t is not INTERVIEW_RESULTS
    )
    return {
        "out_of_range": rows(out_of_range_sql(limit)),
        "doubled_keys": rows(doubled_keys_sql(limit)),
        "without_candidate": rows(orphans),
        "without_interview_row": rows(unparented),
    }


def delete_orphan_results(
    conn: duckdb.DuckDBPyConnection,
    posting_id: str,
    first: date,
    last: date,
    tables: Sequence[TableSpec] = RESULT_TABLES,
) -> int:
    """Results (in ``tables``) of one posting's days whose candidate is no longer stored there (erased, or moved to
    another day or posting): they leave with it. Returns the interviews whose results left."""
    left = 0
    for table in tables:
        deleted = conn.execute(
            f'DELETE FROM "{table.name}" AS r WHERE posting_id = ? AND created_date BETWEEN ? AND ? AND NOT EXISTS '
            "(SELECT 1 FROM candidates AS c WHERE c.interview_id = r.interview_id AND c.posting_id = r.posting_id "
            "AND c.created_date = r.created_date)",
            [posting_id, first, last],
        ).fetchone()[0]
        if table is INTERVIEW_RESULTS:
            left = deleted
    return left


def doubled_ids(conn: duckdb.DuckDBPyConnection, source: str, params: list[Any], limit: int) -> dict[str, Any]:
    """interview_ids stored more than once in ``source`` (a table or a read_parquet call), with examples."""
    rows = conn.execute(DOUBLED_IDS.format(source), params).fetchall()
    examples = [
        {"interview_id": i, "times": n, "postings": p, "days": [str(d) for d in ds]} for i, n, p, ds in rows[:limit]
    ]
    return {"count": len(rows), "examples": examples}


def table_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t.name: conn.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0] for t in WAREHOUSE_TABLES}


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _count_by(values: Iterable[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
