"""The interview_results asset materialized for real against the simulator on loopback: what is fetched, what is
stored, what a rerun asks again, and what the blocking check refuses."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from heymilo_pipeline import results_sync
from heymilo_pipeline.api.windows import DayRange, day_of
from heymilo_pipeline.defs.keys import INTERVIEW_RESULTS_KEY
from heymilo_pipeline.defs.partitions import key
from heymilo_pipeline.defs.results import RANGES_CHECK
from heymilo_pipeline.defs.tags import range_tags
from heymilo_pipeline.interview_results import FINISHED, StoredResult, flatten, scrub
from heymilo_pipeline.lake import RESULTS, Lake
from heymilo_pipeline.privacy import Scrubber
from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.storage.local import LocalStore
from heymilo_pipeline.tables import INTERVIEW_RESULTS, RESULT_TABLES
from heymilo_pipeline_tests.support import LAST, START, Harness, settings_for

pytestmark = pytest.mark.integration

KEY = "sk_test_RESULTS-5a4b3c2d"
RESULTS_SELECTION = dg.AssetSelection.assets(INTERVIEW_RESULTS_KEY)


class PlantedTenant(Tenant):
    """The simulator, with bad answers planted for chosen interviews (as an API fault would send them)."""

    planted: dict[str, Callable[[dict[str, Any]], None]]

    def interview_data(self, interview_id: str) -> dict[str, Any]:
        data = super().interview_data(interview_id)
        if interview_id in self.planted:
            data = copy.deepcopy(data)
            self.planted[interview_id](data)
        return data


class World(Harness):
    tenant: Tenant
    url: str

    def results(self, first: date = START, last: date = LAST, **changes: Any) -> dg.ExecuteInProcessResult:
        registered = self.registered
        tags = range_tags(first, last, registered[0], registered[-1])
        return self.materialize(RESULTS_SELECTION, tags, raise_on_error=False, **changes)

    def sim_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_sim/stats", headers={"X-API-KEY": KEY}).json()

    def finished(self) -> dict[str, dict[str, Any]]:
        """The simulator's finished candidates of the registered postings in START..LAST, by interview_id."""
        return {
            r["interview_id"]: r
            for r in self.tenant.truth()
            if r["posting_id"] in self.registered and START <= day_of(r["created_at"]) <= LAST
            and r["status"] in FINISHED
        }  # fmt: skip

    def stored_ids(self, table: str = INTERVIEW_RESULTS.name) -> list[str]:
        with self.store.connect(read_only=True) as conn:
            return [i for (i,) in conn.execute(f'SELECT interview_id FROM "{table}"').fetchall()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tenant = PlantedTenant(TenantSpec(seed=33, postings=3, start=START, end=LAST, candidates_per_posting=(60, 180)))
    tenant.planted = {}
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.instance_for_test() as instance:
        w = World(settings_for(url, KEY, tmp_path_factory.mktemp("data")), instance)
        w.tenant, w.url = tenant, url
        assert w.list_postings().success
        assert w.candidates(START, LAST, w.registered[0], w.registered[-1]).success
        yield w


def test_results_are_stored_for_every_finished_candidate_and_equal_the_api(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks and batches, so that this backlog is written the way a large one is: in several chunks.
    monkeypatch.setattr(results_sync, "CHUNK", 40)
    monkeypatch.setattr(results_sync, "BATCH", 10)
    writes: list[Counter[tuple[str, date]]] = []
    write_results = LocalStore.write_results

    def recorded(store: LocalStore, tables: dict[str, Any], remove: Any, run_id: str) -> dict[str, int]:
        rows = tables[INTERVIEW_RESULTS.name]
        writes.append(Counter(zip(rows["posting_id"].to_pylist(), rows["created_date"].to_pylist(), strict=True)))
        return write_results(store, tables, remove, run_id)

    monkeypatch.setattr(LocalStore, "write_results", recorded)
    before = world.sim_stats()
    result = world.results()
    assert result.success
    finished = world.finished()
    assert finished and Counter(world.stored_ids()) == Counter(list(finished))  # each once, none missing, none extra
    # Written newest day first, in chunks of whole posting-days, none much over CHUNK however dense a day is.
    largest = max(Counter((r["posting_id"], day_of(r["created_at"])) for r in finished.values()).values())
    assert len(writes) >= 3 and sum(sum(w.values()) for w in writes) == len(finished)
    assert all(sum(w.values()) < 40 + 10 + largest for w in writes)
    assert sum(len(w) for w in writes) == len(set().union(*writes))  # no posting-day in two writes
    assert all(min(d for _, d in newer) >= max(d for _, d in older) for newer, older in pairwise(writes))
    requests = world.sim_stats()["requests_total"] - before["requests_total"]
    assert requests == len(finished)  # one request per finished interview, none for the others
    # The tables equal what the API says, scrubbed as the settings say (no transcripts by default).
    scrubber = Scrubber("keep", None)
    want = flatten(
        StoredResult.of(scrub(world.tenant.interview_data(i), scrubber, False), r["posting_id"],
                        day_of(r["created_at"]), 0.0, "")
        for i, r in finished.items()
    )  # fmt: skip
    with world.store.connect(read_only=True) as conn:
        for spec in RESULT_TABLES:
            keep = [n for n in spec.names if n not in ("fetched_at", "candidate_state")]
            got = conn.execute(f'SELECT {", ".join(keep)} FROM "{spec.name}"').to_arrow_table()
            assert sorted(map(str, got.to_pylist())) == sorted(map(str, want[spec.name].select(keep).to_pylist())), (
                spec.name
            )
    # The lake keeps the raw results; every posting-day is marked materialized, with its figures.
    raw = Lake(world.data_dir / "lake").read(RESULTS)
    assert sorted(raw["interview_id"].to_pylist()) == sorted(finished)
    materialized = world.instance.get_materialized_partitions(INTERVIEW_RESULTS_KEY)
    assert len(materialized) == len(world.registered) * ((LAST - START).days + 1)


def test_a_rerun_fetches_nothing_until_a_candidate_changes(world: World) -> None:
    before = world.sim_stats()["requests_total"]
    assert world.results().success
    assert world.sim_stats()["requests_total"] == before  # nothing due: not one request
    # A candidate whose state changes is due again (its stored state is no longer the current one).
    some = sorted(world.finished())[0]
    with world.store.connect() as conn:
        conn.execute("UPDATE candidates SET score = coalesce(score, 0) + 1 WHERE interview_id = ?", [some])
    assert world.results().success
    assert world.sim_stats()["requests_total"] == before + 1


def states(world: World, posting_id: str, day: date) -> dict[str, str]:
    with world.store.connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT interview_id, candidate_state FROM interview_results WHERE posting_id = ? AND created_date = ?",
            [posting_id, day],
        ).fetchall()
    return dict(rows)


def due(world: World, posting_id: str, day: date) -> int:
    return world.store.results_due([posting_id], DayRange.single(day)).num_rows


def make_due(world: World, posting_id: str, day: date) -> None:
    """The posting-day's candidates changed since their results were fetched (as a new score would)."""
    with world.store.connect() as conn:
        conn.execute(
            "UPDATE candidates SET score = coalesce(score, 0) + 0.5 WHERE posting_id = ? AND created_date = ?",
            [posting_id, day],
        )


def test_a_result_out_of_its_documented_range_keeps_its_posting_day_out(world: World) -> None:
    assert world.results().success
    finished = world.finished()
    per_day = Counter((r["posting_id"], day_of(r["created_at"])) for r in finished.values())
    (victim_day, _), (other_day, _) = [(k, n) for k, n in per_day.most_common() if n >= 2][:2]
    victim = next(
        i for i, r in sorted(finished.items())
        if (r["posting_id"], day_of(r["created_at"])) == victim_day and world.tenant.interview_data(i)["web_interview"]
    )  # fmt: skip

    def eleven(data: dict[str, Any]) -> None:
        data["web_interview"]["scorecard"][0]["score"] = 11

    world.tenant.planted[victim] = eleven
    before = states(world, *victim_day)
    make_due(world, *victim_day)
    make_due(world, *other_day)
    result = world.results()
    assert not result.success
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == RANGES_CHECK]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    text = evaluation.description or ""
    posting_id, day = victim_day
    assert f"posting {posting_id}, day {day}" in text and victim in text and "interview_scorecard.score = 11" in text
    # Nothing of the refused posting-day was stored; the other posting-day was.
    assert states(world, *victim_day) == before
    assert states(world, *other_day) and not due(world, *other_day)
    marked = {m.partition for m in result.asset_materializations_for_node("interview_results_step")}
    assert key(posting_id, day) not in marked and key(*other_day) in marked
    # Once the API sends valid results, a rerun stores the posting-day.
    del world.tenant.planted[victim]
    assert world.results().success and not due(world, *victim_day)


