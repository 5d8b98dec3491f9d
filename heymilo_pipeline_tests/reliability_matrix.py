"""The fault matrix: every simulator fault against the real assets, compared with a fault-free run.

For each fault a fresh data directory and (in-memory) Dagster instance; the simulator (on loopback, uvicorn) serves a
small tenant with that fault; the postings asset runs, then a backfill of every registered posting, one run
per posting, as a UI backfill does. The tables are then compared with a reference:

- transport faults (429, 5xx, timeouts, drops, truncated or malformed bodies): the fault-free baseline run;
- data-shape faults (null or absent optional objects, new fields, score as a string): the tenant's own ground
  truth, validated and flattened, loaded into a scratch DuckDB file (the score-as-string tenant must also give
  tables identical to the fault-free run);
- faults that must fail (a cursor that stops advancing, total_count disagreeing with the rows, a 5xx on every
  attempt): one run on a copy of the baseline's data directory; it must fail with a message naming the posting,
  the days and the cause, and leave every file and row as it was.

``rows lost`` counts reference rows missing from DuckDB (candidates by interview_id plus workflow steps by
(interview_id, step_id)); ``rows doubled`` counts rows present more than once (count minus distinct keys).

``python -m heymilo_pipeline_tests.reliability_matrix`` runs it and rewrites docs/reliability.md;
test_reliability.py runs it and asserts every row.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from starlette.types import ASGIApp, Receive, Scope, Send

from heymilo_pipeline.api.models import CandidateResponse
from heymilo_pipeline.api.windows import DayRange
from heymilo_pipeline.defs.partitions import register_postings
from heymilo_pipeline.flatten import flatten
from heymilo_pipeline.lake import Lake
from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.simulator.gateway import capture_response
from heymilo_pipeline.tables import CANDIDATES, WORKFLOW_STEPS
from heymilo_pipeline.warehouse import Warehouse
from heymilo_pipeline_tests.support import LAST, START, Harness, settings_for

KEY = "sk_test_RELIABILITY-4b3a2c1d"
TABLES = (CANDIDATES.name, WORKFLOW_STEPS.name)
DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
# ~15 days, inside the partitions.
FIRST = max(START, LAST - timedelta(days=14))
# 5 postings: a test posting (skipped), a draft (no candidates), an archived, an expired and an active one;
# the four registered ones have 0 and 300-700 candidates, so 1-7 pages each.
SPEC = TenantSpec(seed=31, postings=5, start=FIRST, end=LAST, candidates_per_posting=(300, 700))
# What every scenario starts from: the client's defaults, told it may go fast (the simulator decides).
BASE_SETTINGS = {"max_attempts": 8, "timeout": 30.0, "max_concurrency": 4, "lock_timeout": 30}
RETRIED_FAULTS = ("error", "drop", "truncate", "malformed", "stall")

RECOVERS, FAILS = "recovers", "fails"


@dataclass(frozen=True)
class Scenario:
    name: str
    setting: str  # the simulator setting as a reader would type it
    faults: Faults = field(default_factory=Faults)
    shape: Mapping[str, Any] = field(default_factory=dict)  # TenantSpec data-shape fields
    settings: Mapping[str, Any] = field(default_factory=dict)  # changes to BASE_SETTINGS
    expect: str = RECOVERS
    causes: tuple[str, ...] = ()  # what a failure message must contain besides posting and days
    absent_objects: bool = False  # serve null optional objects as absent keys
    same_as_baseline: bool = True  # the tables must equal the fault-free run's
    raises: bool = False  # the failure is an error the client raises while fetching (not a blocking check)

    @property
    def transport(self) -> bool:
        return not self.shape and not self.absent_objects


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("none (baseline)", "-"),
    Scenario(
        "429 storm with Retry-After",
        "`rate_limit=2, rate_window_s=1` (client told 1,000,000/min)",
        Faults(rate_limit=2, rate_window_s=1.0),
    ),
    Scenario("5xx bursts", "`error_rate=0.3` (500/502/503)", Faults(error_rate=0.3, seed=3)),
    Scenario(
        "timeouts",
        "`stall_rate=0.15, stall_s=2`, `HEYMILO_TIMEOUT=0.5`",
        Faults(stall_rate=0.15, stall_s=2.0, seed=4),
        settings={"timeout": 0.5},
    ),
    Scenario("dropped connections", "`drop_rate=0.15`", Faults(drop_rate=0.15, seed=5)),
    Scenario("truncated JSON", "`truncate_rate=0.2`", Faults(truncate_rate=0.2, seed=2)),
    Scenario("malformed JSON (HTML, empty, bad bytes)", "`malformed_rate=0.15`", Faults(malformed_rate=0.15, seed=7)),
    Scenario(
        "all transport faults at once",
        "`error_rate, drop_rate, truncate_rate, malformed_rate, stall_rate = 0.05`, `rate_limit=5/1s`, "
        "`HEYMILO_TIMEOUT=0.5`",
        Faults(
            rate_limit=5,
            rate_window_s=1.0,
            error_rate=0.05,
            drop_rate=0.05,
            truncate_rate=0.05,
            malformed_rate=0.05,
            stall_rate=0.05,
            stall_s=2.0,
            seed=8,
        ),
        settings={"timeout": 0.5},
    ),
    Scenario(
        "null optional objects (workflow, agent_summary)",
        "tenant `null_objects_share=0.3`",
        shape={"null_objects_share": 0.3},
        same_as_baseline=False,
    ),
    Scenario(
        "missing optional objects (keys absent)",
        "tenant `null_objects_share=0.3`, null keys removed from the body",
        shape={"null_objects_share": 0.3},
        absent_objects=True,
        same_as_baseline=False,
    ),
    Scenario(
        "additive schema change (new fields)",
        "tenant `extra_fields=True`",
        shape={"extra_fields": True},
        same_as_baseline=False,  # the simulator's extra_fields also changes posting ids and step configs
    ),
    Scenario("changed type: score as a string", "tenant `score_as_string=True`", shape={"score_as_string": True}),
    Scenario(
        "cursor stops advancing",
        "`stuck_cursor=True`",
        Faults(stuck_cursor=True),
        expect=FAILS,
        causes=("cursor repeated",),
        raises=True,
    ),
    Scenario(
        "total_count above the rows",
        "`total_count_offset=3`",
        Faults(total_count_offset=3),
        expect=FAILS,
        causes=("rows_match_total_count", "nothing of this posting was published"),
    ),
    Scenario(
        "total_count below the rows",
        "`total_count_offset=-2`",
        Faults(total_count_offset=-2),
        expect=FAILS,
        causes=("rows_match_total_count", "nothing of this posting was published"),
    ),
    Scenario(
        "5xx on every attempt",
        "`error_rate=1.0`, `HEYMILO_MAX_ATTEMPTS=3`",
        Faults(error_rate=1.0, seed=9),
        settings={"max_attempts": 3},
        expect=FAILS,
        causes=("gave up after 3 attempts", "HTTP 50"),
        raises=True,
    ),
)


@dataclass
class Reference:
    """What the tables must hold: checksums and keys."""

    checksums: dict[str, str]
    ids: set[str]
    step_keys: set[tuple[str, str]]


@dataclass
class Observed:
    checksums: dict[str, str]
    ids: list[str]
    step_keys: list[tuple[str, str]]
    partition_loads: str = ""


@dataclass
class Outcome:
    scenario: Scenario
    runs: int = 0
    runs_failed: int = 0
    requests: int = 0
    retried: int = 0  # requests the simulator faulted in a way the client must retry (5xx, 429, drop, ...)
    faults: dict[str, int] = field(default_factory=dict)
    rows_lost: int = 0
    rows_doubled: int = 0
    rows_expected: int = 0
    identical: bool = False  # checksums equal the reference
    same_as_baseline: bool | None = None  # checksums equal the fault-free run's
    failure: str | None = None  # the step failure message (first failed run)
    failed_posting: str | None = None
    step_attempts: int = 0  # executions of the failed step (more than 1: Dagster's RetryPolicy retried it)
    nothing_published: bool | None = None  # failing scenarios: files and rows untouched
    temp_files: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # data-shape scenarios: what the tables show
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def recovered(self) -> bool:
        return self.runs > 0 and self.runs_failed == 0

    def message_gaps(self) -> list[str]:
        """What the failure message should name (posting, days, cause) but does not."""
        message = self.failure or ""
        wanted = [self.failed_posting or "?", f"{FIRST}..{LAST}", *self.scenario.causes]
        return [w for w in wanted if w not in message]

    @property
    def failed_clearly(self) -> bool:
        return self.runs_failed > 0 and not self.message_gaps() and self.step_attempts == 1


# --- the code location, run in process --------------------------------------------------------


@dataclass
class Lab:
    """One data directory, one Dagster instance, one simulator URL; every run's result."""

    harness: Harness
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario, data_dir: Path, instance: dg.DagsterInstance, url: str) -> Lab:
        return cls(Harness(settings_for(url, KEY, data_dir, **{**BASE_SETTINGS, **scenario.settings}), instance))

    @property
    def registered(self) -> list[str]:
        return self.harness.registered

    def run_postings(self) -> dg.ExecuteInProcessResult:
        return self._record(self.harness.materialize(["postings"], raise_on_error=False))

    def run_posting(self, posting_id: str) -> dg.ExecuteInProcessResult:
        return self._record(self.harness.candidates(FIRST, LAST, posting_id, posting_id))

    def _record(self, result: dg.ExecuteInProcessResult) -> dg.ExecuteInProcessResult:
        self.results.append(result)
        return result

    @property
    def data_dir(self) -> Path:
        return self.harness.data_dir

    @property
    def db(self) -> Path:
        return self.harness.settings.duckdb_path


