"""Secrets, personal data and bad configuration, through real runs against the simulator."""

from __future__ import annotations

import gzip
import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.defs.partitions import POSTINGS
from heymilo_pipeline.lake import RAW, Lake
from heymilo_pipeline.settings import Settings
from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.warehouse import query
from heymilo_pipeline_tests.support import LAST, Harness, clean_environ, cli, product_yesterday, settings_for

# Servers, subprocesses or Dagster runs: the integration tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.integration

KEY = "sk_live_RECOGNISABLE-0c9b8a7f6e5d4c3b"
FIRST = LAST - timedelta(days=4)


@pytest.fixture(scope="module")
def sim():
    tenant = Tenant(TenantSpec(seed=31, postings=4, start=FIRST, end=LAST, candidates_per_posting=(40, 120)))
    with serve_in_thread(create_app(tenant, KEY)) as url:
        yield url


def run_all(harness: Harness) -> list[dg.ExecuteInProcessResult]:
    """Postings, then every registered posting over FIRST..LAST: what a first backfill does."""
    results = [harness.materialize(["postings"], raise_on_error=False)]
    for posting_id in harness.registered:
        results.append(harness.candidates(FIRST, LAST, posting_id, posting_id))
    return results


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def files_containing(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        content = path.read_bytes()
        if path.suffix == ".gz":
            content = gzip.decompress(content)
        if needle in content:
            found.append(path)
    return found


def test_the_api_key_is_nowhere_in_logs_metadata_or_files(sim: str, tmp_path: Path, monkeypatch) -> None:
    data_dir, home = tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    # The key comes from the environment and is bound with EnvVar, as in the code location.
    monkeypatch.setenv("HEYMILO_API_KEY", KEY)
    settings = Settings.from_env(base_url=sim, data_dir=data_dir, start_date=FIRST)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        harness = Harness(settings, instance, secrets_from_env=True)
        results = run_all(harness)
        assert all(r.success for r in results)
        # and a run whose key the API rejects: the error must not echo what was sent
        monkeypatch.setenv("HEYMILO_API_KEY", KEY + "-revoked")
        rejected = run_all(harness)[0]
        assert not rejected.success and "HEYMILO_API_KEY" in failure_message(rejected)
        for result in [*results, rejected]:
            for record in instance.all_logs(result.run_id):
                assert KEY not in str(record.user_message)
                assert KEY not in str(record.dagster_event) if record.dagster_event else True
    assert list(data_dir.rglob("*.parquet")), "the backfill should have written the lake"
    assert files_containing(data_dir, KEY.encode()) == []
    assert files_containing(home, KEY.encode()) == []


def test_files_are_readable_by_their_owner_only(sim: str, tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        assert all(r.success for r in run_all(Harness(settings_for(sim, KEY, tmp_path), instance)))
    data_files = [*tmp_path.rglob("*.parquet"), tmp_path / "heymilo.duckdb"]
    assert {oct(p.stat().st_mode & 0o777) for p in data_files} == {"0o600"}


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_pii_is_hashed_or_dropped_alike_in_lake_and_warehouse(sim: str, tmp_path: Path, mode: str) -> None:
    settings = settings_for(sim, KEY, tmp_path, pii=mode, pii_key="pepper-for-tests")
    with dg.instance_for_test() as instance:
        assert all(r.success for r in run_all(Harness(settings, instance)))
        posting_id = instance.get_dynamic_partitions(POSTINGS)[0]
    lake = Lake(tmp_path / "lake")
    raw = [json.loads(text) for text in lake.read(RAW, posting_id)["record"].to_pylist()]
    table = query(
        tmp_path / "heymilo.duckdb",
        "SELECT interview_id, name, email, resume_link, web_interview_audio_recording_link FROM candidates "
        "WHERE posting_id = ?",
        [posting_id],
    )
    assert raw and len(raw) == len(table)
    by_id = {r["interview_id"]: r for r in raw}
    for row in table.itertuples():
        record = by_id[row.interview_id]
        assert row.email == record["email"] and row.name == record["name"]  # lake and warehouse agree
        if mode == "drop":
            assert record["email"] is None and record["name"] is None and row.resume_link is None
        else:
            assert record["email"].startswith("hmac:") and "@" not in record["email"]
    assert not any("@" in str(v) for v in table["email"])


# --- bad configuration: a clear error before anything is written -----------------------------------


def test_missing_key(sim: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HEYMILO_API_KEY", raising=False)
    settings = Settings.from_env(base_url=sim, data_dir=tmp_path, start_date=FIRST)
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError, match="HEYMILO_API_KEY"):
        run_all(Harness(settings, instance, secrets_from_env=True))
    assert not (tmp_path / "lake").exists() and not (tmp_path / "heymilo.duckdb").exists()


@pytest.mark.parametrize(
    "command",
    [["backfill", "--start", "2025-01-01", "--end", "2025-01-02"], ["update", "--as-of", "2025-01-03"], ["check"],
     ["postings"]],
)  # fmt: skip
def test_a_command_without_the_key_says_so_in_one_line(command: list[str], tmp_path: Path) -> None:
    env = {**clean_environ(), "HEYMILO_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    process = cli(env, *command)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert output.strip().splitlines() == [
        "Error: HEYMILO_API_KEY is not set. Put your HeyMilo API key in the environment (or in .env) to use the real "
        "API, or run against the simulator (make demo)."
    ]
    assert not (tmp_path / "data").exists()  # nothing was written


def test_unreachable_base_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(POSTINGS, ["13D77095"])
        harness = Harness(settings_for(closed, KEY, tmp_path, max_attempts=2), instance)
        result = harness.candidates(FIRST, LAST, "13D77095", "13D77095")
    message = failure_message(result)
    assert not result.success
    assert "could not connect to" in message and "HEYMILO_BASE_URL" in message and "13D77095" in message
    assert not list(tmp_path.rglob("*.parquet")) and not (tmp_path / "heymilo.duckdb").exists()


def test_start_date_in_the_future() -> None:
    future = (product_yesterday() + timedelta(days=4)).isoformat()  # the product's clock, the real one
    with pytest.raises(ConfigurationError, match=f"HEYMILO_START_DATE: .*{future} is in the future"):
        Settings.from_env({"HEYMILO_START_DATE": future})


def test_unknown_posting_in_the_filters(sim: str, tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        result = run_all(Harness(settings_for(sim, KEY, tmp_path, postings=["NOPE0000"]), instance))[0]
        assert instance.get_dynamic_partitions(POSTINGS) == []
    assert (
        not result.success and "NOPE0000" in failure_message(result) and "HEYMILO_POSTINGS" in failure_message(result)
    )
    assert not (tmp_path / "heymilo.duckdb").exists()


def test_unwritable_data_directory(sim: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be")
    data_dir = blocker / "data"
    before = httpx.get(f"{sim}/_sim/stats", headers={"X-API-KEY": KEY}).json()["requests_total"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(POSTINGS, ["13D77095"])
        result = Harness(settings_for(sim, KEY, data_dir), instance).candidates(FIRST, LAST, "13D77095", "13D77095")
    assert not result.success and "is not a writable directory" in failure_message(result)
    after = httpx.get(f"{sim}/_sim/stats", headers={"X-API-KEY": KEY}).json()["requests_total"]
    assert after == before  # failed before spending any of the key's budget
    assert os.path.isfile(blocker)
