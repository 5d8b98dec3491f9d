"""The production profile's batched event writes (DAGSTER_EVENT_BATCH_SIZE above 0, as deploy/ sets it).

In Dagster 1.13 PostgreSQL writes a batch as one statement only for materializations (or observations) that
Dagster generates from a ranged output; the pipeline logs each partition's materialization as its posting is
published instead (assets._Progress says why), so every partition is its own write with batching on or off, and
carries the same figures. Against the simulator on loopback, with real Dagster instances.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from heymilo_pipeline.api.windows import DayRange, day_of
from heymilo_pipeline.defs.partitions import key
from heymilo_pipeline.devservers import new_database, sqlalchemy_url
from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline_tests.support import LAST, Harness, settings_for

pytestmark = pytest.mark.integration

KEY = "sk_test_BATCHES-1a2b3c4d"
RAW = dg.AssetKey("raw_candidates")
FIRST = LAST - timedelta(days=13)
TENANT = Tenant(TenantSpec(seed=31, postings=3, start=FIRST, end=LAST, candidates_per_posting=(40, 160)))


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with serve_in_thread(create_app(TENANT, KEY)) as url:
        yield url


def harness(api: str, data_dir: Path, instance: dg.DagsterInstance) -> Harness:
    h = Harness(settings_for(api, KEY, data_dir), instance)
    assert h.list_postings().success
    return h


def recorded(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, Any]]:
    """Each partition's materialization of raw_candidates in the run: its metadata."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RAW), limit=10_000).records
    return {
        r.partition_key: {k: v.value for k, v in r.asset_materialization.metadata.items()}
        for r in records
        if r.run_id == run_id
    }


def backfill(h: Harness) -> dg.ExecuteInProcessResult:
    return h.candidates(FIRST, LAST, h.registered[0], h.registered[-1])


def postgres_instance(postgres_url: str, name: str) -> tuple[str, dict[str, Any]]:
    """A new database, and the instance overrides that put Dagster's storage in it."""
    database = new_database(postgres_url, name)
    return database, {"storage": {"postgres": {"postgres_url": sqlalchemy_url(database)}}}


def statements(database: str, run_id: str, event_type: str) -> tuple[int, int]:
    """The run's events of raw_candidates of one type in PostgreSQL, and how many transactions wrote them (rows
    one INSERT wrote share its transaction id, xmin)."""
    with psycopg2.connect(database) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM event_logs "
            "WHERE run_id = %s AND dagster_event_type = %s AND asset_key = %s",
            (run_id, event_type, RAW.to_string()),
        )
        return cursor.fetchone()


@pytest.mark.parametrize("batch_size", ["1000", "0"])
def test_on_postgresql_every_partition_is_planned_and_recorded_once(
    api: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: str
) -> None:
    database, overrides = postgres_instance(postgres_url, f"dagster_batch_{batch_size}")
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
    with dg.instance_for_test(overrides=overrides) as instance:
        h = harness(api, tmp_path, instance)
        result = backfill(h)
        assert result.success
        partitions = recorded(instance, result.run_id)
        expected = {key(p, d) for p in h.registered for d in DayRange(FIRST, LAST).days}
        assert instance.get_materialized_partitions(RAW) == expected
    assert set(partitions) == expected
    # One planned event and one materialization per partition, each its own write (see the module's docstring).
    for event_type in ("ASSET_MATERIALIZATION_PLANNED", "ASSET_MATERIALIZATION"):
        assert statements(database, result.run_id, event_type) == (len(expected), len(expected)), event_type


def test_batching_changes_no_partitions_figures(api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with dg.instance_for_test() as one_by_one, dg.instance_for_test() as batched:
        plain = harness(api, tmp_path / "plain", one_by_one)
        result = backfill(plain)
        assert result.success
        expected = recorded(one_by_one, result.run_id)
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "200")
        h = harness(api, tmp_path / "batched", batched)
        result = backfill(h)
        assert result.success
        assert recorded(batched, result.run_id) == expected
        assert set(expected) == {key(p, d) for p in h.registered for d in DayRange(FIRST, LAST).days}
        assert sum(m["candidate_rows"] for m in expected.values()) == sum(
            r["posting_id"] in h.registered and FIRST <= day_of(r["created_at"]) <= LAST for r in TENANT.truth()
        )
