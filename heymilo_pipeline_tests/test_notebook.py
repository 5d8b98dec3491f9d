"""notebooks/candidates_overview.ipynb runs top to bottom on a real DuckDB file, and is committed clean.

One module-scoped world, built as test_pipeline.py builds its own but smaller: a simulated tenant on
loopback, the postings listed and one run over every posting for the last days, all through
``dg.materialize`` in a test Dagster instance. The notebook is then executed by nbclient in the
venv's ``python3`` kernel, pointed at its data folder by HEYMILO_DATA_DIR and at the instance by DAGSTER_HOME.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg
import nbformat
import pytest
from nbclient import NotebookClient

from heymilo_pipeline.api.models import CANDIDATE_STATUSES
from heymilo_pipeline.defs.checks import warehouse_checks
from heymilo_pipeline.defs.keys import INTERVIEW_RESULTS_KEY
from heymilo_pipeline.defs.tags import range_tags
from heymilo_pipeline.notebook import STATUS_ORDER, duckdb_path, order_statuses
from heymilo_pipeline.settings import Settings
from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.warehouse import query
from heymilo_pipeline_tests.support import LAST, START, Harness, settings_for

# Servers, subprocesses or Dagster runs: the integration tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "candidates_overview.ipynb"
KEY = "sk_test_NOTEBOOK-5a4b3c2d"
# Short: a week of 3 postings is enough for every chart and keeps the build to a few seconds.
FIRST = max(START, LAST - timedelta(days=6))


@dataclass(frozen=True)
class Built:
    duckdb: Path
    dagster_home: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tenant = Tenant(TenantSpec(seed=13, postings=4, start=FIRST, end=LAST, candidates_per_posting=(80, 200)))
    data_dir = tmp_path_factory.mktemp("data")
    home = tmp_path_factory.mktemp("dagster_home")
    # The notebook opens this instance from its own process, which reads only dagster.yaml (not the
    # overrides instance_for_test passes in memory): keep telemetry off there too.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with serve_in_thread(create_app(tenant, KEY)) as url, dg.instance_for_test(temp_dir=str(home)) as instance:
        harness = Harness(settings_for(url, KEY, data_dir), instance)
        assert harness.list_postings().success
        registered = harness.registered
        # One run over every posting (a rectangle of partitions, as the daily update asks): faster than one each.
        assert harness.candidates(FIRST, LAST, registered[0], registered[-1]).success
        tags = range_tags(FIRST, LAST, registered[0], registered[-1])
        assert harness.materialize(dg.AssetSelection.assets(INTERVIEW_RESULTS_KEY), tags).success
        assert harness.materialize(dg.AssetSelection.checks(warehouse_checks)).success
        yield Built(data_dir / "heymilo.duckdb", home)


def test_notebook_runs_on_a_real_warehouse(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Kernel specs in a user's own Jupyter folder would come before the venv's: hide them, so
    # "python3" is this venv's ipykernel (checked below by the kernel's own sys.executable).
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)", id="which-python"))
    env = {
        **os.environ,
        "HEYMILO_DATA_DIR": str(built.duckdb.parent),
        "MPLBACKEND": "Agg",
        "DAGSTER_HOME": str(built.dagster_home),
    }
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # the kernel starts in the notebook's folder
    )
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, on any error

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert Path(outputs[0].text.strip()).resolve() == Path(sys.executable).resolve()
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 7, f"seven charts expected (the notebook calls show seven times), got {len(images)}"
    text = "\n".join(_text(o) for o in outputs)
    assert str(built.duckdb) in text  # it read the file it was pointed at
    assert "checks passed on their latest run" in text  # the Dagster section found the test instance
    assert "freshness" in text
    # The interview results section found results of every kind the simulated workspace has.
    assert "scored questions" in text and "failed_pct" in text and "fired_pct" in text
    # This workspace's postings screen no resume: the section says so rather than fail.
    assert "not_shortlisted" in text or "No resume criteria in the results." in text
    # Aggregates only: no e-mail address, full name or signed link of any candidate in the outputs.
    people = query(built.duckdb, "SELECT DISTINCT name, email FROM candidates")
    assert len(people) > 0
    leaked = [v for v in (*people["name"], *people["email"]) if v in text]
    assert not leaked and "@" not in text and "https://" not in text, leaked[:3]


def _text(output: nbformat.NotebookNode) -> str:
    if output.output_type == "stream":
        return str(output.text)
    data = output.get("data", {})
    return str(data.get("text/plain", "")) + str(data.get("text/html", ""))


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    dirty = [cell.get("id") for cell in code if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"clear the outputs of cells {dirty} before committing (Jupyter: Edit > Clear All Outputs)"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_status_order_covers_every_documented_status() -> None:
    assert set(STATUS_ORDER) == CANDIDATE_STATUSES
    assert order_statuses(["knocked_out", "brand_new", "pending"]) == ["pending", "knocked_out", "brand_new"]


def test_duckdb_path_resolution(tmp_path: Path) -> None:
    notebooks, data = tmp_path / "notebooks", tmp_path / "data"
    notebooks.mkdir()
    data.mkdir()
    unset = Settings.from_env({})
    with pytest.raises(FileNotFoundError, match="make demo"):
        duckdb_path(unset, notebooks)
    (data / "heymilo.duckdb").touch()
    assert duckdb_path(unset, notebooks) == data / "heymilo.duckdb"  # ../data from the notebook's folder
    assert duckdb_path(unset, tmp_path) == data / "heymilo.duckdb"  # data/ from the project root
    # HEYMILO_DATA_DIR, read by the pipeline's own settings, names the pipeline's file wherever the notebook is.
    other = tmp_path / "elsewhere"
    pointed = Settings.from_env({"HEYMILO_DATA_DIR": str(other)})
    with pytest.raises(FileNotFoundError, match=f"HEYMILO_DATA_DIR={other}: no heymilo.duckdb"):
        duckdb_path(pointed, notebooks)
    other.mkdir()
    (other / "heymilo.duckdb").touch()
    assert duckdb_path(pointed, notebooks) == (other / "heymilo.duckdb").resolve()
