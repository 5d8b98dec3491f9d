"""Helpers for analyst notebooks (notebooks/): find the DuckDB file, query it safely, show figures, read checks.

The pipeline writes the DuckDB file while notebooks read it, and DuckDB lets a process that holds the
file open block every other one. So nothing here keeps a connection: ``open_query`` returns a function
that opens the file read-only for one statement (``warehouse.query``) and lets go of it at once.

matplotlib, IPython and Dagster are imported only inside the functions that need them: the package's
core stays importable (and fast to import) without the notebook extras.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from heymilo_pipeline.settings import Settings
from heymilo_pipeline.storage import DUCKDB_NAME
from heymilo_pipeline.warehouse import query

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


# The order a candidate moves through (CANDIDATE_STATUSES is a set): waiting, active, done, decided.
STATUS_ORDER: tuple[str, ...] = (
    "pending",
    "in_progress",
    "evaluating",
    "completed",
    "shortlisted",
    "dismissed",
    "knocked_out",
)


def order_statuses(statuses: Iterable[str]) -> list[str]:
    """The given statuses in funnel order; any the API added later follow, sorted, rather than vanish."""
    seen = set(statuses)
    return [s for s in STATUS_ORDER if s in seen] + sorted(seen - set(STATUS_ORDER))


class QueryFunction(Protocol):
    def __call__(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame: ...


def duckdb_path(settings: Settings | None = None, notebook_dir: Path | str | None = None) -> Path:
    """The DuckDB file to read: the pipeline's own when HEYMILO_DATA_DIR is set, else ``../data/heymilo.duckdb``.

    ``settings`` defaults to ``Settings.from_env()``, the pipeline's reading of the environment, so a notebook
    started beside the pipeline reads the file the pipeline writes. Without HEYMILO_DATA_DIR the data folder is
    looked for from the notebook: Jupyter starts a kernel in the notebook's folder (``notebook_dir`` defaults
    to the current directory), so ``../data`` is tried, then ``data`` for editors that start kernels at the
    project root. Raises FileNotFoundError naming what was tried: opening a missing file read-only fails
    with a far less helpful DuckDB error.
    """
    settings = Settings.from_env() if settings is None else settings
    if "data_dir" in settings.model_fields_set:
        path = settings.duckdb_path.expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"HEYMILO_DATA_DIR={settings.data_dir}: no {DUCKDB_NAME} in it ({path})")
        return path
    here = Path(notebook_dir or Path.cwd()).resolve()
    tried = [here.parent / "data" / DUCKDB_NAME, here / "data" / DUCKDB_NAME]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no DuckDB file at {' or '.join(map(str, tried))}. Build one with `make demo` (simulated data), "
        "run a backfill, or set HEYMILO_DATA_DIR to the pipeline's data folder."
    )


def open_query(path: Path | str) -> QueryFunction:
    """``q(sql, params)`` -> DataFrame over the DuckDB file at ``path``, which it holds only during each query."""
    target = Path(path)

    def q(sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        return query(target, sql, params)

    return q


def show(fig: Figure) -> None:
    """Display ``fig`` as a PNG in the notebook, then close it.

    Rendering explicitly works under every backend: with MPLBACKEND=Agg (headless runs, CI) a plain
    ``plt.show()`` displays nothing. Closing the figure keeps the inline backend from showing it twice
    and frees its memory.
    """
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buffer.getvalue(), format="png"))


def latest_checks(dagster_home: Path | str | None = None) -> pd.DataFrame | None:
    """The latest result of every asset check, from the Dagster instance at ``dagster_home`` or $DAGSTER_HOME.

    None when no Dagster home is set or it does not exist: the notebook then skips the section rather
    than fail, since the tables can be read without Dagster (e.g. a copied DuckDB file). An existing
    home is only read; the instance is disposed of before returning.
    """
    home = dagster_home or os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).expanduser().is_dir():
        return None
    # Imported only now: loading the code location takes seconds, wasted when the section is skipped.
    import dagster as dg
    import pandas as pd

    from heymilo_pipeline.status import latest_check_results

    with warnings.catch_warnings():
        # Loading the definitions warns that some Dagster parameters are beta: news for the pipeline's
        # developers, noise in an analyst's notebook.
        warnings.simplefilter("ignore", dg.BetaWarning)
        from heymilo_pipeline.definitions import build_defs
        from heymilo_pipeline.settings import Settings

        # Which checks exist does not depend on the settings: the defaults name them all.
        defs = build_defs(Settings())

    with dg.DagsterInstance.from_config(str(Path(home).expanduser().resolve())) as instance:
        rows = latest_check_results(instance, defs)
    return pd.DataFrame(rows, columns=["check", "status", "last run"])
