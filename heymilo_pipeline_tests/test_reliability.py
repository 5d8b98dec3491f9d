"""The fault matrix (see reliability_matrix.py): every fault either recovers with tables identical to the
reference, or fails with a message naming the posting, the days and the cause, publishing nothing.

One module-scoped run of the matrix; one test per fault, so a report shows which fault broke. The rows of
docs/reliability.md come from the same runner (``python -m heymilo_pipeline_tests.reliability_matrix``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import HeyMiloError, PagingError
from heymilo_pipeline.api.settings import ClientSettings
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.ingest import Slice, fetch_slices
from heymilo_pipeline.simulator import Faults, Tenant, asgi_transport, create_app
from heymilo_pipeline_tests.reliability_matrix import (
    DOC,
    FAILS,
    FIRST,
    KEY,
    LAST,
    RECOVERS,
    SCENARIOS,
    SPEC,
    Outcome,
    run_matrix,
)

# Servers, subprocesses or Dagster runs: the integration tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.integration

BASELINE = SCENARIOS[0]
EXCEPTION_GROUP_BUG = (
    "api/client.py gather_bounded (asyncio.TaskGroup) wraps the client's errors in an ExceptionGroup again, so "
    "defs/assets.py raw_candidates does not turn them into a non-retryable dg.Failure: Dagster's RetryPolicy "
    "retries the step twice (30 + 60 s) and the message is 'Exceeded max_retries of 2'"
)


def fetch_error(tmp_path: Path) -> BaseException:
    """What ingest.fetch_slices raises when the API's cursor stops advancing (no Dagster involved)."""
    tenant = Tenant(SPEC)
    posting_id = next(p["id"] for p in tenant.postings() if not p["test_posting"] and p["status"] != "draft")
    app = create_app(tenant, KEY, Faults(stuck_cursor=True))
    settings = ClientSettings(api_key=KEY, base_url="http://heymilo.sim", state_dir=tmp_path / ".ratelimit")

    async def fetch() -> None:
        async with HeyMiloClient(settings, transport=asgi_transport(app)) as client:
            await fetch_slices(client, [Slice(posting_id, DayRange(FIRST, LAST))])

    try:
        asyncio.run(fetch())
    except BaseException as exc:
        return exc
    raise AssertionError("a stuck cursor should stop the fetch")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    # Were the client's errors wrapped in an ExceptionGroup again (as before gather_bounded unwrapped them), each
    # fault the client raises on would cost ~150 s of Dagster retry delays and end with a useless message: those
    # rows are then not run (xfail) and test_client_errors_reach_dagster_unwrapped fails, naming the cause.
    wrapped = not isinstance(fetch_error(tmp_path_factory.mktemp("probe")), HeyMiloError)
    skip = {s.name: EXCEPTION_GROUP_BUG for s in SCENARIOS if s.raises} if wrapped else {}
    outcomes = run_matrix(tmp_path_factory.mktemp("matrix"), skip=skip)
    return {o.scenario.name: o for o in outcomes}


def test_client_errors_reach_dagster_unwrapped(tmp_path: Path) -> None:
    """The asset turns HeyMiloError into a clear, non-retryable dg.Failure; a wrapped error escapes that."""
    error = fetch_error(tmp_path)
    assert isinstance(error, PagingError), f"{EXCEPTION_GROUP_BUG}: {error!r}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_fault(matrix: dict[str, Outcome], scenario) -> None:
    o = matrix[scenario.name]
    if o.skipped:
        pytest.xfail(o.skipped)
    assert o.rows_lost == 0, f"{o.rows_lost} of {o.rows_expected} reference rows lost"
    assert o.rows_doubled == 0, f"{o.rows_doubled} rows doubled"
    assert o.temp_files == [], "a run left temp files behind without being killed"
    if scenario.expect == RECOVERS:
        assert o.recovered, f"{o.runs_failed} of {o.runs} runs failed: {o.failure}"
        assert o.identical, f"tables differ from the reference; {o.notes}"
        if scenario.same_as_baseline and scenario is not BASELINE:
            assert o.same_as_baseline, "tables differ from the fault-free run's"
        if scenario.transport and scenario is not BASELINE:
            extra_requests = o.requests - matrix[BASELINE.name].requests
            assert o.retried > 0, "the fault was never injected"
            # Every request beyond the fault-free run's is the retry of a faulted one (a stalled request that
            # also drew an error counts twice in `retried`, hence <=); none is wasted, none missing.
            assert 0 < extra_requests <= o.retried, (extra_requests, o.faults)
            if len(o.faults) == 1:
                assert extra_requests == o.retried, (extra_requests, o.faults)
    else:
        assert scenario.expect == FAILS
        assert o.runs == o.runs_failed == 1, "the run should have failed"
        assert o.message_gaps() == [], f"the message lacks {o.message_gaps()}: {o.failure}"
        assert o.step_attempts == 1, f"Dagster retried a failure retrying cannot fix ({o.step_attempts} attempts)"
        assert o.nothing_published, "the failed run changed rows or lake files"


def test_data_shape_faults_are_visible_in_the_tables(matrix: dict[str, Outcome]) -> None:
    nulls = matrix["null optional objects (workflow, agent_summary)"].facts
    absent = matrix["missing optional objects (keys absent)"].facts
    # exactly the simulator's candidates without a workflow, in both shapes
    assert nulls["without_workflow"] == _fetched_truth_count(
        {"null_objects_share": 0.3}, lambda r: r["workflow"] is None
    )
    assert absent["without_workflow"] == nulls["without_workflow"] > 0
    # the API's records are kept as sent: null objects stay null, absent keys stay absent
    assert nulls["raw_null_workflow"] == nulls["without_workflow"] and nulls["raw_without_workflow_key"] == 0
    assert absent["raw_without_workflow_key"] == absent["without_workflow"] and absent["raw_null_workflow"] == 0
    extra = matrix["additive schema change (new fields)"].facts
    assert extra["extra_candidates"] == extra["candidates"] > 0  # every candidate got new fields
    assert extra["extra_steps"] == extra["steps"] > 0
    assert {"sentiment", "source_channel", "agent_summary.model_version"} <= set(extra["extra_keys"])
    score = matrix["changed type: score as a string"].facts
    strings = _fetched_truth_count({"score_as_string": True}, lambda r: isinstance(r["score"], str))
    assert score["score_types"] == ["DOUBLE"] and score["raw_score_strings"] == strings > 0


def _fetched_truth_count(shape: dict[str, object], which: Callable[[dict], bool]) -> int:
    """Candidates of the scenario's workspace (its fetched postings: test postings are skipped) matching ``which``."""
    tenant = Tenant(replace(SPEC, **shape))
    fetched = {p["id"] for p in tenant.postings() if not p["test_posting"]}
    return sum(1 for r in tenant.truth() if r["posting_id"] in fetched and which(r))


def test_the_document_lists_every_fault() -> None:
    """docs/reliability.md is generated by the runner; a fault added to the matrix must appear there."""
    text = DOC.read_text(encoding="utf-8")
    for scenario in SCENARIOS:
        assert f"| {scenario.name} |" in text, (
            f"regenerate {DOC.name}: python -m heymilo_pipeline_tests.reliability_matrix"
        )
