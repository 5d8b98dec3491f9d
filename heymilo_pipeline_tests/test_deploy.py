"""The Docker deployment (deploy/), built, started and exercised end to end: ``make test-deploy``.

deploy/docker-compose.yaml with deploy/docker-compose.local.yaml on top (images built from Debian's packages,
moto for S3, the project's simulator as the API), on a Docker engine that ``make test-deploy`` installs and
starts (deploy/local/docker-host.sh). Everything goes through what a user of the stack touches: the
webserver's GraphQL (as the UI's buttons), ``docker-compose`` and the code-location container's CLI.

Marked ``deploy``: ``make test`` leaves it out, ``make test-deploy`` runs only it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from heymilo_pipeline.api.windows import day_of
from heymilo_pipeline.defs.tags import AS_OF_TAG, KIND_TAG
from heymilo_pipeline.simulator.tenant import Tenant, TenantSpec
from heymilo_pipeline_tests.dagster_ui import (
    BACKFILL,
    BACKFILL_DONE,
    FINISHED,
    LAUNCH_BACKFILL,
    expect_type,
    graphql,
    launch_run,
    loaded_repository,
    runs_report,
    server_answers,
    wait_for,
    wait_for_run,
)

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[1]
PROJECT = "heymilo-deploy-test"
FILES = ("deploy/docker-compose.yaml", "deploy/docker-compose.local.yaml")
WEBSERVER = "http://127.0.0.1:3000"
API_KEY = "sk_test_deploy-simulator"
# The simulated workspace (the api service's defaults in docker-compose.local.yaml): fixed days, so the test
# means the same on any date after them.
SPEC = TenantSpec(postings=4, start=date(2026, 1, 1), end=date(2026, 1, 30))
TENANT = Tenant(SPEC)
BACKFILLED = 2  # of the 3 postings (the fourth is a test posting): the update finds the third new
STARTUP_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 600.0


@dataclass
class Stack:
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, check: bool = True, timeout: float = 1800.0) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", PROJECT, *(arg for f in FILES for arg in ("-f", f)), *args]
        done = subprocess.run(command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command[5:])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done

    def timed(self, name: str, *args: str) -> None:
        started = time.monotonic()
        self.compose(*args)
        self.timings[name] = time.monotonic() - started
        print(f"\n{name}: {self.timings[name]:.1f} s", flush=True)

    def cli(self, *args: str) -> str:
        """``heymilo-pipeline ARGS`` in the code-location container, as an operator runs it."""
        return self.compose("exec", "-T", "code-location", "heymilo-pipeline", *args).stdout

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """A read-only query of the DuckDB file that ``publish`` wrote on the code location's volume."""
        code = (
            "import duckdb, json, sys; con = duckdb.connect('/data/heymilo.duckdb', read_only=True); "
            "print(json.dumps(con.sql(sys.argv[1]).fetchall(), default=str))"
        )
        out = self.compose("exec", "-T", "code-location", "python", "-c", code, statement).stdout
        return [tuple(row) for row in json.loads(out.strip().splitlines()[-1])]

    # The ``Watched`` protocol of dagster_ui.wait_for: a stack whose webserver died fails the wait at once.
    def check_alive(self) -> None:
        running = self.compose("ps", "--services", "--filter", "status=running", check=False).stdout.split()
        assert "webserver" in running and "daemon" in running, "the webserver or the daemon exited\n" + self.output()

    def output(self) -> str:
        return self.compose("logs", "--no-color", "--tail=60", check=False).stdout[-8000:]


def extra_ca() -> str:
    """The PEM of the certificate authorities this machine adds to Debian's (a TLS-inspecting proxy's), for
    pip inside the builds; empty where there are none."""
    folder = Path("/usr/local/share/ca-certificates")
    return "".join(p.read_text() for p in sorted(folder.glob("*.crt"))) if folder.is_dir() else ""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))}
    env.update(
        POSTGRES_PASSWORD=secrets.token_hex(12), S3_SECRET=secrets.token_hex(12), HEYMILO_API_KEY=API_KEY,
        HEYMILO_BASE_URL="http://api:8765", HEYMILO_START_DATE=SPEC.start.isoformat(),
        EXTRA_CA_PEM=os.environ.get("EXTRA_CA_PEM") or extra_ca(),
    )  # fmt: skip
    stack = Stack(env)
    stack.compose("down", "-v", "--remove-orphans", check=False)  # what a killed earlier run left
    failed = True
    try:
        stack.timed("build", "build")
        stack.timed("start", "up", "-d")
        started = time.monotonic()
        wait_for("the webserver to answer", lambda: server_answers(WEBSERVER), STARTUP_TIMEOUT_S, stack)
        wait_for("the code location to load", lambda: loaded_repository(WEBSERVER), STARTUP_TIMEOUT_S, stack)
        stack.timings["ready"] = time.monotonic() - started
        print(f"webserver and code location ready {stack.timings['ready']:.1f} s after up", flush=True)
        yield stack
        failed = False
    finally:
        if failed:
            print(stack.output())
        stack.compose("down", "-v", "--remove-orphans", check=False)


# --- the UI's buttons, over GraphQL ----------------------------------------------------------------


def run_job(stack: Stack, job: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Launch ``job`` as the Launchpad does; the daemon dequeues it and DockerRunLauncher starts its container."""
    repo = loaded_repository(WEBSERVER)
    assert repo, "the code location is not loaded"
    return wait_for_run(WEBSERVER, launch_run(WEBSERVER, repo, job, tags), RUN_TIMEOUT_S, stack)


RUNS = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId jobName status } }
  }
}
"""


def runs_tagged(tags: dict[str, str]) -> list[dict[str, Any]]:
    found = graphql(WEBSERVER, RUNS, {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}})
    return expect_type(found["runsOrError"], "Runs")["results"]


