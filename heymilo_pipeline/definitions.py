"""The code location: everything in ``defs/`` (Dagster's defs folder, so a file ``dg scaffold defs`` writes there
loads too), plus what depends on the settings, read once.

The modules of ``defs/`` define at module level only what is the same under any settings (the ``postings`` asset,
the jobs, the daily update's schedule, the sensors, the warehouse checks, the example ``posting_funnel``).
``configured`` builds the rest from the settings: the candidate and results assets (their partitions start at
HEYMILO_START_DATE), the tables and the audit's schedule (their freshness deadline is
HEYMILO_FRESHNESS_DEADLINE_HOUR), the shared tables' upkeep (only where there are shared tables), and the
resources, whose fields show every effective setting.
"""

from pathlib import Path

import dagster as dg

from heymilo_pipeline.defs.assets import candidate_tables, table_specs
from heymilo_pipeline.defs.jobs import shared_tables_maintenance_job
from heymilo_pipeline.defs.partitions import candidate_partitions
from heymilo_pipeline.defs.resources import build_resources
from heymilo_pipeline.defs.results import results_asset
from heymilo_pipeline.defs.schedules import daily_checks, shared_tables_maintenance
from heymilo_pipeline.settings import Settings

# The code location's name, as workspace.yaml, pyproject.toml ([tool.dagster], [tool.dg.project]) and make dev's
# workspace give it; runs the CLI executes carry it so the UI lists them with the location's runs.
CODE_LOCATION_NAME = "heymilo_pipeline"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def configured(settings: Settings, *, secrets_from_env: bool = True) -> dg.Definitions:
    """What ``defs/`` cannot define at import: the definitions that depend on ``settings``."""
    upkeep = [shared_tables_maintenance_job()] if settings.shared_catalog_url is not None else []
    partitions = candidate_partitions(settings.start_date)
    return dg.Definitions(
        assets=[
            candidate_tables(partitions),
            results_asset(partitions),
            *table_specs(settings.freshness_deadline_hour),
        ],
        jobs=upkeep,
        schedules=[daily_checks(settings.freshness_deadline_hour), *map(shared_tables_maintenance, upkeep)],
        resources=build_resources(settings, secrets_from_env=secrets_from_env),
    )


def build_defs(settings: Settings, *, secrets_from_env: bool = True) -> dg.Definitions:
    """Everything of the code location for ``settings``: the defs folder and what the settings configure.

    The project (pyproject.toml's ``[tool.dg]``) is found from this file, so the package must run from its
    checkout: an editable install, as ``make`` and the Docker image make it."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=PROJECT_ROOT),
        configured(settings, secrets_from_env=secrets_from_env),
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Loaded by `dagster dev` / the webserver when they load the code location, not when a module imports this.
    return build_defs(Settings.from_env())
