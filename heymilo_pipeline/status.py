"""The text `heymilo-pipeline status` prints: tables, partitions and the latest check results."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from heymilo_pipeline.defs.partitions import POSTINGS
from heymilo_pipeline.settings import Settings


def latest_check_results(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[tuple[str, str, str]]:
    """(check, status, when) of the most recent execution of every check of the code location."""
    rows = []
    for check_key in sorted(defs.resolve_asset_graph().asset_check_keys, key=lambda k: k.to_user_string()):
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1)
        if not history:
            rows.append((check_key.to_user_string(), "never run", ""))
            continue
        record = history[0]
        status = record.status.value
        evaluation = record.event.asset_check_evaluation if record.event else None
        if evaluation is not None and not evaluation.passed:
            status = f"FAILED ({evaluation.severity.value})"
        elif evaluation is not None:
            status = "passed"
        when = datetime.fromtimestamp(record.create_timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
        rows.append((check_key.to_user_string(), status, when))
    return rows


def report(settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance) -> str:
    lines = [f"data directory: {settings.data_dir.resolve()}"]
    store = settings.store()
    if store.exists():
        lines.append(f"{store.description}:")
        lines += [f"  {name:<26} {n:>10,} rows" for name, n in sorted(store.table_counts().items())]
        if loads := store.loads_by_posting():
            lines.append("loaded partitions (posting: days, range, rows):")
            lines += [f"  {posting}: {days} days, {first:%Y-%m-%d}..{last:%Y-%m-%d}, {rows} rows"
                      for posting, days, first, last, rows in loads]  # fmt: skip
    else:
        lines.append(f"{store.description}: not created yet (run a backfill)")
    registered = instance.get_dynamic_partitions(POSTINGS)
    materialized = instance.get_materialized_partitions(dg.AssetKey("candidates"))
    lines.append(f"registered postings: {len(registered)}; materialized candidate partitions: {len(materialized)}")
    lines.append("latest check results:")
    for name, status, when in latest_check_results(instance, defs):
        lines.append(f"  {name:<52} {status:<18} {when}")
    return "\n".join(lines)