def failure_message(result: dg.ExecuteInProcessResult) -> str | None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return event.step_failure_data.error.message
    return None


def step_attempts(result: dg.ExecuteInProcessResult) -> int:
    """Executions of the failed step: 1, plus one per retry Dagster's RetryPolicy made."""
    failed = next((e.step_key for e in result.all_events if e.is_step_failure), None)
    restarts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED" and e.step_key == failed]
    return 1 + len(restarts) if failed else 0


@contextmanager
def _instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway in-memory instance: ~10x faster to make than instance_for_test's, and enough for materialize."""
    instance = dg.DagsterInstance.ephemeral()
    try:
        yield instance
    finally:
        instance.dispose()


class AbsentNullObjects:
    """ASGI wrapper around the simulator: deletes null ``workflow`` / ``agent_summary`` keys from candidate
    pages, so the optional objects arrive missing instead of null (the simulator itself only sends null)."""

    KEYS = ("workflow", "agent_summary")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/candidates"):
            await self.app(scope, receive, send)
            return
        status, headers, body = await capture_response(self.app, scope, receive)
        if status == 200:
            document = json.loads(body)
            for item in document["data"]:
                for key in self.KEYS:
                    if key in item and item[key] is None:
                        del item[key]
            body = json.dumps(document).encode()
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


