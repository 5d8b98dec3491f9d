"""The Docker deployment (deploy/), built, started and exercised end to end: ``make test-deploy``.

deploy/docker-compose.yaml with deploy/docker-compose.local.yaml on top (images built from Debian's packages,
moto for S3, the project's simulator as the API), on a Docker engine that ``make test-deploy`` installs and
starts (deploy/local/docker-host.sh). Everything goes through what a user of the stack touches: the
webserver's GraphQL (as the UI's buttons), ``docker-compose`` and the code-location container's CLI.

Marked ``deploy``: ``make test`` leaves it out, ``make test-deploy`` runs only it.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from heymilo_pipeline.simulator.tenant import Tenant, TenantSpec
from heymilo_pipeline_tests.dagster_ui import expect_type, graphql, loaded_repository, server_answers, wait_for
from heymilo_pipeline_tests.test_dagster_dev import BACKFILL, DONE, LAUNCH_BACKFILL, run_report
from heymilo_pipeline_tests.test_make_dev import FINISHED, LAUNCH_RUN, RUN

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[1]
PROJECT = "heymilo-deploy-test"
FILES = ("deploy/docker-compose.yaml", "deploy/docker-compose.local.yaml")
WEBSERVER = "http://127.0.0.1:3000"
API_KEY = "sk_test_deploy-simulator"
# The simulated workspace (the api service's defaults in docker-compose.local.yaml): fixed days, so the test
# means the same on any date after them.
SPEC = TenantSpec(postings=4, start=date(2026, 1, 1), end=date(2026, 1, 30))
BACKFILLED = 3  # postings in the first backfill; the last one is the run that gets killed
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


def repository() -> dict[str, Any]:
    repo = loaded_repository(WEBSERVER)
    assert repo, "the code location is not loaded"
    return repo


def launch_run(stack: Stack, job: str) -> dict[str, Any]:
    """Launch ``job`` as the Launchpad does; the daemon dequeues it and DockerRunLauncher starts its container."""
    repo = repository()
    selector = {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"], "jobName": job}
    launched = graphql(WEBSERVER, LAUNCH_RUN, {"params": {"selector": selector}})["launchRun"]
    run_id = expect_type(launched, "LaunchRunSuccess")["run"]["runId"]
    return wait_run(stack, run_id)


def wait_run(stack: Stack, run_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = expect_type(graphql(WEBSERVER, RUN, {"runId": run_id})["runOrError"], "Run")
        return run if run["status"] in FINISHED else None

    return wait_for(f"run {run_id} to finish", finished, RUN_TIMEOUT_S, stack, interval_s=2.0)


def launch_backfill(stack: Stack, postings: list[str], days: list[date]) -> dict[str, Any]:
    """The asset page's Launch backfill: raw_candidates for these postings x days."""
    names = [f"{day.isoformat()}|{posting}" for posting in postings for day in days]
    params = {"assetSelection": [{"path": ["raw_candidates"]}], "partitionNames": names, "title": "deploy test"}
    launched = graphql(WEBSERVER, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    backfill_id = expect_type(launched, "LaunchBackfillSuccess")["backfillId"]

    def finished() -> dict[str, Any] | None:
        found = graphql(WEBSERVER, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        backfill = expect_type(found, "PartitionBackfill")
        return backfill if backfill["status"] in DONE else None

    backfill = wait_for(f"backfill {backfill_id}", finished, RUN_TIMEOUT_S, stack, interval_s=2.0)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
        f"backfill {backfill['status']}: {backfill['error']}\n{run_report(WEBSERVER, backfill['runs'])}"
    )
    return backfill


# --- the truth ---------------------------------------------------------------------------------------


def truth(tmp: Path, postings: list[str]) -> Counter[tuple[str, str]]:
    """Candidates per (posting, created day) of these postings, as the api service serves them."""
    path = tmp / "truth.jsonl.gz"
    Tenant(SPEC).write_truth(str(path))
    counts: Counter[tuple[str, str]] = Counter()
    for line in gzip.decompress(path.read_bytes()).splitlines():
        doc = json.loads(line)
        if doc["posting_id"] in postings:
            counts[doc["posting_id"], datetime.fromtimestamp(doc["created_at"], UTC).date().isoformat()] += 1
    return counts


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
    return sorted(p["id"] for p in Tenant(SPEC).postings() if not p["test_posting"])


DAYS = [SPEC.start + timedelta(days=i) for i in range((SPEC.end - SPEC.start).days + 1)]


def test_a_backfill_launched_from_the_ui_fills_the_shared_tables(stack: Stack, tmp_path: Path) -> None:
    listed = launch_run(stack, "postings_job")
    assert listed["status"] == "SUCCESS", run_report(WEBSERVER, [listed])
    postings = wanted_postings()[:BACKFILLED]
    started = time.monotonic()
    backfill = launch_backfill(stack, postings, DAYS)
    print(f"backfill of {len(postings)} postings x {len(DAYS)} days: {time.monotonic() - started:.1f} s, "
          f"{len(backfill['runs'])} runs")  # fmt: skip
    expected = truth(tmp_path, postings)
    got = published(stack)
    print(f"rows: {sum(got.values()):,} published, {sum(expected.values()):,} in the simulator")
    assert got == expected
