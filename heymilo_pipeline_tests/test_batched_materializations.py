"""A run's partitions recorded through Dagster's batched path (DAGSTER_EVENT_BATCH_SIZE above 0): one ranged
output with per-partition metadata, which PostgreSQL's event log writes in one statement.

Each case runs against the simulator on loopback, with a real Dagster instance: the batched way must record
exactly what the one-by-one way records, partition by partition, and fall back to it when a posting fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import psycopg2
import pytest

from heymilo_pipeline.api.windows import DayRange, day_of
from heymilo_pipeline.defs import assets
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
    """Each partition's materialization of raw_candidates in the run: its metadata, minus what names the run."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RAW), limit=10_000).records
    return {
        r.partition_key: {k: v.value for k, v in r.asset_materialization.metadata.items()}
        for r in records
        if r.run_id == run_id
    }


def postgres_instance(postgres_url: str, name: str) -> tuple[str, dict[str, Any]]:
    """A new database, and the instance overrides that put Dagster's storage in it."""
    database = new_database(postgres_url, name)
    return database, {"storage": {"postgres": {"postgres_url": sqlalchemy_url(database)}}}


def statements(database: str, run_id: str) -> tuple[int, int]:
    """The run's materializations of raw_candidates in PostgreSQL, and how many transactions wrote them (rows one
    INSERT wrote share its transaction id, xmin)."""
    with psycopg2.connect(database) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM event_logs "
            "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s",
            (run_id, RAW.to_string()),
        )
        return cursor.fetchone()


def backfill(h: Harness) -> dg.ExecuteInProcessResult:
    return h.candidates(FIRST, LAST, h.registered[0], h.registered[-1])


def test_the_batched_way_records_what_the_one_by_one_way_records(
    api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_a_failed_posting_falls_back_to_one_event_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch would mark every partition of the run; with a posting gone (404), only the others are marked."""
    tenant = Tenant(TenantSpec(seed=32, postings=3, start=FIRST, end=LAST, candidates_per_posting=(40, 160)))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "200")
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.instance_for_test() as instance:
        h = harness(url, tmp_path, instance)
        victim = h.registered[1]
        httpx.post(f"{url}/_sim/delete", json={"posting_id": victim}, headers={"X-API-KEY": KEY}).raise_for_status()
        result = backfill(h)
        assert not result.success
        others = [p for p in h.registered if p != victim]
        assert set(recorded(instance, result.run_id)) == {key(p, d) for p in others for d in DayRange(FIRST, LAST).days}
        assert instance.get_materialized_partitions(RAW) == set(recorded(instance, result.run_id))


def test_on_postgresql_a_runs_partitions_are_one_statement(
    api: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows one INSERT wrote share its transaction id (xmin): the run's partitions are one write, not 42."""
    database, overrides = postgres_instance(postgres_url, "dagster_batches")
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    with dg.instance_for_test(overrides=overrides) as instance:
        h = harness(api, tmp_path, instance)
        result = backfill(h)
        assert result.success
        partitions = recorded(instance, result.run_id)
    assert len(partitions) == len(h.registered) * len(DayRange(FIRST, LAST).days)
    assert statements(database, result.run_id) == (len(partitions), 1)


def test_past_the_cap_a_run_records_one_event_each(
    api: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above BATCHED_MAX_PARTITIONS, Dagster's per-partition metadata costs more than the writes it saves."""
    database, overrides = postgres_instance(postgres_url, "dagster_capped")
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    monkeypatch.setattr(assets, "BATCHED_MAX_PARTITIONS", 10)
    with dg.instance_for_test(overrides=overrides) as instance:
        h = harness(api, tmp_path, instance)
        result = backfill(h)
        assert result.success
        partitions = recorded(instance, result.run_id)
    assert statements(database, result.run_id) == (len(partitions), len(partitions))