# --- references and observations ------------------------------------------------------------------


def observe(db: Path) -> Observed:
    warehouse = Warehouse(db)
    with warehouse.connect(read_only=True) as conn:
        ids = [row[0] for row in conn.execute("SELECT interview_id FROM candidates").fetchall()]
        steps = [
            tuple(r) for r in conn.execute("SELECT interview_id, step_id FROM candidate_workflow_steps").fetchall()
        ]
    return Observed(
        {t: warehouse.checksum(t) for t in TABLES}, ids, steps, warehouse.checksum("partition_loads", ("loaded_at",))
    )


def reference_of(observed: Observed) -> Reference:
    return Reference(dict(observed.checksums), set(observed.ids), set(observed.step_keys))


def truth_reference(tenant: Tenant, posting_ids: list[str], scratch: Path) -> Reference:
    """The tenant's ground truth, validated and flattened like the pipeline does, in a scratch DuckDB file."""
    key = (tenant.spec, tuple(posting_ids))
    if key not in _TRUTHS:
        _TRUTHS[key] = _truth_reference(tenant, posting_ids, scratch)
    return _TRUTHS[key]


_TRUTHS: dict[tuple[TenantSpec, tuple[str, ...]], Reference] = {}


def _truth_reference(tenant: Tenant, posting_ids: list[str], scratch: Path) -> Reference:
    wanted = set(posting_ids)
    records = [CandidateResponse.model_validate(r) for r in tenant.truth() if r["posting_id"] in wanted]
    candidates, steps = flatten(records)
    warehouse = Warehouse(scratch)
    warehouse.ensure_schema()
    with warehouse.connect() as conn:
        for spec, table in ((CANDIDATES, candidates), (WORKFLOW_STEPS, steps)):
            conn.register("incoming", table)
            names = ", ".join(f'"{n}"' for n in spec.names)
            conn.execute(f'INSERT INTO "{spec.name}" ({names}) SELECT {names} FROM incoming')
            conn.unregister("incoming")
    return reference_of(observe(scratch))