def test_the_results_checks_fail_on_planted_bad_data(world: World) -> None:
    assert world.results().success
    as_of = LAST + timedelta(days=30)
    names = ("results_complete", "results_in_ranges", "results_unique_and_referenced")
    checks = world.check(as_of)
    assert all(checks[n].passed for n in names), {n: checks[n].description for n in names}
    victim = sorted(world.finished())[2]
    posting_id = world.finished()[victim]["posting_id"]
    plants = {  # check: (the bad data, its undoing)
        "results_in_ranges": (
            "UPDATE interview_results SET integrity_threshold = integrity_threshold + 1000 WHERE interview_id = ?",
            "UPDATE interview_results SET integrity_threshold = integrity_threshold - 1000 WHERE interview_id = ?",
        ),
        "results_unique_and_referenced": (
            "UPDATE interview_scorecard SET created_date = created_date + 1 WHERE interview_id = ?",
            "UPDATE interview_scorecard SET created_date = created_date - 1 WHERE interview_id = ?",
        ),
    }
    for name, (plant, undo) in plants.items():
        with world.store.connect() as conn:
            assert conn.execute(plant, [victim]).fetchone()[0] >= 1, name
        checks = world.check(as_of)
        with world.store.connect() as conn:
            conn.execute(undo, [victim])
        assert not checks[name].passed, name
        assert victim in (checks[name].description or "") and posting_id in (checks[name].description or ""), name
        assert all(checks[n].passed for n in names if n != name), name
    # A candidate's results missing: the completeness check names it.
    with world.store.connect() as conn:
        conn.execute("DELETE FROM interview_results WHERE interview_id = ?", [victim])
    checks = world.check(as_of)
    assert not checks["results_complete"].passed and victim in (checks["results_complete"].description or "")
    assert not checks["results_unique_and_referenced"].passed  # its child rows lost their interview's row
    assert world.results().success
    assert all(world.check(as_of)[n].passed for n in names)


