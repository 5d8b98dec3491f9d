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
import re
import secrets
import subprocess
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from heymilo_pipeline.api.windows import day_of
from heymilo_pipeline.defs.tags import AS_OF_TAG, KIND_TAG, range_tags
from heymilo_pipeline.simulator.tenant import Tenant, TenantSpec
from heymilo_pipeline_tests.dagster_ui import (
    BACKFILL,
    BACKFILL_DONE,
    FINISHED,
    LAUNCH_BACKFILL,
    RUN,
    RUN_LOGS,
    chromium,
    chromium_binary,
    expect_type,
    graphql,
    launch_run,
    loaded_repository,
    png_size,
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
API_KEY = f"sk_test_{secrets.token_hex(12)}"  # secrets are fresh each run: a leak of them shows in a rebuilt layer
IMAGES = ("heymilo-pipeline", "heymilo/postgres-debian", "heymilo/s3-moto")
# The simulated workspace the api service serves (passed to it below): fixed days, so the test means the same on
# any date after them. Of its postings with candidates, the first two are backfilled from the UI, the third is
# the run whose container is killed, and the fourth only the daily update fetches.
SPEC = TenantSpec(postings=6, start=date(2026, 1, 1), end=date(2026, 1, 30))
TENANT = Tenant(SPEC)
BACKFILLED = 2
STARTUP_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 600.0
MONITORING_POLL_S = 30  # run_monitoring.poll_interval_seconds in deploy/dagster.yaml
SLOW_API_MS = 2000  # the api's latency while a run is killed: its fetch lasts long enough to be killed midway


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
        HEYMILO_SIM_POSTINGS=str(SPEC.postings), HEYMILO_SIM_START=SPEC.start.isoformat(),
        HEYMILO_SIM_END=SPEC.end.isoformat(), HEYMILO_SIM_LATENCY_MS="0",
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


REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

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


def postings_with_candidates() -> list[str]:
    """The workspace's postings that have candidates (test postings aside), in a fixed order."""
    counts = Counter(r["posting_id"] for r in TENANT.truth())
    return sorted(p["id"] for p in TENANT.postings() if not p["test_posting"] and counts[p["id"]])


POSTINGS = postings_with_candidates()
BACKFILL_POSTINGS, KILLED_POSTING, UPDATE_ONLY_POSTING = POSTINGS[:BACKFILLED], POSTINGS[2], POSTINGS[3]
DAYS = [SPEC.start + timedelta(days=i) for i in range((SPEC.end - SPEC.start).days + 1)]


def image_files(image: str) -> Iterator[tuple[str, bytes]]:
    """Every regular file of ``image`` (path, content), streamed from ``docker export`` of a container never run."""
    created = subprocess.run(["docker", "create", image], check=True, capture_output=True, text=True, timeout=120)
    container = created.stdout.strip()
    try:
        with subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE) as export:
            assert export.stdout is not None
            with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
                for member in tar:
                    if member.isfile():
                        extracted = tar.extractfile(member)
                        yield member.name, extracted.read() if extracted else b""
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=120)


def secrets_in(image: str, values: dict[str, bytes]) -> tuple[list[str], int]:
    """Where any of ``values`` shows in ``image``: its layers' commands (``docker history``), its settings (``docker
    image inspect``) and its files; with the number of files read."""
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image], check=True, capture_output=True,
        timeout=120,
    ).stdout  # fmt: skip
    settings = subprocess.run(["docker", "image", "inspect", image], check=True, capture_output=True).stdout
    found = [f"layer commands: {name}" for name, value in values.items() if value in history]
    found += [f"settings: {name}" for name, value in values.items() if value in settings]
    files = 0
    for path, content in image_files(image):
        files += 1
        found += [f"{path}: {name}" for name, value in values.items() if value in content]
        if Path(path).name.startswith(".env") or path.startswith(("opt/heymilo/data/", "opt/heymilo/.venv/")):
            found.append(f"{path}: from the build context")
    return found, files