def compare(outcome: Outcome, observed: Observed, reference: Reference, baseline: Reference | None) -> None:
    outcome.rows_expected = len(reference.ids) + len(reference.step_keys)
    outcome.rows_lost = len(reference.ids - set(observed.ids)) + len(reference.step_keys - set(observed.step_keys))
    outcome.rows_doubled = (len(observed.ids) - len(set(observed.ids))) + (
        len(observed.step_keys) - len(set(observed.step_keys))
    )
    outcome.identical = observed.checksums == reference.checksums
    if baseline is not None:
        outcome.same_as_baseline = observed.checksums == baseline.checksums


def lake_state(data_dir: Path) -> dict[str, int]:
    """Every file under the lake with its mtime (ns), temp files included."""
    lake = data_dir / "lake"
    return {str(p.relative_to(lake)): p.stat().st_mtime_ns for p in sorted(lake.rglob("*")) if p.is_file()}


def temp_files(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in (data_dir / "lake").rglob(".*.tmp-*"))


# --- running --------------------------------------------------------------------------------------


@contextmanager
def simulator(tenant: Tenant, faults: Faults, absent_objects: bool = False) -> Iterator[tuple[str, Any]]:
    app = create_app(tenant, KEY, faults)
    served: ASGIApp = AbsentNullObjects(app) if absent_objects else app
    with serve_in_thread(served) as url:
        yield url, app.state.stats


def _account(outcome: Outcome, stats: Any) -> None:
    snap = stats.snapshot()
    outcome.requests = snap["requests_total"]
    outcome.faults = {**snap["faults"], **({"429": snap["rate_limited"]} if snap["rate_limited"] else {})}
    outcome.retried = sum(snap["faults"].get(k, 0) for k in RETRIED_FAULTS) + snap["rate_limited"]


