"""The project as a newcomer meets it: Dagster's `dg` commands and the notebook extra's JupyterLab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from heymilo_pipeline_tests.dagster_ui import free_port

# Subprocesses and a server: the integration tier.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any pipeline or Dagster setting: what a fresh shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))}
    return {**env, **extra}


def test_dg_loads_the_same_definitions(tmp_path: Path) -> None:
    env = clean_env(DAGSTER_HOME=str(tmp_path))
    checked = subprocess.run(
        [BIN / "dg", "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr
    listed = subprocess.run(
        [BIN / "dg", "list", "defs", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assets = {a["asset_key"]: a["dependency_keys"] for a in defs["assets"]}
    assert assets == {
        "postings": [],
        "raw_candidates": ["postings"],
        "candidates": ["raw_candidates"],
        "candidate_workflow_steps": ["raw_candidates"],
        "posting_funnel": ["candidates"],
        "interview_results": ["raw_candidates"],
    }
    assert {r["name"] for r in defs["resources"]} == {"heymilo", "storage", "pipeline", "duckdb"}
    assert {s["name"] for s in defs["schedules"]} == {"daily_update", "daily_checks"}


def test_the_notebook_extra_serves_the_notebook_in_jupyterlab(tmp_path: Path) -> None:
    """README: after make demo, `make notebook` starts JupyterLab on the analyst notebook."""
    port, token = free_port(), "heymilo-test-token"
    command = [
        BIN / "jupyter", "lab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}", "notebooks/candidates_overview.ipynb",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # as `make notebook` does (containers run as root)
    ]  # fmt: skip
    env = clean_env(JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_DATA_DIR=str(tmp_path / "data"))
    lab = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/notebooks/candidates_overview.ipynb"
        deadline = time.monotonic() + 90
        while True:
            try:
                answer = httpx.get(url, params={"token": token, "content": 0}, timeout=5, trust_env=False)
                break
            except httpx.TransportError:
                assert lab.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
                time.sleep(0.5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["type"] == "notebook"
        kernels = httpx.get(f"http://127.0.0.1:{port}/api/kernelspecs", params={"token": token}, trust_env=False)
        assert "python3" in kernels.json()["kernelspecs"]
    finally:
        lab.terminate()
        lab.wait(timeout=30)


def test_the_live_line_moves_while_a_backfill_runs_in_a_terminal(tmp_path: Path) -> None:
    """In a real terminal (a pty) the line redraws during the run, not only between runs: Dagster captures the
    step's output descriptors, which must not swallow it."""
    import pty
    import re
    from datetime import timedelta

    from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread
    from heymilo_pipeline_tests.support import LAST

    last = LAST
    first = last - timedelta(days=9)
    tenant = Tenant(TenantSpec(seed=12, postings=4, start=first, end=last, candidates_per_posting=(800, 1200)))
    key = "sk_test_TERMINAL-1a2b3c"
    # A persistent Dagster home, as users have: its compute log manager is what captures the step's output.
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    with serve_in_thread(create_app(tenant, key)) as url:
        env = clean_env(
            HEYMILO_API_KEY=key, HEYMILO_BASE_URL=url, HEYMILO_DATA_DIR=str(tmp_path / "data"),
            HEYMILO_START_DATE=first.isoformat(), HEYMILO_RATE_LIMIT="600", TERM="xterm", COLUMNS="200",
            DAGSTER_HOME=str(home),
        )  # fmt: skip
        leader, follower = pty.openpty()
        command = [BIN / "heymilo-pipeline", "backfill", "--start", first.isoformat(), "--end", last.isoformat(),
                   "--no-results"]  # fmt: skip
        cli = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty closes with the process
                break
            if not chunk:
                break
            seen += chunk
        assert cli.wait(timeout=120) == 0, seen.decode(errors="replace")[-3000:]
        os.close(leader)
    text = seen.decode(errors="replace")
    pages = [int(n.replace(",", "")) for n in re.findall(r"· ([\d,]+) pages", text)]
    final = pages[-1]
    midway = {n for n in pages if 0 < n < final}
    assert len(midway) >= 2, f"the line did not move during the run: pages seen {sorted(set(pages))}"
    assert "· done ·" in text and "RUN_START" not in text


def test_an_asset_scaffolded_into_defs_loads_with_the_code_location(tmp_path: Path) -> None:
    """What Dagster's docs teach: `dg scaffold defs dagster.asset my_mart.py` writes a file into the defs folder,
    and the code location picks it up with no edit elsewhere (on a copy of the project, not this checkout)."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(
        ROOT / "heymilo_pipeline", project / "heymilo_pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "setup.cfg"):
        shutil.copy(ROOT / name, project / name)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HEYMILO_API_KEY": "test-key"}
    scaffold = [str(BIN / "dg"), "scaffold", "defs", "dagster.asset", "my_mart.py"]
    subprocess.run(scaffold, cwd=project, env=env, check=True, capture_output=True, timeout=120)
    assert (project / "heymilo_pipeline" / "defs" / "my_mart.py").is_file()
    listing = (
        "from heymilo_pipeline.definitions import defs\n"
        "print(sorted(k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()))"
    )
    found = subprocess.run(
        [sys.executable, "-c", listing], cwd=project, env={**env, "PYTHONPATH": str(project)},
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert found.stdout.strip() == str(
        [
            "candidate_workflow_steps",
            "candidates",
            "interview_results",
            "my_mart",
            "posting_funnel",
            "postings",
            "raw_candidates",
        ]
    )
