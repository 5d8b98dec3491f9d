"""Local processing, no network: JSON pages -> validated records -> Arrow -> Parquet lake -> DuckDB.

``--impl ours`` runs the pipeline's own code per posting, exactly as a run does it: the client's
``candidate_pages`` (parsing, validation, paging, day selection) fed by an in-memory httpx transport
that answers with cached API pages, ``ingest.fetch_slice`` (flattening), ``ingest.evaluate`` (data
rules), ``Lake.write_partitions`` (raw JSON lines + Parquet per posting x day) and
``Warehouse.replace_slices`` (DuckDB). Pages are read from the cache before each posting's clock
starts, so only processing is timed. ``--impl pandas`` is the baseline: json.loads of every page,
one ``pandas.json_normalize`` of every record, one Parquet file.

Run with PYTHONPATH pointing at an older checkout of ``heymilo_pipeline`` to measure that code.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import pyarrow as pa
from common import (
    YEAR_FIRST,
    YEAR_LAST,
    read_pages,
    replica_cursor,
    replica_id,
    replicate,
    vm_hwm,
    vm_rss,
    write_result,
)


def posting_plan(cache: Path, replicas: int, limit: int | None) -> list[tuple[str, str, dict]]:
    """(posting_id, base_posting_id, base index entry) for every posting of the data set."""
    index = json.loads((cache / "index.json").read_text())
    plan = [(replica_id(e["posting_id"], r), e["posting_id"], e) for r in range(replicas) for e in index]
    return plan[:limit] if limit else plan


def run_ours(cache: Path, replicas: int, limit: int | None, work: Path) -> dict:
    import heymilo_pipeline
    from heymilo_pipeline import ingest
    from heymilo_pipeline.api.client import HeyMiloClient
    from heymilo_pipeline.api.settings import ClientSettings
    from heymilo_pipeline.api.windows import DayRange
    from heymilo_pipeline.ingest import Slice, evaluate
    from heymilo_pipeline.lake import Lake
    from heymilo_pipeline.quality import ScoreBounds
    from heymilo_pipeline.warehouse import SliceFiles, Warehouse

    days = DayRange(YEAR_FIRST, YEAR_LAST)
    lake = Lake(work / "lake")
    warehouse = Warehouse(work / "bench.duckdb")
    warehouse.ensure_schema()
    settings = ClientSettings(
        api_key="sk_local", base_url="http://local.bench", rate_limit=10**9, state_dir=work / ".ratelimit"
    )
    stages = dict.fromkeys(("fetch_validate_flatten", "evaluate", "write_lake", "load_duckdb"), 0.0)
    rows = steps = partitions = lake_files = requests = 0
    rss_after_imports = vm_hwm()
    rss_by_posting: list[int] = []  # resident set after each posting: flat when nothing accumulates
    served: dict[str, tuple[list[bytes], dict[str | None, int]]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        posting_id = request.url.path.split("/")[4]
        pages, by_cursor = served[posting_id]
        cursor = parse_qs(request.url.query.decode()).get("starting_after", [None])[0]
        return httpx.Response(200, content=pages[by_cursor[cursor]], headers={"content-type": "application/json"})

    async def fetch(posting_id: str):
        async with HeyMiloClient(settings, transport=httpx.MockTransport(handler)) as client:
            # One walk of the cached pages (they answer the whole range, whatever created_after/before say):
            # this measures local processing, not how a posting is split. (The baseline's code has no splits.)
            one_walk = {"max_splits": 1} if "max_splits" in inspect.signature(ingest.fetch_slice).parameters else {}
            return await ingest.fetch_slice(client, Slice(posting_id, days), **one_walk)

    for posting_id, base_id, entry in posting_plan(cache, replicas, limit):
        served.clear()
        served[posting_id] = (
            replicate(read_pages(cache, base_id), base_id, posting_id),
            {replica_cursor(c, base_id, posting_id): i for i, c in enumerate(entry["cursors"])},
        )
        t0 = time.perf_counter()
        fetched = asyncio.run(fetch(posting_id))
        t1 = time.perf_counter()
        findings = evaluate(fetched, ScoreBounds())
        failed = [name for name, f in findings.items() if not f.passed]
        if failed:
            raise SystemExit(f"posting {posting_id}: data rules failed: {failed}")
        t2 = time.perf_counter()
        files = lake.write_partitions(
            fetched.slice.posting_id, fetched.slice.days, fetched.raw, fetched.candidates, fetched.steps
        )
        t3 = time.perf_counter()
        plan = SliceFiles(posting_id, days, [f.candidates for f in files.values()], [f.steps for f in files.values()])
        warehouse.replace_slices([plan], "bench")
        t4 = time.perf_counter()
        for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name] += seconds
        rows += fetched.candidates.num_rows
        steps += fetched.steps.num_rows
        partitions += len(days)  # every posting-day of the year is loaded, empty or not
        lake_files += 3 * len(files)  # three files per posting-month
        requests += fetched.stats.requests
        del fetched, files, plan
        served.clear()
        rss_by_posting.append(vm_rss())
    counts = warehouse.table_counts()
    if counts["candidates"] != rows:
        raise SystemExit(f"DuckDB holds {counts['candidates']} candidates, {rows} were processed")
    seconds = sum(stages.values())
    return {
        "impl": "ours",
        "code": str(Path(heymilo_pipeline.__file__).parent),
        "candidates": rows,
        "workflow_steps": steps,
        "partitions": partitions,
        "lake_files": lake_files,
        "requests": requests,
        "seconds": seconds,
        "candidates_per_s": rows / seconds,
        "stages": stages,
        "rss_after_imports": rss_after_imports,
        "rss_by_posting": rss_by_posting,
        "gc_enabled": gc.isenabled(),
    }


def run_costs(cache: Path, replicas: int, limit: int | None, work: Path) -> dict:
    """Microseconds per candidate of each piece of the processing, on one cached posting-year, each piece
    timed alone (best of three), so the stages of ``ours`` can be explained piece by piece."""
    import pydantic_core

    from heymilo_pipeline import flatten as fl
    from heymilo_pipeline.lake import raw_json
    from heymilo_pipeline.warehouse import Warehouse

    _, base_id, entry = posting_plan(cache, 1, 1)[0]
    pages = read_pages(cache, base_id)
    n = entry["total"]
    costs: dict[str, float] = {}

    def timed(label: str, fn):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - t0)
        costs[label] = best * 1e6 / n
        return result

    def parse_each() -> None:
        for body in pages:  # each page dropped after parsing, as the pipeline does
            pydantic_core.from_json(body, cache_strings="keys")

    # Deliverable 4 of the overhead issue: DuckDB's JSON reader instead of Python objects per candidate,
    # against today's path doing the same work (parse, validate and flatten to both tables, raw text).
    # Timed first: the records kept below for the other rows would slow today's path (the collector
    # walks them), which a run never keeps.
    def today() -> None:
        for i in range(0, len(pages), 5):  # pages of 100 -> batches of 500, as fetch_slice does
            parsed = [pydantic_core.from_json(body, cache_strings="keys") for body in pages[i : i + 5]]
            batch = [r for page in parsed for r in page["data"]]
            fl.flatten(batch)
            raw_json(batch)

    timed("today's path: parse + flatten (both tables) + raw text", today)
    reader = _JsonReader(work, pages)
    timed("DuckDB read_json of the pages as sent: both tables + raw text", reader.pages)
    timed("DuckDB read_json, one record per line (not how pages come): both tables + raw text", reader.records)
    timed("parse JSON (pydantic-core)", parse_each)
    records = [r for body in pages for r in pydantic_core.from_json(body, cache_strings="keys")["data"]]
    batches = [records[i : i + 500] for i in range(0, len(records), 500)]
    timed("typed Arrow conversion + required-field checks", lambda: [fl.validated_records(b) for b in batches])
    timed("unknown-field scan", lambda: [fl._unknown_fields(b) for b in batches])
    timed("data/metadata as JSON text", lambda: [[fl.json_text(r.get("data")) for r in b] for b in batches])
    tables = timed("flatten, all of it (batches of 500)", lambda: [fl.flatten(b) for b in batches])
    timed("raw record JSON text (lake)", lambda: [raw_json(b) for b in batches])
    candidates = pa.concat_tables([c for c, _ in tables])
    steps = pa.concat_tables([s for _, s in tables])
    timed("Parquet, candidates + steps (zstd, in memory)", lambda: _parquet_bytes(candidates, steps))
    warehouse = Warehouse(work / "costs.duckdb")
    warehouse.ensure_schema()

    def insert() -> None:
        with warehouse.connect() as conn:
            for name, table in (("candidates", candidates), ("candidate_workflow_steps", steps)):
                conn.register("incoming", table)
                conn.execute(f"DELETE FROM {name}")
                conn.execute(f"INSERT INTO {name} SELECT * FROM incoming")
                conn.unregister("incoming")

    timed("DuckDB insert from Arrow, candidates + steps", insert)

    return {"impl": "costs", "candidates": n, "us_per_candidate": costs}


class _JsonReader:
    """The DuckDB JSON-reader path, as a lower bound: typed columns, timestamps, days, step counts, the steps
    table and each record's JSON text, from files of the page bodies. Left out, so only ever faster than the
    real thing: unknown fields, the current step, the models' error messages and lax coercions."""

    def __init__(self, work: Path, pages: list[bytes]) -> None:
        import duckdb

        from heymilo_pipeline import flatten as fl

        self.conn = duckdb.connect()
        self.page_file, self.record_file = work / "pages.ndjson", work / "records.ndjson"
        self.page_file.write_bytes(b"".join(body + b"\n" for body in pages))
        lines = (json.dumps(r).encode() + b"\n" for body in pages for r in json.loads(body)["data"])
        self.record_file.write_bytes(b"".join(lines))
        fields = [*fl.RECORD_TYPE, pa.field("data", pa.string()), pa.field("metadata", pa.string())]
        self.conn.register("shape", pa.schema(fields).empty_table())
        types = {name: kind for name, kind, *_ in self.conn.sql("DESCRIBE shape").fetchall()}
        types["data"] = types["metadata"] = "JSON"
        self.record_type = "STRUCT(" + ", ".join(f'"{k}" {v}' for k, v in types.items()) + ")"

    def _flatten(self, records: str) -> None:
        """``records`` yields ``raw`` (the record's JSON text) and ``r`` (the typed record)."""
        ts = "make_timestamp(round({} * 1e6)::BIGINT)".format
        count = "list_count(list_filter(r.workflow.steps, lambda s: s.{}))".format
        summary = ", ".join(f"r.agent_summary.{s}" for s in ("resume", "web_interview", "sms", "form"))
        self.conn.execute(f"CREATE OR REPLACE TEMP TABLE recs AS {records}")
        self.conn.sql(
            f"SELECT r.interview_id, r.posting_id, r.candidate_id, r.name, r.email, r.status, r.score,"
            f" r.interview_url, coalesce(r.shortlisted, false), coalesce(r.dismissed, false),"
            f" {ts('r.created_at')}, DATE '1970-01-01' + floor(r.created_at / 86400)::INT, {ts('r.interviewed_at')},"
            f" r.workflow.all_complete, {ts('r.workflow.last_activity_at')}, len(r.workflow.steps),"
            f" {count('started')}, {count('completed')}, {count('knocked_out')}, {summary},"
            f" r.data::VARCHAR, r.metadata::VARCHAR, raw FROM recs"
        ).to_arrow_table()
        self.conn.sql(
            f"SELECT r.interview_id, r.posting_id, s.step_id, s.order, s.status, s.started, s.completed,"
            f" coalesce(s.knocked_out, false), {ts('s.last_updated_at')}"
            f" FROM (SELECT r, unnest(r.workflow.steps) AS s FROM recs)"
        ).to_arrow_table()

    def pages(self) -> None:
        # The fastest form found for whole pages: each page as one JSON value, its records split out by
        # path, then cast. read_json with the records' type as a column reads pages ~10x slower.
        pages = f"read_ndjson_objects('{self.page_file}', maximum_object_size=1000000000)"
        split = f"SELECT unnest(json_extract(json, '$.data[*]')) AS j FROM {pages}"
        self._flatten(f"SELECT j::VARCHAR AS raw, j::{self.record_type} AS r FROM ({split})")

    def records(self) -> None:
        objects = f"read_ndjson_objects('{self.record_file}')"
        self._flatten(f"SELECT json::VARCHAR AS raw, json::{self.record_type} AS r FROM {objects}")