def launch_backfill(stack: Stack, postings: list[str], days: list[date]) -> dict[str, Any]:
    """The asset page's Launch backfill: raw_candidates for these postings x days."""
    names = [f"{day.isoformat()}|{posting}" for posting in postings for day in days]
    params = {"assetSelection": [{"path": ["raw_candidates"]}], "partitionNames": names, "title": "deploy test"}
    launched = graphql(WEBSERVER, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    backfill_id = expect_type(launched, "LaunchBackfillSuccess")["backfillId"]

    def finished() -> dict[str, Any] | None:
        found = graphql(WEBSERVER, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        backfill = expect_type(found, "PartitionBackfill")
        return backfill if backfill["status"] in BACKFILL_DONE else None

    backfill = wait_for(f"backfill {backfill_id}", finished, RUN_TIMEOUT_S, stack, interval_s=2.0)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
        f"backfill {backfill['status']}: {backfill['error']}\n{runs_report(WEBSERVER, backfill['runs'])}"
    )
    return backfill


# --- the truth ---------------------------------------------------------------------------------------


def truth(postings: list[str]) -> Counter[tuple[str, str]]:
    """Candidates per (posting, created day) of these postings, as the api service serves them."""
    return Counter(
        (r["posting_id"], day_of(r["created_at"]).isoformat()) for r in TENANT.truth() if r["posting_id"] in postings
    )


def published(stack: Stack) -> Counter[tuple[str, str]]:
    """Candidates per (posting, created day) in the DuckDB file ``heymilo-pipeline publish`` writes."""
    stack.cli("publish")
    rows = stack.sql(
        "SELECT posting_id, CAST(created_date AS VARCHAR), count(*), count(DISTINCT interview_id) "
        "FROM candidates GROUP BY ALL"
    )
    assert all(n == distinct for *_, n, distinct in rows), "a candidate is stored twice"
    return Counter({(posting, day): n for posting, day, n, _ in rows})


# --- the tests ---------------------------------------------------------------------------------------


def wanted_postings() -> list[str]:
    return sorted(p["id"] for p in TENANT.postings() if not p["test_posting"])


DAYS = [SPEC.start + timedelta(days=i) for i in range((SPEC.end - SPEC.start).days + 1)]


def test_a_backfill_launched_from_the_ui_fills_the_shared_tables(stack: Stack) -> None:
    listed = run_job(stack, "postings_job")
    assert listed["status"] == "SUCCESS", runs_report(WEBSERVER, [listed])
    postings = wanted_postings()[:BACKFILLED]
    started = time.monotonic()
    backfill = launch_backfill(stack, postings, DAYS)
    print(f"backfill of {len(postings)} postings x {len(DAYS)} days: {time.monotonic() - started:.1f} s, "
          f"{len(backfill['runs'])} runs")  # fmt: skip
    expected = truth(postings)
    got = published(stack)
    print(f"rows: {sum(got.values()):,} published, {sum(expected.values()):,} in the simulator")
    assert got == expected


def test_the_daily_update_runs_through_the_daemon(stack: Stack) -> None:
    """The schedule's request, launched as its tick would (the listing tagged as the update of a day); the daemon's
    update_after_postings sensor follows it with the candidate runs, which DockerRunLauncher starts."""
    as_of = SPEC.end + timedelta(days=1)
    update = {KIND_TAG: "update", AS_OF_TAG: as_of.isoformat()}
    listed = run_job(stack, "postings_job", update)
    assert listed["status"] == "SUCCESS", runs_report(WEBSERVER, [listed])

    def finished() -> list[dict[str, Any]] | None:
        runs = [r for r in runs_tagged(update) if r["jobName"] != "postings_job"]
        return runs if runs and all(r["status"] in FINISHED for r in runs) else None

    runs = wait_for("the update's candidate runs", finished, RUN_TIMEOUT_S, stack, interval_s=3.0)
    print(f"daily update of {as_of}: {len(runs)} candidate run(s) after the listing")
    assert all(r["status"] == "SUCCESS" for r in runs), runs_report(WEBSERVER, runs)
    postings = wanted_postings()
    expected, got = truth(postings), published(stack)
    # The backfilled postings stay whole; the others hold exactly the days the update fetched.
    assert {k: n for k, n in got.items() if k[0] in postings[:BACKFILLED]} == {
        k: n for k, n in expected.items() if k[0] in postings[:BACKFILLED]
    }
    assert all(expected[key] == n for key, n in got.items()), "a day the update fetched differs from the API"


def test_down_and_up_keep_the_data_and_a_second_backfill_changes_nothing(stack: Stack) -> None:
    before = published(stack)
    stack.timed("down", "down")
    stack.timed("up again", "up", "-d")
    wait_for("the webserver to answer", lambda: server_answers(WEBSERVER), STARTUP_TIMEOUT_S, stack)
    wait_for("the code location to load", lambda: loaded_repository(WEBSERVER), STARTUP_TIMEOUT_S, stack)
    assert published(stack) == before, "the restart lost or changed rows"
    postings = wanted_postings()[:BACKFILLED]
    launch_backfill(stack, postings, DAYS)
    after = published(stack)
    assert after == before
    assert {k: n for k, n in after.items() if k[0] in postings} == truth(postings)
