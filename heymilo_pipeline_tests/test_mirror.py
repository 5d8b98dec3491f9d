"""Right over time: after changes anywhere in history, erased candidates and a deleted posting,
HEYMILO_FULL_REFRESH_DAYS consecutive daily updates (``heymilo-pipeline update --as-of``, run in this process)
leave the tables equal to the API.

The simulator's clock is frozen during the updates, so "equal to the API" has one meaning: every day was fetched
again after the changes, which is what the rolling refresh promises within N updates.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import dagster as dg
import httpx
import pytest

from heymilo_pipeline.api.windows import DayRange, day_of, midnight
from heymilo_pipeline.cli import run_update
from heymilo_pipeline.defs.partitions import POSTINGS
from heymilo_pipeline.defs.tags import range_tags
from heymilo_pipeline.interview_results import FINISHED, scrub
from heymilo_pipeline.lake import RESULTS, Lake
from heymilo_pipeline.privacy import Scrubber
from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.warehouse import query
from heymilo_pipeline_tests.dagster_ui import CHECKS
from heymilo_pipeline_tests.support import LAST, START, TODAY, Harness, settings_for

# Servers, subprocesses or Dagster runs: the integration tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.integration

KEY = "sk_test_MIRROR-1b2c3d4e"
N = 3  # HEYMILO_FULL_REFRESH_DAYS for this test: three updates must fetch every day again


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    spec = TenantSpec(seed=61, postings=5, start=START, end=LAST, candidates_per_posting=(200, 500), deleted_share=0.08)
    tenant = Tenant(spec)
    data_dir = tmp_path_factory.mktemp("data")
    backfilled_at = midnight(TODAY) - 20 * 86400  # the backfill sees the workspace as it was 20 days ago
    tenant.set_now(backfilled_at)
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.instance_for_test() as instance:
        location = Harness(settings_for(url, KEY, data_dir, full_refresh_days=N), instance).location()
        assert location.execute("postings_job", instance)
        registered = list(instance.get_dynamic_partitions(POSTINGS))
        assert location.execute("candidates_job", instance, range_tags(START, LAST, registered[0], registered[-1]))
        assert location.execute("results_job", instance, range_tags(START, LAST, registered[0], registered[-1]))
        stale = query(data_dir / "heymilo.duckdb", "SELECT interview_id, status FROM candidates")
        stale_results = query(
            data_dir / "heymilo.duckdb", "SELECT interview_id, candidate_state FROM interview_results"
        )

        # 20 days later: candidates advanced, some were erased (planned), two more are erased now, one posting is gone.
        tenant.set_now(midnight(TODAY) + 3 * 3600)
        old = [r for r in tenant.truth() if day_of(r["created_at"]) < START + timedelta(days=5)]
        erased = [old[0]["interview_id"], old[-1]["interview_id"]]
        sim = {"X-API-KEY": KEY}
        httpx.post(f"{url}/_sim/delete", json={"interview_ids": erased}, headers=sim).raise_for_status()
        with_candidates = [p for p in registered if any(r["posting_id"] == p for r in tenant.truth())]
        gone_posting = with_candidates[-1]
        httpx.post(f"{url}/_sim/delete", json={"posting_id": gone_posting}, headers=sim).raise_for_status()

        outcomes = [run_update(location, instance, TODAY - timedelta(days=N - 1 - i)) for i in range(N)]
        checks = {
            e.asset_check_key.name: e
            for e in (
                instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[
                    0
                ].event.asset_check_evaluation
                for key in _check_keys()
            )
        }
        yield {
            "tenant": tenant,
            "data_dir": data_dir,
            "registered": registered,
            "now_registered": list(instance.get_dynamic_partitions(POSTINGS)),
            "stale": stale,
            "stale_results": dict(zip(stale_results["interview_id"], stale_results["candidate_state"], strict=True)),
            "erased": erased,
            "gone_posting": gone_posting,
            "outcomes": outcomes,
            "checks": checks,
        }


def _check_keys() -> list[dg.AssetCheckKey]:
    return [
        dg.AssetCheckKey(dg.AssetKey(asset), name)
        for asset, names in CHECKS.items()
        if asset != "raw_candidates"
        for name in names
    ]


def test_every_update_succeeded(mirrored: dict[str, Any]) -> None:
    assert [(o.listed, o.failed_runs, o.checked) for o in mirrored["outcomes"]] == [(True, [], True)] * N


def test_the_tables_equal_the_api_after_n_updates(mirrored: dict[str, Any]) -> None:
    tenant: Tenant = mirrored["tenant"]
    remaining = [p for p in mirrored["registered"] if p != mirrored["gone_posting"]]
    truth = [r for r in tenant.truth() if r["posting_id"] in remaining and day_of(r["created_at"]) <= LAST]
    table = query(mirrored["data_dir"] / "heymilo.duckdb", "SELECT interview_id, status, score FROM candidates")
    stored = {(i, s, None if x != x else x) for i, s, x in zip(*(table[c] for c in table.columns), strict=True)}
    assert stored == {(r["interview_id"], r["status"], r["score"]) for r in truth}
    # The lake holds every record exactly as the API sends it now.
    lake = Lake(mirrored["data_dir"] / "lake")
    for posting_id in remaining:
        raw = [r for day in DayRange(START, LAST).days for r in lake.read_raw(posting_id, day)]
        want = [r for r in truth if r["posting_id"] == posting_id]
        key = lambda r: r["interview_id"]  # noqa: E731
        assert sorted(raw, key=key) == sorted(want, key=key), posting_id
    # Something did change between the backfill and now, or this test would prove nothing.
    before = dict(zip(mirrored["stale"]["interview_id"], mirrored["stale"]["status"], strict=True))
    assert sum(1 for r in truth if r["interview_id"] in before and before[r["interview_id"]] != r["status"]) > 20


def test_erased_candidates_and_the_deleted_posting_are_gone(mirrored: dict[str, Any]) -> None:
    tenant: Tenant = mirrored["tenant"]
    db = mirrored["data_dir"] / "heymilo.duckdb"
    ids = set(query(db, "SELECT interview_id FROM candidates")["interview_id"])
    lake_ids = set(Lake(mirrored["data_dir"] / "lake").read("candidates")["interview_id"].to_pylist())
    existed = set(mirrored["stale"]["interview_id"])
    now = {r["interview_id"] for r in tenant.truth()}
    erased = existed - now  # planned erasures since the backfill, the two explicit ones, the deleted posting's
    assert set(mirrored["erased"]) <= erased and len(erased) > len(mirrored["erased"]) + 20
    assert not erased & ids and not erased & lake_ids
    gone = mirrored["gone_posting"]
    assert gone not in mirrored["now_registered"]
    assert query(db, "SELECT count(*) AS n FROM candidates WHERE posting_id = ?", [gone])["n"][0] == 0
    assert query(db, "SELECT count(*) AS n FROM partition_loads WHERE posting_id = ?", [gone])["n"][0] == 0
    marked = query(db, "SELECT vanished_at FROM postings WHERE posting_id = ?", [gone])
    assert len(marked) == 1 and marked["vanished_at"].notna().all()  # kept in postings, marked


def test_the_results_equal_the_api_after_n_updates(mirrored: dict[str, Any]) -> None:
    """Every finished candidate's results, as the API sends them now, and no other: results of candidates that
    changed were fetched again, those of erased candidates and of the deleted posting left with them."""
    tenant: Tenant = mirrored["tenant"]
    remaining = [p for p in mirrored["registered"] if p != mirrored["gone_posting"]]
    finished = {
        r["interview_id"]: r
        for r in tenant.truth()
        if r["posting_id"] in remaining and day_of(r["created_at"]) <= LAST and r["status"] in FINISHED
    }
    lake = Lake(mirrored["data_dir"] / "lake").read(RESULTS)
    stored = {i: json.loads(text) for i, text in zip(lake["interview_id"].to_pylist(), lake["record"].to_pylist(),
                                                     strict=True)}  # fmt: skip
    assert len(stored) == lake.num_rows and set(stored) == set(finished)
    scrubber = Scrubber("keep")
    assert all(stored[i] == scrub(tenant.interview_data(i), scrubber, False) for i in finished)
    table = query(
        mirrored["data_dir"] / "heymilo.duckdb", "SELECT interview_id, posting_id, status FROM interview_results"
    )
    assert sorted(zip(table["interview_id"], table["posting_id"], table["status"], strict=True)) == sorted(
        (i, r["posting_id"], r["status"]) for i, r in finished.items()
    )
    # Results did change since the backfill (fetched again for a new state), and some candidates finished since.
    before = mirrored["stale_results"]
    changed = [i for i in finished if i in before and before[i] != stored[i]["status"]]
    assert len([i for i in finished if i not in before]) > 20 and before.keys() - finished.keys()
    assert changed is not None


def test_the_warehouse_checks_pass_at_the_end(mirrored: dict[str, Any]) -> None:
    checks = mirrored["checks"]
    assert set(checks) == CHECKS["candidates"] | CHECKS["candidate_workflow_steps"] | CHECKS["interview_results"]
    assert all(e.passed for e in checks.values()), {n: e.description for n, e in checks.items()}