def run_recovering(scenario: Scenario, work: Path, baseline: Reference | None) -> tuple[Outcome, Lab | None]:
    """Postings plus one backfill run per posting on a fresh data dir; compare with the reference."""
    outcome = Outcome(scenario)
    started = time.perf_counter()
    tenant = Tenant(replace(SPEC, **scenario.shape))
    data_dir = work / _slug(scenario.name)
    with (
        simulator(tenant, scenario.faults, scenario.absent_objects) as (url, stats),
        _instance() as instance,
    ):
        lab = Lab.of(scenario, data_dir, instance, url)
        if lab.run_postings().success:
            for posting_id in lab.registered:
                lab.run_posting(posting_id)
        _account(outcome, stats)
        registered = lab.registered
    outcome.runs = len(lab.results)
    outcome.runs_failed = sum(not r.success for r in lab.results)
    outcome.failure = next((m for r in lab.results if (m := failure_message(r))), None)
    observed = observe(lab.db) if lab.db.exists() else Observed({}, [], [])
    truth = truth_reference(tenant, registered, work / f"{_slug(scenario.name)}-truth.duckdb")
    if scenario.transport and baseline is not None:
        compare(outcome, observed, baseline, baseline)
        if baseline.checksums != truth.checksums:
            outcome.notes.append("the fault-free run differs from the simulator's ground truth")
    else:
        compare(outcome, observed, truth, baseline)
    outcome.temp_files = temp_files(data_dir)
    _describe_shape(outcome, lab, observed, registered)
    outcome.seconds = time.perf_counter() - started
    return outcome, lab


def run_failing(scenario: Scenario, work: Path, good_dir: Path, baseline: Reference) -> Outcome:
    """One run of the busiest posting on a copy of a good backfill: it must fail and change nothing."""
    outcome = Outcome(scenario)
    started = time.perf_counter()
    tenant = Tenant(SPEC)
    data_dir = work / _slug(scenario.name)
    shutil.copytree(good_dir, data_dir, copy_function=shutil.copy2)  # copy2 keeps the mtimes
    before = observe(data_dir / "heymilo.duckdb"), lake_state(data_dir)
    with Warehouse(data_dir / "heymilo.duckdb").connect(read_only=True) as conn:
        busiest = conn.execute(
            "SELECT posting_id FROM candidates GROUP BY posting_id ORDER BY count(*) DESC, posting_id LIMIT 1"
        ).fetchone()[0]
        registered = [row[0] for row in conn.execute("SELECT DISTINCT posting_id FROM partition_loads").fetchall()]
    with simulator(tenant, scenario.faults) as (url, stats), _instance() as instance:
        register_postings(instance, registered)
        lab = Lab.of(scenario, data_dir, instance, url)
        result = lab.run_posting(busiest)
        _account(outcome, stats)
    outcome.runs, outcome.runs_failed = 1, int(not result.success)
    outcome.failure = failure_message(result)
    outcome.step_attempts = step_attempts(result)
    outcome.failed_posting = busiest
    after = observe(data_dir / "heymilo.duckdb"), lake_state(data_dir)
    outcome.nothing_published = (
        before[0].checksums == after[0].checksums
        and before[0].partition_loads == after[0].partition_loads
        and before[1] == after[1]
    )
    compare(outcome, after[0], baseline, baseline)
    outcome.temp_files = temp_files(data_dir)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _raw_records(data_dir: Path, posting_ids: list[str]) -> Iterator[dict[str, Any]]:
    """The lake's raw records: as the API sent them."""
    lake = Lake(data_dir / "lake")
    for posting_id in posting_ids:
        for day in DayRange(FIRST, LAST).days:
            yield from lake.read_raw(posting_id, day)