def _parquet_bytes(*tables: pa.Table) -> int:
    import io

    import pyarrow.parquet as pq

    size = 0
    for table in tables:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        size += buffer.tell()
    return size


def run_pandas(cache: Path, replicas: int, limit: int | None, work: Path) -> dict:
    import pandas as pd

    rss_after_imports = vm_hwm()
    plan = posting_plan(cache, replicas, limit)
    all_pages = [p for pid, base, _ in plan for p in replicate(read_pages(cache, base), base, pid)]
    t0 = time.perf_counter()
    records = [r for body in all_pages for r in json.loads(body)["data"]]
    frame = pd.json_normalize(records)
    t1 = time.perf_counter()
    try:
        frame.to_parquet(work / "pandas.parquet", compression="zstd")
        note = "written as normalized"
    except Exception as exc:  # mixed-type object columns: Arrow refuses them, as a user would meet it
        mixed = [c for c in frame.columns if frame[c].dtype == object]
        frame[mixed] = frame[mixed].astype(str)
        frame.to_parquet(work / "pandas.parquet", compression="zstd")
        note = f"object columns cast to str after: {type(exc).__name__}: {str(exc)[:120]}"
    t2 = time.perf_counter()
    return {
        "impl": "pandas",
        "candidates": len(records),
        "columns": len(frame.columns),
        "seconds": t2 - t0,
        "candidates_per_s": len(records) / (t2 - t0),
        "stages": {"json_loads_normalize": t1 - t0, "to_parquet": t2 - t1},
        "note": note,
        "rss_after_imports": rss_after_imports,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impl", choices=("ours", "pandas", "costs"), default="ours")
    parser.add_argument("--cache", type=Path, required=True, help="a page cache made by common.page_cache")
    parser.add_argument("--replicas", type=int, default=1, help="copies of the cached postings (new posting ids)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N postings")
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent / ".work") as work:
        run = {"ours": run_ours, "pandas": run_pandas, "costs": run_costs}[args.impl]
        result = run(args.cache, args.replicas, args.limit, Path(work))
        result["peak_rss_self"] = vm_hwm()
        write_result(args.out, result)


if __name__ == "__main__":
    main()
