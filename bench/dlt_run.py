"""The same backfill through dlt (``pip install -e .[bench]``): a rest_api source into DuckDB.

One rest_api resource per posting (``/api/v2/postings/{id}/candidates`` with the same
``created_after``/``created_before`` range and ``limit=100`` as our client), a custom paginator for
the API's ``starting_after`` cursor (the last ``interview_id`` of a page, while ``has_more``), and
dlt's nested tables (workflow steps, highlights, criteria become child tables). ``--mode default``
keeps dlt's defaults; ``--mode parquet`` runs with ``loader_file_format="parquet"``, dlt's fastest
setting for DuckDB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KEY, WORK_DIR, range_arguments, vm_hwm, write_result


def main() -> None:
    parser = range_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--mode", choices=("default", "parquet"), default="default")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as work:
        os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
        os.environ["DLT_DATA_DIR"] = str(Path(work) / "dlt_data")
        started = time.perf_counter()
        import dlt
        from dlt.sources.helpers.rest_client.paginators import BasePaginator
        from dlt.sources.rest_api import rest_api_source

        class StartingAfterPaginator(BasePaginator):
            """HeyMilo's cursor: ``starting_after`` = the last interview_id, while pagination.has_more."""

            def __init__(self) -> None:
                super().__init__()
                self.cursor: str | None = None

            def update_state(self, response, data=None) -> None:
                body = response.json()
                more = bool(body.get("pagination", {}).get("has_more"))
                if more and data:
                    self.cursor = data[-1]["interview_id"]
                    self._has_next_page = True
                else:
                    self._has_next_page = False

            def update_request(self, request) -> None:
                if request.params is None:
                    request.params = {}
                request.params["starting_after"] = self.cursor

        def ids_as_text(record: dict) -> dict:
            # dlt cannot load integers beyond 64 bits: orjson refuses them ("Integer exceeds 64-bit range"),
            # and when given as text, dlt coerces them back into the BIGINT column it inferred from the
            # smaller ones, which DuckDB then rejects. The API sends some (data.ats.application_id), so this
            # step stores that field as text; without it dlt fails outright.
            ats = (record.get("data") or {}).get("ats")
            if ats and isinstance(ats.get("application_id"), int):
                ats["application_id"] = str(ats["application_id"])
            return record

        after = f"{args.first.isoformat()}T00:00:00Z"
        before = f"{(args.last + timedelta(days=1)).isoformat()}T00:00:00Z"
        imported = time.perf_counter()
        source = rest_api_source(
            {
                "client": {
                    "base_url": args.url + "/api/v2/",
                    "auth": {"type": "api_key", "name": "X-API-KEY", "api_key": KEY, "location": "header"},
                },
                "resource_defaults": {"write_disposition": "append", "table_name": "candidates"},
                "resources": [
                    {
                        "name": f"candidates_{posting_id}",
                        "endpoint": {
                            "path": f"postings/{posting_id}/candidates",
                            "params": {"limit": 100, "created_after": after, "created_before": before},
                            "data_selector": "data",
                            "paginator": StartingAfterPaginator(),
                        },
                        "processing_steps": [{"map": ids_as_text}],
                    }
                    for posting_id in args.posting
                ],
            }
        )
        pipeline = dlt.pipeline(
            pipeline_name=f"heymilo_dlt_{args.mode}",
            destination=dlt.destinations.duckdb(str(Path(work) / "dlt.duckdb")),
            dataset_name="heymilo",
            pipelines_dir=str(Path(work) / "pipelines"),
        )
        kwargs = {"loader_file_format": "parquet"} if args.mode == "parquet" else {}
        pipeline.run(source, **kwargs)
        seconds = time.perf_counter() - started
        import duckdb

        with duckdb.connect(str(Path(work) / "dlt.duckdb"), read_only=True) as conn:
            tables = dict(
                conn.execute(
                    "SELECT table_name, estimated_size FROM duckdb_tables() WHERE schema_name = 'heymilo' "
                    "AND NOT starts_with(table_name, '_dlt')"
                ).fetchall()
            )
            rows = conn.execute("SELECT count(*) FROM heymilo.candidates").fetchone()[0]
        result = {
            "mode": args.mode,
            "dlt": dlt.__version__,
            "candidates": rows,
            "seconds": seconds,
            "import_seconds": imported - started,
            "candidates_per_s": rows / seconds,
            "tables": sorted(tables),
            "rss_self": vm_hwm(),
        }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
