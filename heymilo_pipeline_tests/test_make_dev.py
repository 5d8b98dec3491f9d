"""`make dev` end to end: ``python -m heymilo_pipeline.dev`` as a user starts it, driven over GraphQL.

One ``make dev`` (the simulator in-process plus ``dagster dev``) serves the whole module from a temporary data
directory. The first test reads what the code location defines (assets, checks, schedule, sensor), registers
the postings with a run of ``postings_job`` and loads ONE posting x day partition with a run of
``candidates_job``, both launched with the mutation the UI's Launchpad uses. The second test takes a headless
Chromium screenshot of the asset graph (skipped without a chromium binary). Stopping ``make dev`` is part of the
test: SIGINT, as Ctrl-C sends it, must stop the dev process, ``dagster dev`` (its own session, started by
dev.py) and everything they started; SIGTERM / SIGKILL only clean up after a failure.

Slow-ish (~40-60 s: a code location load and two runs); no timing assertions, only timeouts that fail with the
processes' output.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from heymilo_pipeline.api.windows import day_of
from heymilo_pipeline.defs.tags import KIND_TAG
from heymilo_pipeline.demo import DEMO_KEY, DEMO_RATE_LIMIT, demo_tenant
from heymilo_pipeline.warehouse import query
from heymilo_pipeline_tests.dagster_ui import (
    CHECKS,
    RUN_LOGS,
    Proc,
    check_names,
    chromium_binary,
    expect_type,
    free_port,
    graphql,
    launch_run,
    loaded_repository,
    page_dom,
    processes,
    screenshot,
    server_answers,
    signal_group,
    tail,
    wait_for,
    wait_for_run,
)
from heymilo_pipeline_tests.support import product_yesterday

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAYS = 10
ASSETS = {"postings", "raw_candidates", "candidates", "candidate_workflow_steps", "posting_funnel", "interview_results"}
PARTITIONED = ("raw_candidates",)  # the DuckDB tables it loads are whole tables, recorded once a run
GROUP = "heymilo"
STARTUP_TIMEOUT_S = 150.0
RUN_TIMEOUT_S = 120.0
SIGINT_TIMEOUT_S = 60.0  # dev.py itself gives dagster dev 30 s before it kills it
KILL_TIMEOUT_S = 15.0


# --- processes --------------------------------------------------------------------------------------


def descendants(root: int) -> list[Proc]:
    table = processes()
    children: dict[int, list[Proc]] = {}
    for proc in table:
        children.setdefault(proc.ppid, []).append(proc)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def _ignore_sigint() -> None:
    # What a shell gives a job it starts in the background without job control (and some supervisors): SIGINT
    # ignored, which stays ignored in every child unless dev.py handles it (Dagster's dev server stops on SIGINT).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class MakeDev:
    """``python -m heymilo_pipeline.dev`` in its own session, logging to a file."""

    popen: subprocess.Popen[bytes]
    log: Path
    url: str
    data_dir: Path
    started: float = field(default_factory=time.monotonic)
    groups: set[int] = field(default_factory=set)  # process groups (= sessions here) of dev.py and dagster dev

    @classmethod
    def start(cls, tmp: Path, port: int, sigint_ignored: bool = False) -> MakeDev:
        data_dir = tmp / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))}
        env.update(PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        args = [sys.executable, "-m", "heymilo_pipeline.dev", "--port", str(port), "--data-dir", str(data_dir),
                "--days", str(DAYS)]  # fmt: skip
        log = tmp / "make_dev.log"
        # cwd=tmp: dagster dev reads .env from its working directory, and a developer's .env must not leak in.
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_ignore_sigint if sigint_ignored else None,
            )  # fmt: skip
        dev = cls(popen, log, f"http://127.0.0.1:{port}", data_dir)
        dev.groups.add(popen.pid)
        return dev

    def output(self, lines: int = 120) -> str:
        return f"--- make dev output (tail) ---\n{tail(self.log, lines)}"

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"make dev exited with code {self.popen.returncode}\n{self.output()}")

    def simulator_url(self) -> str | None:
        for line in tail(self.log, 10_000).splitlines():
            if line.startswith("Simulator on "):
                return line.split()[2].rstrip(";")
        return None

    def track(self) -> None:
        """Remember the process groups of everything dev.py started (dagster dev runs in its own session)."""
        self.groups |= {proc.pgid for proc in descendants(self.popen.pid)}
        self.groups |= {proc.sid for proc in descendants(self.popen.pid)}

    def remaining(self, *, zombies: bool = False) -> list[Proc]:
        return [
            proc
            for proc in processes()
            if (proc.pgid in self.groups or proc.sid in self.groups) and (zombies or proc.state != "Z")
        ]

    def stop(self, sig: signal.Signals = signal.SIGINT, group: bool = True) -> tuple[int | None, list[Proc]]:
        """``sig`` to dev.py's group (Ctrl-C: SIGINT; a closed terminal: SIGHUP) or to dev.py alone (a supervisor's
        SIGTERM); returns dev.py's exit code and what the signal left running.

        Whatever is left gets SIGTERM, then SIGKILL, so nothing outlives the test either way.
        """
        if self.popen.poll() is None:
            self.track()
        if group:
            signal_group(self.popen.pid, sig)
        else:
            with suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
        deadline = time.monotonic() + SIGINT_TIMEOUT_S
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=SIGINT_TIMEOUT_S)
        while self.remaining() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = self.remaining()
        code = self.popen.poll()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.remaining():
                break
            print(f"make dev: {len(self.remaining())} process(es) left, sending {sig.name} to groups {self.groups}")
            for pgid in self.groups:
                signal_group(pgid, sig)
            deadline = time.monotonic() + KILL_TIMEOUT_S
            while self.remaining() and time.monotonic() < deadline:
                time.sleep(0.2)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=KILL_TIMEOUT_S)
        return code, left


# --- GraphQL ----------------------------------------------------------------------------------------


ASSET = """
query Asset($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetChecksOrError {
        __typename
        ... on AssetChecks { checks { name executionForLatestMaterialization { runId status } } }
      }
    }
  }
}
"""


def run_report(url: str, run_id: str) -> str:
    """The errors and warnings of a run, for a failure message."""
    out = [f"run {run_id}:"]
    logs = graphql(url, RUN_LOGS, {"runId": run_id})["logsForRun"]
    for event in logs.get("events", []):
        if event.get("error"):
            out.append(f"  {event['__typename']} {event.get('stepKey')}: {event['error']['message']}")
            out.append("    " + "".join(event["error"].get("stack") or [])[-2000:])
        elif event.get("level") in ("ERROR", "CRITICAL", "WARNING"):
            out.append(f"  {event['level']} {event.get('stepKey')}: {event.get('message')}")
    return "\n".join(out)


def launch_and_wait(dev: MakeDev, repo: dict[str, Any], job: str, tags: dict[str, str]) -> dict[str, Any]:
    """Launch ``job`` as the Launchpad does (queued, then dequeued by the daemon) and wait until it finishes."""
    run_id = launch_run(dev.url, repo, job, tags)
    launched_at = time.monotonic()
    run = wait_for_run(dev.url, run_id, RUN_TIMEOUT_S, dev)
    print(f"{job} run {run_id}: {run['status']} {time.monotonic() - launched_at:.1f}s after launch")
    assert run["status"] == "SUCCESS", f"{job} run {run['status']}\n{run_report(dev.url, run_id)}\n{dev.output(60)}"
    return run


def asset(url: str, key: str) -> dict[str, Any]:
    return expect_type(graphql(url, ASSET, {"key": {"path": [key]}})["assetNodeOrError"], "AssetNode")


# --- fixtures ---------------------------------------------------------------------------------------


@dataclass
class Loaded:
    dev: MakeDev
    repo: dict[str, Any]


@pytest.fixture(scope="module")
def make_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """One ``make dev`` for the module, up with its code location loaded; stopped (and checked) at the end."""
    if product_yesterday(300) != product_yesterday():  # make dev reads the real clock
        pytest.skip("too close to midnight UTC: the daily partitions would change while the tests run")
    tmp = tmp_path_factory.mktemp("make_dev")
    dev = MakeDev.start(tmp, free_port())
    failed = True
    try:
        wait_for("the webserver to answer", lambda: server_answers(dev.url), STARTUP_TIMEOUT_S, dev)
        dev.track()
        repo = wait_for("the code location to load", lambda: loaded_repository(dev.url), STARTUP_TIMEOUT_S, dev)
        dev.track()  # the code server and the daemon are up by now
        print(f"\nmake dev: code location {repo['location']['name']} loaded {time.monotonic() - dev.started:.1f}s "
              f"after start; process groups {sorted(dev.groups)}")  # fmt: skip
        yield Loaded(dev, repo)
        failed = False
    finally:
        code, left = dev.stop()
        print(f"\nmake dev: SIGINT to process group {dev.popen.pid}; exit code {code}, {len(left)} process(es) of "
              f"groups {sorted(dev.groups)} left")  # fmt: skip
        if failed or left or code != 0:
            print(dev.output(150))
    assert not left, "SIGINT (Ctrl-C) left these processes of make dev running:\n" + "\n".join(map(str, left))
    assert code == 0, f"make dev exited with {code} after SIGINT"
    assert not dev.remaining(), "\n".join(map(str, dev.remaining()))


# --- the tests --------------------------------------------------------------------------------------


def test_make_dev_serves_the_code_location_and_runs_a_partition(make_dev: Loaded) -> None:
    dev, repo = make_dev.dev, make_dev.repo

    # 1. What the code location defines: four assets in one group, their checks, the schedule and the sensor
    #    (both stopped, Dagster's default).
    nodes = {"/".join(node["assetKey"]["path"]): node for node in repo["assetNodes"]}
    assert set(nodes) == ASSETS, sorted(nodes)
    assert {node["groupName"] for node in nodes.values()} == {GROUP, "marts"}  # marts: the README's example
    assert {key for key, node in nodes.items() if node["isPartitioned"]} == {*PARTITIONED, "interview_results"}
    checks = check_names(repo)
    assert checks == CHECKS, checks
    blocking = {c["name"] for c in nodes["raw_candidates"]["assetChecksOrError"]["checks"] if c["blocking"]}
    assert blocking == CHECKS["raw_candidates"] - {"known_status_values", "agent_score_ranges"}
    assert {job["name"] for job in repo["jobs"]} >= {"candidates_job", "postings_job"}
    assert sorted((s["name"], s["cronSchedule"], s["executionTimezone"], s["scheduleState"]["status"])
                  for s in repo["schedules"]) == [
        ("daily_checks", "0 6 * * *", "UTC", "STOPPED"), ("daily_update", "0 3 * * *", "UTC", "STOPPED")
    ]  # fmt: skip
    assert sorted((s["name"], s["sensorState"]["status"]) for s in repo["sensors"]) == [
        ("checks_after_loads", "RUNNING"),  # requests nothing until a load
        ("new_postings", "STOPPED"),
        ("results_after_candidates", "RUNNING"),  # acts only once a candidates run ends
        ("update_after_postings", "RUNNING"),  # acts only on the daily update's listing
    ]

    # 2. Register the postings: a run of postings_job, launched as from the Launchpad.
    launch_and_wait(dev, repo, "postings_job", {})
    dims = {d["name"]: d["partitionKeys"] for d in asset(dev.url, "raw_candidates")["partitionKeysByDimension"]}
    tenant, first, _ = demo_tenant(DAYS)  # the workspace make dev serves (same seed and days, by its clock)
    assert dims["date"] == [(first + timedelta(days=i)).isoformat() for i in range(DAYS)], dims["date"]
    assert sorted(dims["posting"]) == sorted(p["id"] for p in tenant.postings() if not p["test_posting"])
    print(f"registered postings: {dims['posting']}")

    # 3. One partition of candidates_job: the first posting, yesterday (multi-partition key "date|posting").
    posting, day = dims["posting"][0], dims["date"][-1]
    partition = f"{day}|{posting}"
    run = launch_and_wait(dev, repo, "candidates_job", {"dagster/partition": partition})
    assert run["jobName"] == "candidates_job"
    assert {tag["key"]: tag["value"] for tag in run["tags"]}["dagster/partition"] == partition

    # 4. Dagster recorded exactly that partition, and the data checks passed in that run.
    total = len(dims["date"]) * len(dims["posting"])
    for key in PARTITIONED:
        stats = asset(dev.url, key)["partitionStats"]
        assert stats == {"numMaterialized": 1, "numPartitions": total, "numFailed": 0, "numMaterializing": 0}, key
    executions = {
        check["name"]: check["executionForLatestMaterialization"]
        for key in CHECKS
        for check in asset(dev.url, key)["assetChecksOrError"]["checks"]
    }
    print("checks: " + ", ".join(f"{name} {(e or {}).get('status')}" for name, e in sorted(executions.items())))
    for name in CHECKS["raw_candidates"]:
        assert executions[name] and executions[name]["runId"] == run["runId"], (name, executions[name])
        assert executions[name]["status"] == "SUCCEEDED", (name, executions[name], run_report(dev.url, run["runId"]))
    # The warehouse checks judge the whole warehouse: candidates_job leaves them out (never "passed" from inside
    # a partition's run); the daily audit (warehouse_checks_job) evaluates them.
    for name in CHECKS["candidates"] | CHECKS["candidate_workflow_steps"]:
        assert executions[name] is None, (name, executions[name])

    # 5. The candidates came from the embedded simulator.
    simulator = dev.simulator_url()
    assert simulator, dev.output()
    stats = httpx.get(f"{simulator}/_sim/stats", headers={"X-API-KEY": DEMO_KEY}, timeout=10.0, trust_env=False)
    stats.raise_for_status()
    routes = stats.json()["requests_by_route"]
    assert sum(n for route, n in routes.items() if route.endswith("/candidates")) >= 1, routes
    # The partition's rows are that posting-day's candidates, exactly.
    loads = query(dev.data_dir / "heymilo.duckdb", "SELECT posting_id, partition_date, rows FROM partition_loads")
    expected_rows = sum(1 for r in tenant.truth() if r["posting_id"] == posting and str(day_of(r["created_at"])) == day)
    assert [(p, d.date().isoformat(), n) for p, d, n in loads.itertuples(index=False)] == [
        (posting, day, expected_rows)
    ]
    month = f"month={date.fromisoformat(day):%Y-%m}"
    assert (dev.data_dir / "lake" / "candidates" / f"posting_id={posting}" / month / "part.parquet").exists()


JOB_RUNS = """
query JobRuns($filter: RunsFilter!) {
  pipelineRunsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId pipelineName status repositoryOrigin { repositoryLocationName } } }
  }
}
"""


def test_headless_runs_show_on_the_runs_page_with_their_posting_titles(make_dev: Loaded) -> None:
    """A run the CLI executes in its own process is listed on the Runs page under its job, with its kind, and the
    listing names every posting.

    It has no code-location origin: Dagster gives one only to runs created through the webserver or the daemon,
    and its job page and Overview timeline filter on that origin's hidden tag (dagster-io/dagster#17707), so they
    do not list it. We do not forge that tag (docs/operations.md)."""
    dev = make_dev.dev
    tenant, first, last = demo_tenant(DAYS)  # the workspace make dev serves, and its days
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))}
    env.update(
        HEYMILO_API_KEY=DEMO_KEY, HEYMILO_BASE_URL=str(dev.simulator_url()), HEYMILO_DATA_DIR=str(dev.data_dir),
        HEYMILO_START_DATE=first.isoformat(), HEYMILO_RATE_LIMIT=str(DEMO_RATE_LIMIT),
        DAGSTER_HOME=str(dev.data_dir / "dagster_home"),
    )  # fmt: skip
    cli = Path(sys.executable).parent / "heymilo-pipeline"
    done = subprocess.run([cli, "postings"], env=env, cwd=dev.data_dir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = re.search(r"run ([0-9a-f-]{36}): succeeded", done.stderr)
    assert ran, done.stderr
    run_id = ran.group(1)
    # A backfill from the terminal: one run of candidates_job over every posting (a ranged run, not a
    # Dagster backfill record, which only the UI or the daemon can create through public APIs), then one of
    # results_job over the same partitions.
    day = last.isoformat()
    done = subprocess.run(
        [cli, "backfill", "--start", day, "--end", day], env=env, cwd=dev.data_dir, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    backfill_runs = re.findall(r"run ([0-9a-f-]{36}): succeeded", done.stderr)
    assert len(backfill_runs) == 2, done.stderr  # the candidates, then their interview results
    for job, expected, kind in (
        ("postings_job", run_id, None),
        ("candidates_job", backfill_runs[0], "backfill"),
        ("results_job", backfill_runs[1], "backfill"),
    ):
        runs_page = {"pipelineName": job, "tags": [{"key": KIND_TAG, "value": kind}] if kind else []}
        runs = expect_type(graphql(dev.url, JOB_RUNS, {"filter": runs_page})["pipelineRunsOrError"], "Runs")
        listed = {r["runId"]: r for r in runs["results"]}
        assert expected in listed, (job, expected, runs)
        assert listed[expected]["status"] == "SUCCESS", listed[expected]
    # The posting titles, beside the ids, in the listing's materialization.
    found = graphql(dev.url, POSTINGS_TABLE)["assetNodeOrError"]
    table = next(e["mdStr"] for e in found["assetMaterializations"][0]["metadataEntries"] if e["label"] == "postings")
    for posting in tenant.postings():
        assert f"| `{posting['id']}` | {posting['title']} | {posting['status']} |" in table, table


POSTINGS_TABLE = """
query {
  assetNodeOrError(assetKey: {path: ["postings"]}) {
    ... on AssetNode {
      assetMaterializations(limit: 1) { metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } }
    }
  }
}
"""


@pytest.mark.parametrize(
    ("sig", "group", "sigint_ignored"),
    [(signal.SIGTERM, False, False), (signal.SIGHUP, True, False), (signal.SIGTERM, False, True)],
    ids=[
        "SIGTERM to dev.py (a supervisor)",
        "SIGHUP to its group (a closed terminal)",
        "SIGTERM to dev.py started in the background (SIGINT ignored)",
    ],
)
def test_make_dev_stops_cleanly_on(tmp_path: Path, sig: signal.Signals, group: bool, sigint_ignored: bool) -> None:
    """Like Ctrl-C (the module's fixture checks that one): every process gone, the port free again, and the dev
    server stopped on its own (dev.py did not have to kill it after its 30 s), however dev.py was started."""
    port = free_port()
    dev = MakeDev.start(tmp_path, port, sigint_ignored)
    try:
        wait_for("the webserver to answer", lambda: server_answers(dev.url), STARTUP_TIMEOUT_S, dev)
        wait_for("the code location to load", lambda: loaded_repository(dev.url), STARTUP_TIMEOUT_S, dev)
        dev.track()
        assert len(dev.groups) >= 2, dev.groups  # dev.py's session and the dev server's
    finally:
        code, left = dev.stop(sig, group)
    assert not left, f"{sig.name} left these processes running:\n" + "\n".join(map(str, left)) + dev.output()
    assert code == 0, f"dev.py exited with {code} after {sig.name}\n{dev.output()}"
    assert "did not stop on SIGINT" not in dev.output(), dev.output()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing listens there any more


RESOURCES = """
query Resources($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      allTopLevelResourceDetails { name configFields { name description } configuredValues { key value type } }
    }
  }
}
"""


def test_the_ui_shows_the_effective_configuration(make_dev: Loaded) -> None:
    """Deployment > Resources lists every setting with the value in effect; secrets only as the variable."""
    dev, repo = make_dev.dev, make_dev.repo
    selector = {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"]}
    found = expect_type(graphql(dev.url, RESOURCES, {"selector": selector})["repositoryOrError"], "Repository")
    resources = {r["name"]: r for r in found["allTopLevelResourceDetails"]}
    assert set(resources) == {"heymilo", "storage", "pipeline", "duckdb"}
    values = {name: {v["key"]: (v["value"], v["type"]) for v in r["configuredValues"]} for name, r in resources.items()}
    _, first, _ = demo_tenant(DAYS)  # make dev's first day, by its clock
    assert values["pipeline"]["start_date"] == (f'"{first}"', "VALUE")
    assert values["pipeline"]["freshness_deadline_hour"] == ("6", "VALUE")
    assert values["pipeline"]["full_refresh_days"] == ("7", "VALUE")
    assert values["heymilo"]["rate_limit"] == (str(DEMO_RATE_LIMIT), "VALUE")
    assert values["heymilo"]["base_url"][0].strip('"') == dev.simulator_url()
    assert values["heymilo"]["api_key"] == ("HEYMILO_API_KEY", "ENV_VAR")  # the variable, never the key
    assert values["storage"]["data_dir"][0].strip('"') == str(dev.data_dir)
    # Every field says which environment variable sets it.
    described = {f["name"]: f["description"] for f in resources["pipeline"]["configFields"]}
    assert described["lookback_days"].startswith("HEYMILO_LOOKBACK_DAYS: ")
    assert DEMO_KEY not in str(found)


def test_asset_graph_screenshot(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary on PATH (chromium / chromium-browser): no screenshot of the asset graph")
    loaded: Loaded = request.getfixturevalue("make_dev")  # only now: a skip must not start make dev
    dev, repo = loaded.dev, loaded.repo
    # What the UI's "Skip" on its first-visit community dialog does; otherwise the dialog covers the graph.
    graphql(dev.url, "mutation { setNuxSeen }")
    page = f"{dev.url}/locations/{repo['location']['name']}/asset-groups/{GROUP}"
    # The page rendered the graph (node labels), not a spinner or an error page...
    html = page_dom(binary, page, tmp_path)
    missing = [key for key in sorted(ASSETS - {"posting_funnel"}) if key not in html]  # the page of one group
    assert not missing, f"{page}: assets missing {missing}\n{html[-3000:]}"
    # ...and the screenshot of the same page is a real 1600x1000 PNG with content.
    png = tmp_path / "graph.png"
    data = screenshot(binary, page, tmp_path, png)
    print(f"asset graph screenshot: {png} ({len(data):,} bytes) of {page}")