def test_no_secret_is_in_an_image(stack: Stack, tmp_path: Path) -> None:
    """The stack's secrets are in the environment of ``docker-compose build`` and ``up``, fresh for each run of the
    test: none is in an image. The control, an image given one as a build argument, shows the search finds it."""
    values = {name: stack.env[name].encode() for name in ("HEYMILO_API_KEY", "POSTGRES_PASSWORD", "S3_SECRET")}
    base = os.environ.get("HEYMILO_BASE_IMAGE", "heymilo/debian-python:bookworm")
    (tmp_path / "Dockerfile").write_text(f'FROM {base}\nARG LEAK\nRUN echo "$LEAK" > /leak.txt\n')
    control = f"{PROJECT}-leaky"
    subprocess.run(
        ["docker", "build", "--network=host", "--build-arg", f"LEAK={stack.env['S3_SECRET']}", "-t", control, "."],
        cwd=tmp_path, env={**os.environ, "DOCKER_BUILDKIT": "0"}, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    try:
        leaked = ["layer commands: S3_SECRET", "settings: S3_SECRET", "leak.txt: S3_SECRET"]
        assert secrets_in(control, values)[0] == leaked
    finally:
        subprocess.run(["docker", "rmi", "-f", control], capture_output=True, timeout=120)
    for image in IMAGES:
        found, files = secrets_in(image, values)
        assert not found, f"{image}: {found[:10]}"
        print(f"{image}: no secret in its layer commands, its settings or its {files:,} files")


def test_a_backfill_launched_from_the_ui_fills_the_shared_tables(stack: Stack) -> None:
    listed = run_job(stack, "postings_job")
    assert listed["status"] == "SUCCESS", runs_report(WEBSERVER, [listed])
    started = time.monotonic()
    backfill = launch_backfill(stack, BACKFILL_POSTINGS, DAYS)
    print(f"backfill of {len(BACKFILL_POSTINGS)} postings x {len(DAYS)} days: {time.monotonic() - started:.1f} s, "
          f"{len(backfill['runs'])} runs")  # fmt: skip
    expected = truth(BACKFILL_POSTINGS)
    got = published(stack)
    print(f"rows: {sum(got.values()):,} published, {sum(expected.values()):,} in the simulator")
    assert got == expected


def test_the_asset_page_shows_the_materialized_partitions(stack: Stack, tmp_path: Path) -> None:
    binary = chromium_binary()
    assert binary, "no chromium binary on PATH (chromium / chromium-browser): make test-deploy needs one"
    graphql(WEBSERVER, "mutation { setNuxSeen }")  # the UI's first-visit dialog would cover the page
    page = f"{WEBSERVER}/assets/raw_candidates?view=partitions"
    budget = ["--virtual-time-budget=20000", "--window-size=1600,1000"]
    dom = chromium(binary, [*budget, "--dump-dom", page], tmp_path, "dom")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom.stdout.decode(errors="replace")))
    materialized = len(BACKFILL_POSTINGS) * len(DAYS)
    assert f"Materialized ({materialized})" in text and "Failed (0)" in text, (
        f"chromium --dump-dom {page}: exit {dom.returncode}\n{text[-3000:]}\n"
        f"{dom.stderr.decode(errors='replace')[-2000:]}"
    )
    png = tmp_path / "raw_candidates-partitions.png"
    shot = chromium(binary, [*budget, f"--screenshot={png}", page], tmp_path, "shot")
    assert shot.returncode == 0 and png.exists(), shot.stderr.decode(errors="replace")[-3000:]
    data = png.read_bytes()
    assert png_size(data) == (1600, 1000) and len(data) > 30_000, f"{png}: {len(data)} bytes"
    print(f"asset page: 'Materialized ({materialized})' shown; screenshot {png} ({len(data):,} bytes)")


def set_api_latency(stack: Stack, latency_ms: int) -> None:
    """Recreate the api service alone with another latency (the other services keep running)."""
    stack.env["HEYMILO_SIM_LATENCY_MS"] = str(latency_ms)
    stack.compose("up", "-d", "--no-deps", "api")


def wait_for_fetch(stack: Stack, run_id: str) -> str:
    """The run's first progress line ("... page 1, 100/1168 rows ...") once its fetch is under way."""

    def fetching() -> str | None:
        logs = graphql(WEBSERVER, RUN_LOGS, {"runId": run_id})["logsForRun"]
        lines = [e.get("message") or "" for e in logs.get("events", [])]
        return next((line for line in lines if "postings done; now posting" in line), None)

    return wait_for(f"run {run_id} to fetch", fetching, RUN_TIMEOUT_S, stack, interval_s=0.5)


def run_status(run_id: str) -> str:
    return expect_type(graphql(WEBSERVER, RUN, {"runId": run_id})["runOrError"], "Run")["status"]


LOCATIONS = """
query {
  locationStatusesOrError {
    __typename
    ... on WorkspaceLocationStatusEntries { entries { name loadStatus versionKey } }
  }
}
"""


def location_version() -> str | None:
    """The webserver's version of the loaded code location: it changes when the webserver reloads a new server."""
    found = expect_type(graphql(WEBSERVER, LOCATIONS)["locationStatusesOrError"], "WorkspaceLocationStatusEntries")
    loaded = [e["versionKey"] for e in found["entries"] if e["loadStatus"] == "LOADED"]
    return loaded[0] if loaded else None