def _describe_shape(outcome: Outcome, lab: Lab, observed: Observed, registered: list[str]) -> None:
    shape = outcome.scenario.shape
    if not shape or not lab.db.exists():
        return
    raw = list(_raw_records(lab.data_dir, registered))
    outcome.facts["raw_without_workflow_key"] = sum("workflow" not in r for r in raw)
    outcome.facts["raw_null_workflow"] = sum("workflow" in r and r["workflow"] is None for r in raw)
    outcome.facts["raw_score_strings"] = sum(isinstance(r.get("score"), str) for r in raw)
    with Warehouse(lab.db).connect(read_only=True) as conn:

        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        facts = outcome.facts
        if "null_objects_share" in shape:
            facts["without_workflow"] = one("SELECT count(*) FROM candidates WHERE workflow_steps_total IS NULL")
            outcome.notes.append(
                f"{facts['without_workflow']} candidates without a workflow (step counts null, no step rows)"
            )
        if shape.get("extra_fields"):
            facts["candidates"], facts["steps"] = len(observed.ids), len(observed.step_keys)
            facts["extra_candidates"] = one("SELECT count(*) FROM candidates WHERE extra IS NOT NULL")
            facts["extra_steps"] = one("SELECT count(*) FROM candidate_workflow_steps WHERE extra IS NOT NULL")
            keys = conn.execute("SELECT DISTINCT unnest(json_keys(extra)) FROM candidates WHERE extra IS NOT NULL")
            facts["extra_keys"] = sorted(k for (k,) in keys.fetchall())
            outcome.notes.append(
                f"`extra` filled on {facts['extra_candidates']}/{facts['candidates']} candidates and "
                f"{facts['extra_steps']}/{facts['steps']} step rows"
            )
        if shape.get("score_as_string"):
            facts["score_types"] = [
                t for (t,) in conn.execute("SELECT DISTINCT typeof(score) FROM candidates").fetchall()
            ]
            outcome.notes.append(f"score stored as {'/'.join(facts['score_types'])}")


