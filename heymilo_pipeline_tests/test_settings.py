"""Every kind of bad setting stops with one line that names its variable and what it expects, never its value:
in the settings themselves, in every command, in `make dev`, in the code location's load (what the UI shows) and in
a resource edited in a launchpad."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from heymilo_pipeline import cli
from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.settings import ConnectionSettings
from heymilo_pipeline.defs.resources import Pipeline, build_resources
from heymilo_pipeline.settings import PipelineSettings, Settings, StorageSettings, variable
from heymilo_pipeline_tests.support import clean_environ

SECRET = "hunter2-RECOGNISABLE"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# (environment, the variable the line must name), one per kind of mistake.
MISTAKES = [
    pytest.param({"HEYMILO_LOOKBACK_DAYS": "a week"}, "HEYMILO_LOOKBACK_DAYS", id="not-a-number"),
    pytest.param({"HEYMILO_RATE_LIMIT": "0"}, "HEYMILO_RATE_LIMIT", id="out-of-range"),
    pytest.param({"HEYMILO_BASE_URL": "api.heymilo.ai"}, "HEYMILO_BASE_URL", id="not-a-url"),
    pytest.param({"HEYMILO_START_DATE": "2025-13-01"}, "HEYMILO_START_DATE", id="not-a-date"),
    pytest.param({"HEYMILO_START_DATE": "2999-01-01"}, "HEYMILO_START_DATE", id="date-in-the-future"),
    pytest.param({"HEYMILO_PII": "mask"}, "HEYMILO_PII", id="not-a-choice"),
    pytest.param({"HEYMILO_INCLUDE_TEST_POSTINGS": "perhaps"}, "HEYMILO_INCLUDE_TEST_POSTINGS", id="not-a-flag"),
    pytest.param({"HEYMILO_PII": "hash"}, "HEYMILO_PII_KEY", id="secret-missing"),
    pytest.param(
        {"HEYMILO_RATE_BUDGET_URL": f"mysql://u:{SECRET}@db/x"}, "HEYMILO_RATE_BUDGET_URL", id="secret-malformed"
    ),
    pytest.param(
        {"HEYMILO_SHARED_CATALOG_URL": f"postgresql://u:{SECRET}@db/x"}, "HEYMILO_SHARED_DATA_PATH", id="half-a-pair"
    ),
]


def one_line_naming(text: str, var: str) -> str:
    """The line of ``text`` that says what is wrong; checks there is exactly one and that it keeps secrets."""
    lines = [line for line in text.splitlines() if re.search(r"invalid settings: (HEYMILO_|settings: )", line)]
    assert len(lines) == 1, text[-3000:]
    assert var in lines[0] and SECRET not in text, text[-3000:]
    return lines[0]


@pytest.mark.parametrize(("env", "var"), MISTAKES)
def test_a_bad_setting_is_one_line_naming_its_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env)
    line = one_line_naming(str(raised.value), var)
    assert line.startswith("invalid settings: ")


@pytest.mark.parametrize(("env", "var"), MISTAKES)
def test_every_command_stops_on_it_before_doing_anything(
    env: dict[str, str], var: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for name in Settings.model_fields:
        monkeypatch.delenv(variable(name), raising=False)
    result = CliRunner().invoke(cli.main, ["status"], env={**env, "HEYMILO_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: invalid settings: ")
    one_line_naming(result.output, var)
    assert not (tmp_path / "data").exists()


def test_the_expectation_comes_from_the_declaration() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"HEYMILO_LOCK_TIMEOUT": "-5"})
    assert str(raised.value) == (
        "invalid settings: HEYMILO_LOCK_TIMEOUT: Input should be greater than 0 "
        f"(expected: {StorageSettings.model_fields['lock_timeout'].description})"
    )


def test_a_value_edited_in_a_launchpad_is_checked_like_the_environment() -> None:
    """Resource fields are the settings' own declarations; a bad value fails the run with the same line."""
    pipeline = build_resources(Settings.from_env({}))["pipeline"]
    assert isinstance(pipeline, Pipeline)
    assert pipeline.settings() == PipelineSettings()
    edited = Pipeline(**{**pipeline.model_dump(), "lookback_days": -1})
    with pytest.raises(dg.Failure, match=r"^invalid settings: HEYMILO_LOOKBACK_DAYS: Input should be greater"):
        edited.settings()


def test_each_resource_has_one_field_per_setting_of_its_group() -> None:
    resources = build_resources(Settings.from_env({}))
    for key, group in (("heymilo", ConnectionSettings), ("storage", StorageSettings), ("pipeline", PipelineSettings)):
        fields = type(resources[key]).model_fields
        assert set(group.model_fields) <= set(fields), key
        for name, field in group.model_fields.items():
            assert fields[name].description == f"{variable(name)}: {field.description}", name
    assert set(ConnectionSettings.model_fields) | set(StorageSettings.model_fields) | set(
        PipelineSettings.model_fields
    ) == set(Settings.model_fields)


@pytest.mark.integration
@pytest.mark.parametrize(("env", "var"), [MISTAKES[0], MISTAKES[7]])
def test_make_dev_stops_on_it_in_one_line(env: dict[str, str], var: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "heymilo_pipeline.dev", "--data-dir", str(tmp_path / "data"), "--port", "1"]
    done = subprocess.run(
        command, env={**clean_environ(), **env}, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: invalid settings: ")
    one_line_naming(done.stderr, var)
    assert "Dagster UI on" not in done.stdout  # nothing started


@pytest.mark.integration
@pytest.mark.parametrize(("env", "var"), [MISTAKES[1], MISTAKES[8]])
def test_the_code_location_fails_to_load_with_the_line(env: dict[str, str], var: str, tmp_path: Path) -> None:
    """What the UI shows for a code location that does not load: `dg check defs` loads it the same way."""
    dg_bin = Path(sys.executable).parent / "dg"
    done = subprocess.run(
        [str(dg_bin), "check", "defs"],
        env={**clean_environ(), **env, "DAGSTER_HOME": str(tmp_path)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    line = one_line_naming(done.stdout + done.stderr, var)
    assert "ConfigurationError: invalid settings: " in line
