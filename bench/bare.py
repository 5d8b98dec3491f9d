"""The reference floor: a bare loop doing a backfill's work with no pipeline around it.

httpx pages each posting's range (the cursor of page k+1 from page k), orjson parses, pyarrow builds one
table from every posting's records (nested structs as they come, no flattening, no validation, no checks),
writes it as one Parquet file, and DuckDB loads it in one statement. No lake layout, no raw records, no
Dagster, no retries, no rate limiter: what an engineer would write in an afternoon, and the speed a
pipeline should be judged against.

    python bench/bare.py URL --posting ID [--posting ID ...] --first 2025-01-01 --last 2025-12-31
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import click
import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:  # the bench extra brings orjson; without it (CI's smoke test) the stdlib stands in
    from orjson import dumps as _dumps
    from orjson import loads
except ImportError:  # pragma: no cover
    import json

    loads = json.loads

    def _dumps(value: object) -> bytes:
        return json.dumps(value).encode()


from common import KEY, WORK_DIR, write_result


def fetch(client: httpx.Client, posting_id: str, after: str, before: str) -> tuple[list[dict], int]:
    records: list[dict] = []
    requests = 0
    params = {"limit": 100, "created_after": after, "created_before": before}
    while True:
        response = client.get(f"/api/v2/postings/{posting_id}/candidates", params=params)
        response.raise_for_status()
        requests += 1
        body = loads(response.content)
        for record in body["data"]:
            # Free-form objects (any keys, any types) as JSON text, as any loader must store them.
            if record.get("data") is not None:
                record["data"] = _dumps(record["data"]).decode()
        records.extend(body["data"])
        if not body["pagination"]["has_more"] or not body["data"]:
            return records, requests
        params["starting_after"] = body["data"][-1]["interview_id"]


@click.command()
@click.argument("url")
@click.option("--posting", "postings", multiple=True, required=True)
@click.option("--first", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--last", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--out", default=None, help="Where to write the JSON result (default: stdout).")
def main(url: str, postings: tuple[str, ...], first, last, out: str | None) -> None:
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        write_result(out, run(url, postings, first.date(), last.date(), Path(work)))


def run(url: str, postings: tuple[str, ...], first: date, last: date, out: Path) -> dict:
    started = time.perf_counter()
    after = first.isoformat() + "T00:00:00Z"
    before = (last + timedelta(days=1)).isoformat() + "T00:00:00Z"
    requests = 0
    records: list[dict] = []
    with httpx.Client(base_url=url, headers={"X-API-KEY": KEY}, trust_env=False, timeout=60) as client:
        for posting_id in postings:
            fetched, n = fetch(client, posting_id, after, before)
            requests += n
            records.extend(fetched)
    rows = len(records)
    # One table and one file: pyarrow infers one schema over every posting's records (their nested objects
    # differ in which optional fields they carry).
    path = out / "candidates.parquet"
    pq.write_table(pa.Table.from_pylist(records), path, compression="zstd")
    con = duckdb.connect(str(out / "bare.duckdb"))
    con.execute("CREATE OR REPLACE TABLE candidates AS SELECT * FROM read_parquet(?)", [str(path)])
    loaded = con.execute("SELECT count(*) FROM candidates").fetchone()[0]
    con.close()
    return {"seconds": time.perf_counter() - started, "candidates": loaded, "fetched": rows, "requests": requests}


if __name__ == "__main__":
    main()
