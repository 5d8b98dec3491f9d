"""What Dagster's event log costs per partition materialization, on each storage, each way of recording.

One asset of N static partitions, materialized in one ranged run, in this process, two ways:

- ``log_event``: the step logs N ``AssetMaterialization`` events itself (what the pipeline does per posting
  as it publishes, on a writer thread, when batching is off);
- ``ranged output``: the step returns one ``MaterializeResult`` and gives each partition its metadata with
  ``add_asset_metadata``; Dagster generates the N events, with batch metadata (the pipeline's way when
  ``DAGSTER_EVENT_BATCH_SIZE`` is above 0).

The figure is (run with N partitions - run with 1 partition) / (N - 1): the cost of one more partition to the
run, which is two events: Dagster's "planned" event for it, written when the run is created (one per partition
unless the storage takes a partition subset), and its materialization.

    python bench/event_log.py --storage sqlite|consolidated|postgres [--postgres URL] [--dir PATH]
        [--batch-size 0] [--partitions 1000] [--out FILE]
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg
from common import WORK_DIR, write_result

# What the pipeline gives each posting-day (assets.py): a few figures and names.
PER_PARTITION = {
    "candidate_rows": 17,
    "workflow_step_rows": 51,
    "posting_id": "A09F76B5",
    "posting_title": "Customer Support Representative",
    "fetched_days": "2025-01-01..2025-03-31",
}


def storage_config(storage: str, base: Path, postgres: str | None) -> dict:
    if storage == "sqlite":
        return {}
    if storage == "consolidated":  # Dagster's one-file event log (dagster.yaml's event_log_storage)
        return {
            "event_log_storage": {
                "module": "dagster.core.storage.event_log",
                "class": "ConsolidatedSqliteEventLogStorage",
                "config": {"base_dir": str(base / "history")},
            }
        }
    if storage == "postgres":
        assert postgres, "--postgres URL"
        return {"storage": {"postgres": {"postgres_url": postgres}}}
    raise SystemExit(f"unknown storage {storage}")


def timed_run(instance: dg.DagsterInstance, partitions: int, way: str) -> float:
    keys = [f"p{i:05d}" for i in range(partitions)]
    defs = dg.StaticPartitionsDefinition(keys)

    name = f"grid_{way.replace(' ', '_')}_{partitions}"

    # Skippable and no output, as raw_candidates: the logged events are the partitions' only materializations.
    spec = dg.AssetSpec(name, skippable=True)

    @dg.multi_asset(specs=[spec], partitions_def=defs, backfill_policy=dg.BackfillPolicy.single_run(), name=name)
    def logged(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        for partition in context.partition_keys:
            context.log_event(dg.AssetMaterialization(asset_key=spec.key, partition=partition, metadata=PER_PARTITION))
        yield from ()

    @dg.asset(partitions_def=defs, backfill_policy=dg.BackfillPolicy.single_run(), name=name)
    def ranged(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        for partition in context.partition_keys:
            context.add_asset_metadata(PER_PARTITION, partition_key=partition)
        return dg.MaterializeResult()

    grid = logged if way == "log_event" else ranged
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    started = time.perf_counter()
    result = dg.materialize([grid], instance=instance, tags=tags, raise_on_error=True)
    seconds = time.perf_counter() - started
    assert result.success
    assert len(instance.get_materialized_partitions(grid.key)) == partitions
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", choices=["sqlite", "consolidated", "postgres"], required=True)
    parser.add_argument("--postgres", help="SQLAlchemy URL of an empty database (postgresql+psycopg2://...)")
    parser.add_argument("--dir", type=Path, default=WORK_DIR, help="where the SQLite files go (its disk is the cost)")
    parser.add_argument("--batch-size", type=int, default=0, help="DAGSTER_EVENT_BATCH_SIZE")
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = str(args.batch_size)  # this process only: Dagster reads it per event
    args.dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"storage": args.storage, "batch_size": args.batch_size, "partitions": args.partitions}
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        overrides = storage_config(args.storage, Path(work), args.postgres)
        with dg.instance_for_test(temp_dir=work, overrides=overrides) as instance:
            result["event_log_storage"] = type(instance.event_log_storage).__name__
            for way in ("log_event", "ranged output"):
                one = timed_run(instance, 1, way)
                many = timed_run(instance, args.partitions, way)
                result[way] = {"ms_per_partition": (many - one) * 1000 / (args.partitions - 1), "run_seconds": many}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