def test_results_follow_every_candidates_run(world: World) -> None:
    """A run of candidates_job that ends (here: the update of one posting-day that gained a finished candidate)
    is followed by one results run over the same partitions, which fetches that candidate's results."""
    from heymilo_pipeline.defs.sensors import results_after_candidates

    assert world.results().success
    finished = world.finished()
    victim = sorted(finished)[0]
    posting_id, day = finished[victim]["posting_id"], day_of(finished[victim]["created_at"])
    with world.store.connect() as conn:
        conn.execute("DELETE FROM interview_results WHERE interview_id = ?", [victim])
    defs = world.defs()
    tags = range_tags(day, day, posting_id, posting_id)
    candidates = defs.resolve_job_def("candidates_job").execute_in_process(
        instance=world.instance, resources=defs.resources, tags=tags
    )
    assert candidates.success
    with dg.build_sensor_context(instance=world.instance, definitions=defs) as context:
        found = results_after_candidates(context)
    assert isinstance(found, dg.SensorResult)
    (request,) = found.run_requests or []
    assert request.run_key == f"results-after-{candidates.run_id}" and request.tags == tags
    assert due(world, posting_id, day) == 1
    ran = defs.resolve_job_def("results_job").execute_in_process(
        instance=world.instance, resources=defs.resources, tags=request.tags
    )
    assert ran.success and due(world, posting_id, day) == 0 and victim in states(world, posting_id, day)
    # Evaluated again with its cursor, the sensor asks for nothing more.
    with dg.build_sensor_context(instance=world.instance, cursor=found.cursor, definitions=defs) as context:
        assert isinstance(results_after_candidates(context), dg.SkipReason)


def test_the_readme_queries_run_on_the_results(world: World) -> None:
    """README's results queries, as printed, on a real warehouse: each statement runs and answers something."""
    assert world.results().success
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- results-sql", 1)[1].split("\n## ", 1)[0].split("After `make demo`")[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```sql\n")[1:]]
    statements = [s.strip() for b in blocks for s in b.split(";") if s.strip()]
    assert len(blocks) == 4 and len(statements) == 5
    with world.store.connect(read_only=True) as conn:
        for sql in statements:
            assert conn.execute(sql).fetchall(), sql
