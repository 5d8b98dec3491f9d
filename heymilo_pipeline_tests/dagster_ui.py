"""Helpers to drive a running Dagster webserver over GraphQL (and look at its pages in headless Chromium) and to
manage process groups in tests.

Shared by the tests that start a real webserver: ``dagster dev`` (test_dagster_dev.py), ``make dev``
(test_make_dev.py) and the Docker deployment (test_deploy.py).
GraphQL goes to ``{url}/graphql`` with ``trust_env=False``, so no proxy sits in between.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from heymilo_pipeline.devservers import free_port as free_port  # the tests that start a webserver take it from here

T = TypeVar("T")

# The asset checks the code location defines, by asset key.
CHECKS: dict[str, set[str]] = {
    "raw_candidates": {
        "non_null_keys",
        "score_range",
        "rows_match_total_count",
        "agent_score_ranges",
        "known_status_values",
    },
    "candidates": {"freshness", "completeness", "unique_interview_id", "matches_lake"},
    "candidate_workflow_steps": {"steps_reference_candidates"},
    "interview_results": {
        "results_in_documented_ranges",
        "results_complete",
        "results_in_ranges",
        "results_unique_and_referenced",
    },
}


# --- processes --------------------------------------------------------------------------------------


def tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a log file (or a note that it does not exist)."""
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``pgid``; a group that is gone (or no longer ours) is not an error."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Watched(Protocol):
    """A started process that ``wait_for`` watches while it waits."""

    def check_alive(self) -> None:
        """Raise AssertionError (with the process's output) if the process has exited."""

    def output(self) -> str:
        """The tail of the process's output, for a failure message."""


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float, watched: Watched, interval_s: float = 0.5
) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail early if ``watched`` died."""
    deadline = time.monotonic() + timeout_s
    while True:
        watched.check_alive()
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}\n{watched.output()}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    cmd: str

    def __str__(self) -> str:
        return f"pid {self.pid} (ppid {self.ppid}, pgid {self.pgid}, sid {self.sid}, state {self.state}) {self.cmd}"


def processes() -> list[Proc]:
    """Every process of the machine, from /proc (Linux)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp session ...": comm may contain spaces and parentheses.
        state, ppid, pgid, sid = stat[stat.rindex(")") + 2 :].split()[:4]
        out.append(Proc(int(entry.name), int(ppid), int(pgid), int(sid), state, cmd[:160] or stat.split()[1]))
    return out


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(
    binary: str, args: list[str], tmp: Path, name: str, timeout_s: float = 90.0
) -> subprocess.CompletedProcess[bytes]:
    """Run headless Chromium in its own session; on timeout kill all of it (renderer, GPU, zygote...)."""
    profile = tmp / f"chromium-profile-{name}"
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    popen = subprocess.Popen(
        command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = popen.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        signal_group(popen.pid, signal.SIGKILL)
        out, err = popen.communicate()
        message = f"chromium timed out after {timeout_s:g}s:\n{err.decode(errors='replace')[-3000:]}"
        raise AssertionError(message) from None
    finally:
        # Helpers (zygote, renderer) that outlived the browser: ours are in its session and use our profile.
        for proc in processes():
            if proc.sid == popen.pid and str(profile) in proc.cmd:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, popen.returncode, out, err)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# --- GraphQL ----------------------------------------------------------------------------------------


def graphql(url: str, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST ``document`` to the webserver at ``url``; returns ``data``, fails on any GraphQL error."""
    response = httpx.post(
        f"{url}/graphql", json={"query": document, "variables": variables or {}}, timeout=60.0, trust_env=False
    )
    response.raise_for_status()
    body = response.json()
    assert not body.get("errors"), json.dumps(body["errors"], indent=2)
    return body["data"]


def expect_type(value: dict[str, Any], typename: str) -> dict[str, Any]:
    """``value`` itself, once asserted to be a ``typename`` (not one of the union's error types)."""
    assert value["__typename"] == typename, json.dumps(value, indent=2)
    return value


REPOSITORIES = """
query Repositories {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message stack } } }
    }
  }
  repositoriesOrError {
    __typename
    ... on PythonError { message stack }
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs { name }
        schedules { name cronSchedule executionTimezone scheduleState { status } }
        sensors { name minIntervalSeconds sensorState { status } }
        assetNodes {
          assetKey { path }
          groupName
          isPartitioned
          assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
        }
      }
    }
  }
}
"""

RUN_LOGS = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message stack } }
        ... on RunFailureEvent { error { message stack } }
      }
    }
  }
}
"""


def server_answers(url: str) -> bool:
    """Whether the webserver at ``url`` answers ``/server_info`` (a probe for ``wait_for``)."""
    try:
        return httpx.get(f"{url}/server_info", timeout=5.0, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


def loaded_repository(url: str) -> dict[str, Any] | None:
    """The repository (``REPOSITORIES`` node) that has assets, or None while the code location still loads.

    A probe for ``wait_for``: a code location that failed to load fails the test with its error at once.
    """
    data = graphql(url, REPOSITORIES)
    for entry in data["workspaceOrError"].get("locationEntries", []):
        error = entry["locationOrLoadError"] or {}
        assert error.get("__typename") != "PythonError", (
            f"code location {entry['name']} failed to load: {error['message']}{''.join(error['stack'])}"
        )
    found = data["repositoriesOrError"]
    if found["__typename"] != "RepositoryConnection":
        return None  # still loading, or failed: wait_for gives up with the process's output
    return next((node for node in found["nodes"] if node["assetNodes"]), None)


def check_names(repo: dict[str, Any]) -> dict[str, set[str]]:
    """The names of the asset checks of ``repo``, by asset key (only assets that have checks); see ``CHECKS``."""
    return {
        "/".join(node["assetKey"]["path"]): {check["name"] for check in node["assetChecksOrError"].get("checks", [])}
        for node in repo["assetNodes"]
        if node["assetChecksOrError"].get("checks")
    }


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on PythonError { message stack }
    ... on Run { runId jobName status tags { key value } }
  }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PythonError { message stack }
    ... on PartitionBackfill {
      status
      numPartitions
      error { message stack }
      runs { runId status tags { key value } assetSelection { path } }
    }
  }
}
"""

BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def launch_run(url: str, repo: dict[str, Any], job: str, tags: dict[str, str] | None = None) -> str:
    """Launch ``job`` of ``repo`` (a ``REPOSITORIES`` node) as the Launchpad does; returns the run id."""
    selector = {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"], "jobName": job}
    metadata = {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]}
    launched = graphql(url, LAUNCH_RUN, {"params": {"selector": selector, "executionMetadata": metadata}})
    return expect_type(launched["launchRun"], "LaunchRunSuccess")["run"]["runId"]


def wait_for_run(url: str, run_id: str, timeout_s: float, watched: Watched) -> dict[str, Any]:
    """The ``RUN`` node of ``run_id`` once it has finished (whatever its status)."""

    def finished() -> dict[str, Any] | None:
        run = expect_type(graphql(url, RUN, {"runId": run_id})["runOrError"], "Run")
        return run if run["status"] in FINISHED else None

    return wait_for(f"run {run_id} to finish", finished, timeout_s, watched, interval_s=1.0)


def launch_backfill(url: str, params: dict[str, Any], timeout_s: float, watched: Watched) -> dict[str, Any]:
    """Launch a backfill as the asset page's Launch backfill does (``LaunchBackfillParams``) and wait for its end;
    the ``BACKFILL`` node, once it and every run of it succeeded (else the failure, with the runs' errors)."""
    launched = graphql(url, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    backfill_id = expect_type(launched, "LaunchBackfillSuccess")["backfillId"]

    def finished() -> dict[str, Any] | None:
        found = graphql(url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        backfill = expect_type(found, "PartitionBackfill")
        return backfill if backfill["status"] in BACKFILL_DONE else None

    backfill = wait_for(f"backfill {backfill_id} to finish", finished, timeout_s, watched, interval_s=2.0)
    runs = backfill["runs"]
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and all(r["status"] == "SUCCESS" for r in runs), (
        f"backfill {backfill['status']}: {backfill['error']}\n{runs_report(url, runs)}"
    )
    return backfill


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


def runs_tagged(url: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    """The runs (id, job, status) carrying every one of ``tags``."""
    found = graphql(url, RUNS, {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}})
    return expect_type(found["runsOrError"], "Runs")["results"]


LOCATIONS = """
query {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus versionKey locationOrLoadError { __typename } } }
  }
}
"""


def location_version(url: str) -> str | None:
    """The version of the code location the webserver has loaded (it changes when the webserver loads a new server),
    or None while it loads or holds only the error of a server it cannot reach."""
    found = expect_type(graphql(url, LOCATIONS)["workspaceOrError"], "Workspace")
    loaded = [
        e["versionKey"] for e in found["locationEntries"]
        if e["loadStatus"] == "LOADED" and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
    ]  # fmt: skip
    return loaded[0] if loaded else None


def _budget(size: tuple[int, int]) -> list[str]:
    # The UI renders client-side: Chromium runs the page's scripts for up to 20 s of virtual time first.
    return ["--virtual-time-budget=20000", f"--window-size={size[0]},{size[1]}"]


def page_dom(binary: str, page: str, tmp: Path, size: tuple[int, int] = (1600, 1000)) -> str:
    """The HTML of ``page`` once headless Chromium rendered it (the UI renders client-side)."""
    dom = chromium(binary, [*_budget(size), "--dump-dom", page], tmp, "dom")
    assert dom.returncode == 0, f"chromium --dump-dom {page}: {dom.stderr.decode(errors='replace')[-3000:]}"
    return dom.stdout.decode(errors="replace")


def screenshot(binary: str, page: str, tmp: Path, png: Path, size: tuple[int, int] = (1600, 1000)) -> bytes:
    """A PNG of ``page`` from headless Chromium, checked to be one of ``size`` with content."""
    shot = chromium(binary, [*_budget(size), f"--screenshot={png}", page], tmp, "shot")
    assert shot.returncode == 0 and png.exists(), shot.stderr.decode(errors="replace")[-3000:]
    data = png.read_bytes()
    assert png_size(data) == size and len(data) > 30_000, f"{png}: {png_size(data)}, {len(data)} bytes (empty page?)"
    return data


def runs_report(url: str, runs: list[dict[str, Any]]) -> str:
    """The errors and warnings of every run that did not succeed."""
    out = []
    for run in runs:
        if run["status"] == "SUCCESS":
            continue
        out.append(f"run {run['runId']}: {run['status']}")
        logs = graphql(url, RUN_LOGS, {"runId": run["runId"]})["logsForRun"]
        for event in logs.get("events", []):
            if event.get("error"):
                out.append(f"  {event['__typename']} {event.get('stepKey')}: {event['error']['message']}")
                if event["__typename"] == "ExecutionStepFailureEvent":
                    out.append("    " + "".join(event["error"].get("stack") or [])[-2000:])
            elif event.get("level") in ("ERROR", "CRITICAL", "WARNING"):
                out.append(f"  {event['level']} {event.get('stepKey')}: {event.get('message')}")
    return "\n".join(out)
