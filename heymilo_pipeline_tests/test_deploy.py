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
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from heymilo_pipeline.api.windows import day_of
from heymilo_pipeline.defs.tags import AS_OF_TAG, KIND_TAG, range_tags
from heymilo_pipeline.devservers import free_port
from heymilo_pipeline.simulator.tenant import Tenant, TenantSpec
from heymilo_pipeline_tests.dagster_ui import (
    FINISHED,
    REEXECUTE,
    RUN,
    RUN_LOGS,
    chromium_binary,
    expect_type,
    graphql,
    launch_backfill,
    launch_run,
    loaded_repository,
    location_version,
    page_dom,
    runs_report,
    runs_tagged,
    screenshot,
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
# The api's latency while the test acts on a run in flight (POST /_sim/latency): each request of the run then
# takes this long, so a run that has logged its first page still has at least this long to go.
SLOW_API_MS = 10_000


@dataclass
class Stack:
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(
        self, *args: str, check: bool = True, timeout: float = 1800.0, text: bool = True
    ) -> subprocess.CompletedProcess[Any]:
        command = ["docker-compose", "-p", PROJECT, *(arg for f in FILES for arg in ("-f", f)), *args]
        done = subprocess.run(command, cwd=REPO, env=self.env, capture_output=True, text=text, timeout=timeout)
        if check and done.returncode != 0:
            err = done.stderr if text else done.stderr.decode(errors="replace")
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({done.returncode}):\n{err[-4000:]}")
        return done

    def timed(self, name: str, *args: str) -> None:
        started = time.monotonic()
        self.compose(*args)
        self.timings[name] = time.monotonic() - started
        print(f"\n{name}: {self.timings[name]:.1f} s", flush=True)

    def ready(self) -> float:
        """Wait until the webserver answers with the code location loaded; returns how long that took."""
        started = time.monotonic()
        wait_for("the webserver to answer", lambda: server_answers(WEBSERVER), STARTUP_TIMEOUT_S, self)
        wait_for("the code location to load", lambda: loaded_repository(WEBSERVER), STARTUP_TIMEOUT_S, self)
        return time.monotonic() - started

    def api_latency(self, ms: int) -> None:
        """Every later request to the api service takes ``ms`` longer (its admin route, on this host's loopback)."""
        url = f"http://127.0.0.1:{self.env['HEYMILO_SIM_PORT']}/_sim/latency"
        answer = httpx.post(url, json={"ms": ms}, headers={"X-API-KEY": API_KEY}, timeout=30, trust_env=False)
        assert answer.status_code == 200, answer.text

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
    if os.environ.get("HEYMILO_BASE_IMAGE"):  # the base docker-host.sh made, under the name it was told
        env["HEYMILO_BASE_IMAGE"] = os.environ["HEYMILO_BASE_IMAGE"]
    env.update(
        POSTGRES_PASSWORD=secrets.token_hex(12), S3_SECRET=secrets.token_hex(12), HEYMILO_API_KEY=API_KEY,
        HEYMILO_BASE_URL="http://api:8765", HEYMILO_START_DATE=SPEC.start.isoformat(),
        # 10x the real limit (the simulator sets none): the interview results that follow every candidates run,
        # at half of it, take a minute rather than ten beside the other tests.
        HEYMILO_RATE_LIMIT="3000",
        HEYMILO_SIM_POSTINGS=str(SPEC.postings), HEYMILO_SIM_START=SPEC.start.isoformat(),
        HEYMILO_SIM_END=SPEC.end.isoformat(), HEYMILO_SIM_LATENCY_MS="0", HEYMILO_SIM_PORT=str(free_port()),
        EXTRA_CA_PEM=os.environ.get("EXTRA_CA_PEM") or extra_ca(),
    )  # fmt: skip
    stack = Stack(env)
    stack.compose("down", "-v", "--remove-orphans", check=False)  # what a killed earlier run left
    failed = True
    try:
        stack.timed("build", "build")
        stack.timed("start", "up", "-d")
        stack.timings["ready"] = stack.ready()
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


def backfill(stack: Stack, postings: list[str], days: list[date]) -> dict[str, Any]:
    """The asset page's Launch backfill: raw_candidates for these postings x days; every run of it succeeded."""
    names = [f"{day.isoformat()}|{posting}" for posting in postings for day in days]
    params = {"assetSelection": [{"path": ["raw_candidates"]}], "partitionNames": names, "title": "deploy test"}
    return launch_backfill(WEBSERVER, params, RUN_TIMEOUT_S, stack)


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
    test: none is in an image. The control, an image given a value of its own as a build argument, shows that the
    search finds what a layer holds."""
    values = {name: stack.env[name].encode() for name in ("HEYMILO_API_KEY", "POSTGRES_PASSWORD", "S3_SECRET")}
    planted = secrets.token_hex(12)
    base = stack.env.get("HEYMILO_BASE_IMAGE", "heymilo/debian-python:bookworm")
    (tmp_path / "Dockerfile").write_text(f'FROM {base}\nARG LEAK\nRUN echo "$LEAK" > /leak.txt\n')
    control = f"{PROJECT}-leaky:{planted[:8]}"
    try:
        subprocess.run(
            ["docker", "build", "--network=host", "--build-arg", f"LEAK={planted}", "-t", control, "."],
            cwd=tmp_path, env={**os.environ, "DOCKER_BUILDKIT": "0"}, check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        found = secrets_in(control, {"PLANTED": planted.encode(), **values})[0]
        assert found == ["layer commands: PLANTED", "settings: PLANTED", "leak.txt: PLANTED"], found
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
    loaded = backfill(stack, BACKFILL_POSTINGS, DAYS)
    print(f"backfill of {len(BACKFILL_POSTINGS)} postings x {len(DAYS)} days: {time.monotonic() - started:.1f} s, "
          f"{len(loaded['runs'])} runs")  # fmt: skip
    expected = truth(BACKFILL_POSTINGS)
    got = published(stack)
    print(f"rows: {sum(got.values()):,} published, {sum(expected.values()):,} in the simulator")
    assert got == expected


def test_the_asset_page_shows_the_materialized_partitions(stack: Stack, tmp_path: Path) -> None:
    binary = chromium_binary()
    assert binary, "no chromium binary on PATH (chromium / chromium-browser): deploy/local/docker-host.sh installs it"
    graphql(WEBSERVER, "mutation { setNuxSeen }")  # the UI's first-visit dialog would cover the page
    page = f"{WEBSERVER}/assets/raw_candidates?view=partitions"
    html = page_dom(binary, page, tmp_path)
    materialized = len(BACKFILL_POSTINGS) * len(DAYS)
    assert f"Materialized ({materialized})" in html and "Failed (0)" in html, f"{page}:\n{html[-3000:]}"
    png = tmp_path / "raw_candidates-partitions.png"
    data = screenshot(binary, page, tmp_path, png)
    print(f"asset page: 'Materialized ({materialized})' shown; screenshot {png} ({len(data):,} bytes)")


def wait_for_fetch(stack: Stack, run_id: str) -> str:
    """The run's first progress line ("... page 1, 100/1168 rows ...") once its fetch is under way."""

    def fetching() -> str | None:
        logs = graphql(WEBSERVER, RUN_LOGS, {"runId": run_id})["logsForRun"]
        lines = [e.get("message") or "" for e in logs.get("events", [])]
        return next((line for line in lines if "postings done; now posting" in line), None)

    return wait_for(f"run {run_id} to fetch", fetching, RUN_TIMEOUT_S, stack, interval_s=0.5)


def run_node(run_id: str) -> dict[str, Any]:
    return expect_type(graphql(WEBSERVER, RUN, {"runId": run_id})["runOrError"], "Run")


def launch_slow_run(stack: Stack, posting: str) -> str:
    """One posting's 30 days in one run (as the asset page's Materialize of a range launches it), against a slow
    API; returns once the run has fetched its first page, so it has at least SLOW_API_MS left to go."""
    repo = loaded_repository(WEBSERVER)
    assert repo, "the code location is not loaded"
    stack.api_latency(SLOW_API_MS)
    run_id = launch_run(WEBSERVER, repo, "candidates_job", range_tags(DAYS[0], DAYS[-1], posting, posting))
    progress = wait_for_fetch(stack, run_id)
    print(f"run {run_id} fetching: {progress}")
    return run_id


def test_a_run_whose_container_is_killed_fails_and_its_reexecution_completes_the_tables(stack: Stack) -> None:
    try:
        run_id = launch_slow_run(stack, KILLED_POSTING)
        container = {t["key"]: t["value"] for t in run_node(run_id)["tags"]}["docker/container_id"]  # the launcher's
        subprocess.run(["docker", "kill", container], check=True, capture_output=True, timeout=60)
        killed = time.monotonic()
    finally:
        stack.api_latency(0)
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


def test_restarting_the_code_location_and_the_daemon_during_a_run_lets_it_finish(stack: Stack) -> None:
    """An upgrade's restarts, one service after the other, while a run is in flight: the run's container goes on and
    succeeds, and the webserver loads the new code location by itself."""
    before = published(stack)
    try:
        run_id = launch_slow_run(stack, BACKFILL_POSTINGS[0])
        version, started = location_version(WEBSERVER), time.monotonic()
        stack.compose("up", "-d", "--no-deps", "--force-recreate", "code-location")
        # While the server is away the location is an error entry; then a new version, loaded.
        new_version = lambda: location_version(WEBSERVER) not in (None, version)  # noqa: E731
        wait_for("the webserver to load the new code location", new_version, STARTUP_TIMEOUT_S, stack)
        reload_s = time.monotonic() - started
        assert run_node(run_id)["status"] == "STARTED", "the run ended before the code location was back"
        stack.compose("up", "-d", "--no-deps", "--force-recreate", "daemon")
        assert run_node(run_id)["status"] == "STARTED", "the run ended before the daemon was recreated"
        print(f"code location recreated and loaded again in {reload_s:.1f} s, daemon recreated "
              f"{time.monotonic() - started:.1f} s after the first restart; the run fetching throughout")  # fmt: skip
    finally:
        stack.api_latency(0)
    done = wait_for_run(WEBSERVER, run_id, RUN_TIMEOUT_S, stack)
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
        runs = [r for r in runs_tagged(WEBSERVER, update) if r["jobName"] != "postings_job"]
        # The sensor results_after_candidates follows each candidate run with the results of its partitions.
        jobs = Counter(r["jobName"] for r in runs)
        done = runs and all(r["status"] in FINISHED for r in runs)
        return runs if done and jobs["results_job"] == jobs["candidates_job"] > 0 else None

    runs = wait_for("the update's candidate and results runs", finished, RUN_TIMEOUT_S, stack, interval_s=3.0)
    print(f"daily update of {as_of}: {len(runs)} candidate and results run(s) after the listing")
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
    # The backup docs/production.md gives for PostgreSQL (the instance, the rate budget, the tables' catalog).
    dump = stack.compose("exec", "-T", "postgres", "pg_dump", "-U", "dagster", "-Fc", "dagster", text=False).stdout
    assert dump[:5] == b"PGDMP" and len(dump) > 100_000, f"pg_dump: {len(dump)} bytes"
    stack.timed("down", "down")
    stack.timed("up again", "up", "-d")
    stack.ready()
    assert published(stack) == before, "the restart lost or changed rows"
    backfill(stack, BACKFILL_POSTINGS, DAYS)
    after = published(stack)
    assert after == before
    assert {k: n for k, n in after.items() if k[0] in BACKFILL_POSTINGS} == truth(BACKFILL_POSTINGS)