def test_a_run_whose_container_is_killed_fails_and_its_reexecution_completes_the_tables(stack: Stack) -> None:
    repo = loaded_repository(WEBSERVER)
    assert repo, "the code location is not loaded"
    set_api_latency(stack, SLOW_API_MS)
    try:
        # One posting's 30 days in one run, as the asset page's Materialize of a range launches it.
        tags = range_tags(DAYS[0], DAYS[-1], KILLED_POSTING, KILLED_POSTING)
        run_id = launch_run(WEBSERVER, repo, "candidates_job", tags)
        progress = wait_for_fetch(stack, run_id)
        run = expect_type(graphql(WEBSERVER, RUN, {"runId": run_id})["runOrError"], "Run")
        container = {t["key"]: t["value"] for t in run["tags"]}["docker/container_id"]  # DockerRunLauncher's tag
        subprocess.run(["docker", "kill", container], check=True, capture_output=True, timeout=60)
        killed = time.monotonic()
        print(f"killed the container of run {run_id} at: {progress}")
    finally:
        set_api_latency(stack, 0)
    failed = wait_for_run(WEBSERVER, run_id, MONITORING_POLL_S + 120, stack)
    detected = time.monotonic() - killed
    print(f"run monitoring marked it {failed['status']} {detected:.1f} s after the kill (poll {MONITORING_POLL_S} s)")
    assert failed["status"] == "FAILURE"
    assert detected <= MONITORING_POLL_S + 60, "run monitoring took longer than its poll interval allows"

    params = {"parentRunId": run_id, "strategy": "FROM_FAILURE"}
    launched = graphql(WEBSERVER, REEXECUTE, {"params": params})["launchRunReexecution"]
    again = expect_type(launched, "LaunchRunSuccess")["run"]["runId"]
    done = wait_for_run(WEBSERVER, again, RUN_TIMEOUT_S, stack)
    assert done["status"] == "SUCCESS", runs_report(WEBSERVER, [done])
    postings = [*BACKFILL_POSTINGS, KILLED_POSTING]
    got = published(stack)  # also: no interview stored twice
    print(f"after the re-execution: {sum(got.values()):,} rows, {sum(truth(postings).values()):,} in the simulator")
    assert got == truth(postings)


def test_a_rolling_restart_during_a_run_lets_the_run_finish(stack: Stack) -> None:
    """An upgrade's restarts (the code location, then the daemon) while a run is in flight: the run's container,
    started from the image of its launch, goes on and succeeds; the webserver reloads the code location."""
    repo = loaded_repository(WEBSERVER)
    assert repo, "the code location is not loaded"
    before = published(stack)
    posting = BACKFILL_POSTINGS[0]
    set_api_latency(stack, SLOW_API_MS)
    try:
        run_id = launch_run(WEBSERVER, repo, "candidates_job", range_tags(DAYS[0], DAYS[-1], posting, posting))
        wait_for_fetch(stack, run_id)
        version, started = location_version(), time.monotonic()
        stack.compose("up", "-d", "--no-deps", "--force-recreate", "code-location")

        def new_version() -> bool:  # while the server is down the location is an error, not a version
            return location_version() not in (None, version)

        wait_for("the webserver to reload the new code location", new_version, STARTUP_TIMEOUT_S, stack)
        assert loaded_repository(WEBSERVER), "the reloaded code location has no assets"
        reload_s, status_then = time.monotonic() - started, run_status(run_id)
        stack.compose("up", "-d", "--no-deps", "--force-recreate", "daemon")
        print(f"code location recreated and reloaded in {reload_s:.1f} s (the run then: {status_then}), daemon "
              f"recreated {time.monotonic() - started:.1f} s after the restart began")  # fmt: skip
        done = wait_for_run(WEBSERVER, run_id, RUN_TIMEOUT_S, stack)
    finally:
        set_api_latency(stack, 0)
    assert done["status"] == "SUCCESS", runs_report(WEBSERVER, [done])
    assert published(stack) == before, "the run replaced its posting's days with other rows"


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
    whole = [*BACKFILL_POSTINGS, KILLED_POSTING]
    expected, got = truth(POSTINGS), published(stack)
    # The postings loaded whole stay whole; the fourth holds exactly the recent days the update fetched.
    assert {k: n for k, n in got.items() if k[0] in whole} == truth(whole)
    fetched = {k: n for k, n in got.items() if k[0] == UPDATE_ONLY_POSTING}
    print(f"the update fetched {sum(fetched.values())} rows of posting {UPDATE_ONLY_POSTING} over {len(fetched)} days")
    assert fetched, f"the update fetched nothing of posting {UPDATE_ONLY_POSTING}, which it had never loaded"
    assert all(expected[key] == n for key, n in fetched.items()), "a day the update fetched differs from the API"


def test_down_and_up_keep_the_data_and_a_second_backfill_changes_nothing(stack: Stack) -> None:
    before = published(stack)
    stack.timed("down", "down")
    stack.timed("up again", "up", "-d")
    wait_for("the webserver to answer", lambda: server_answers(WEBSERVER), STARTUP_TIMEOUT_S, stack)
    wait_for("the code location to load", lambda: loaded_repository(WEBSERVER), STARTUP_TIMEOUT_S, stack)
    assert published(stack) == before, "the restart lost or changed rows"
    launch_backfill(stack, BACKFILL_POSTINGS, DAYS)
    after = published(stack)
    assert after == before
    assert {k: n for k, n in after.items() if k[0] in BACKFILL_POSTINGS} == truth(BACKFILL_POSTINGS)