def run_matrix(
    work: Path,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
    skip: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Every scenario (the baseline first, always run); ``skip`` maps scenario names to why they are not run.
    Returns one Outcome per scenario, in order."""
    work.mkdir(parents=True, exist_ok=True)
    baseline_outcome, baseline_lab = run_recovering(SCENARIOS[0], work, None)
    if not baseline_outcome.recovered:
        raise RuntimeError(f"the fault-free baseline failed: {baseline_outcome.failure}")
    baseline = reference_of(observe(baseline_lab.db))
    outcomes = [baseline_outcome]
    if log:
        log(_line(baseline_outcome))
    for scenario in scenarios:
        if scenario is SCENARIOS[0]:
            continue
        if skip and scenario.name in skip:
            outcomes.append(Outcome(scenario, skipped=skip[scenario.name]))
            continue
        if scenario.expect == FAILS:
            outcome = run_failing(scenario, work, baseline_lab.data_dir, baseline)
        else:
            outcome, _ = run_recovering(scenario, work, baseline)
        outcomes.append(outcome)
        if log:
            log(_line(outcome))
    return outcomes


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]


def _line(o: Outcome) -> str:
    return (
        f"{o.scenario.name}: runs {o.runs} (failed {o.runs_failed}), requests {o.requests} (retried {o.retried}), "
        f"lost {o.rows_lost}, doubled {o.rows_doubled}, identical {o.identical}, {o.seconds:.1f}s"
    )


# --- the document ---------------------------------------------------------------------------------


def _quote(message: str, limit: int = 260) -> str:
    text = " ".join(message.removeprefix("dagster._core.definitions.events.Failure: ").split())
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


def outcome_text(o: Outcome) -> str:
    if o.skipped:
        return f"not run: {o.skipped}"
    if o.scenario.expect == FAILS:
        if not (o.runs_failed and o.failure):
            return "DID NOT FAIL"
        published = "nothing published (rows and lake files unchanged)" if o.nothing_published else "PUBLISHED"
        if o.failed_clearly:
            return f"failed clearly: {_quote(o.failure)}; {published}"
        gaps = o.message_gaps()
        problems = []
        if gaps:
            problems.append("the message names neither " + ", ".join(f"`{g}`" for g in gaps))
        if o.step_attempts > 1:
            problems.append(f"Dagster's RetryPolicy ran the step {o.step_attempts} times ({o.seconds:.0f} s)")
        return f"failed UNCLEARLY: {_quote(o.failure)}; {'; '.join(problems)}; {published}"
    if not o.recovered:
        return f"FAILED: {o.failure}"
    if o.scenario is SCENARIOS[0]:
        return "completed; tables equal the tenant's ground truth" if o.identical else "tables DIFFER from the truth"
    if o.scenario.transport:
        text = "recovered, tables identical to the fault-free run" if o.identical else "recovered, tables DIFFER"
    else:
        text = "recovered, tables equal the tenant's ground truth" if o.identical else "recovered, tables DIFFER"
        if o.scenario.same_as_baseline:
            text += " and the fault-free run" if o.same_as_baseline else " but NOT the fault-free run"
    return "; ".join([text, *o.notes])


def markdown(outcomes: list[Outcome], seconds: float) -> str:
    first, last = FIRST.isoformat(), LAST.isoformat()
    lines = [
        "# Reliability: the fault matrix",
        "",
        "Generated by `.venv/bin/python -m heymilo_pipeline_tests.reliability_matrix` (rewrites this file);",
        "`heymilo_pipeline_tests/test_reliability.py` runs the same matrix and asserts every row.",
        "",
        "**What is injected.** The simulator (`heymilo_pipeline/simulator`) serves a small tenant "
        f"(seed {SPEC.seed}, {SPEC.postings} postings, {SPEC.candidates_per_posting[0]}-"
        f"{SPEC.candidates_per_posting[1]} candidates each, UTC days {first}..{last}) on loopback, with one fault "
        "switched on: transport faults (`Faults`: 429 with `Retry-After`, 5xx, stalls beyond the client's timeout, "
        "dropped connections, truncated and malformed bodies, a cursor that stops advancing, a wrong `total_count`) "
        "or data-shape faults (`TenantSpec`: null optional objects, new fields, score sent as a string; absent keys "
        "by a wrapper that deletes the null ones). Faults are drawn per request from a seeded RNG.",
        "",
        "**What runs.** Per fault: a fresh data directory and (in-memory) Dagster instance; `postings`, then a "
        "backfill of every registered posting over the whole range, one run per posting (the real assets, "
        "`dg.materialize`). The client's backoff is the default (0.5 s doubling, jittered); it believes it may "
        "send 1,000,000 requests a minute, so the simulator's limit is what it meets. Faults that must fail run "
        "once, for the busiest posting, on a copy of the fault-free run's data directory.",
        "",
        "**How it is judged.** *Rows lost*: reference rows missing from DuckDB (candidates by `interview_id`, "
        "plus `candidate_workflow_steps` by `(interview_id, step_id)`). *Rows doubled*: rows present more than once "
        "(count minus distinct keys, both tables). The reference is the fault-free run for transport faults, and "
        "the tenant's own ground truth (validated and flattened into a scratch DuckDB file) for data-shape faults; "
        "*identical* means equal `Warehouse.checksum` of both tables (every column of every row). *Nothing "
        "published* means the checksums of both tables and of `partition_loads`, and the name and mtime of every "
        "lake file, are the same after the failed run as before. *Requests* are what the simulator served "
        "(postings and candidates); *retried* are those it answered with a fault the client must retry "
        "(5xx, 429, drop, truncated or malformed body, stall).",
        "",
        "| fault | simulator setting | runs | requests (retried) | rows lost | rows doubled | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        runs = f"{o.runs}" + (f" ({o.runs_failed} failed)" if o.runs_failed else "")
        cells = [o.scenario.name, o.scenario.setting, runs, f"{o.requests} ({o.retried})"]
        cells += [str(o.rows_lost), str(o.rows_doubled), outcome_text(o)]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    rows = outcomes[0].rows_expected
    lines += [
        "",
        f"Reference size: {rows} rows (candidates plus workflow steps) in the fault-free run. "
        f"Whole matrix: {seconds:.0f} s on a 2-core machine.",
        "",
        *findings(outcomes),
        *CRASH_SAFETY,
    ]
    return "\n".join(lines)


CRASH_SAFETY = [
    "## Crash safety",
    "",
    "`heymilo_pipeline_tests/test_crash.py` (not part of this generated table) runs `heymilo-pipeline backfill` "
    "for one posting of 40,000 candidates over 3 days in a child process and SIGKILLs it four times: while it "
    "writes the steps Parquet files, while it writes the candidates Parquet files, as the DuckDB load begins and "
    "0.25 s into it (the crash site holds an older complete load). After each kill an analyst's "
    "`read_parquet('lake/candidates/**/*.parquet')` works and `Lake.paths` lists no temp file, and DuckDB holds the "
    "older load, never part of the new one; the same command then completes and both tables, the lake's Parquet "
    "rows and its raw records equal a clean run's. What the test also shows:",
    "",
    "- A kill mid-write leaves hidden `.part.*.tmp-*` files (partly written, personal data) that nothing removes "
    "unless `Lake.clean_temp_files` is called.",
    "- Files are atomic one by one, not as a slice: between the crash and the rerun the lake can hold new steps "
    "beside old candidates, and new Parquet beside old DuckDB rows.",
    "- A run killed in the CLI's process stays STARTED in Dagster (nothing is left to report its end). "
    "`heymilo-pipeline` marks runs of its host whose process is gone as failed when it starts (`cli.py` "
    "`reap_dead_runs`); the last test of `test_crash.py` checks the rerun loads. Runs launched from the UI or the "
    "daemon are watched by Dagster's run monitoring instead.",
    "",
]


def findings(outcomes: list[Outcome]) -> list[str]:
    """What this run showed beyond the table (only what the outcomes support)."""
    by_name = {o.scenario.name: o for o in outcomes}
    found = []
    unclear = [o for o in outcomes if o.scenario.expect == FAILS and o.runs_failed and not o.failed_clearly]
    if unclear:
        names = ", ".join(o.scenario.name for o in unclear)
        found.append(
            f"- **Bug** ({names}): an error the client raises while fetching candidates reaches Dagster wrapped in "
            "an `ExceptionGroup` (`api/client.py` `gather_bounded` runs the slices in an `asyncio.TaskGroup`), so "
            "`except HeyMiloError` in `defs/assets.py` `raw_candidates` never catches it: instead of a "
            "non-retryable `dg.Failure` naming posting, days and cause, the step fails with a bare ExceptionGroup, "
            "the asset's `RetryPolicy(max_retries=2, delay=30, EXPONENTIAL)` runs it twice more (about 30 + 60 s, "
            "three times the requests), and the message is `Exceeded max_retries of 2`. Nothing is published, "
            "so the data stay safe."
        )
    extra = by_name.get("additive schema change (new fields)")
    if extra and extra.recovered and extra.same_as_baseline is False:
        found.append(
            "- **Simulator**: `extra_fields=True` is not purely additive: `simulator/postings.py` draws the new "
            "posting fields from the shared posting RNG, so every posting after the first gets another id and "
            "other step configurations (other resume scores, SMS criteria, form question counts). The pipeline is "
            "judged against that tenant's own ground truth; the known columns cannot be compared with the "
            "fault-free tenant's."
        )
    if extra and extra.facts.get("extra_keys"):
        keys = ", ".join(f"`{k}`" for k in extra.facts["extra_keys"])
        found.append(f"- New fields land in `extra` keyed by dotted path ({keys}); step fields in the steps' `extra`.")
    score = by_name.get("changed type: score as a string")
    if score and score.recovered and score.same_as_baseline:
        found.append(
            '- `score` sent as a string (`"72.5"`) is coerced by pydantic\'s lax mode: the tables are identical '
            "to the fault-free run (score stays DOUBLE); the lake's raw records keep the string as the API sent it. A "
            "non-numeric string would fail validation (SchemaError, not retried) and publish nothing."
        )
    return ["Findings of this run:", "", *found, ""] if found else []


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="heymilo-reliability-") as work:
        outcomes = run_matrix(Path(work), log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - started
    DOC.write_text(markdown(outcomes, seconds), encoding="utf-8")
    print(f"wrote {DOC} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
