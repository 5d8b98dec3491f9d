"""The code location: the settings read once, and what lives in ``defs/`` built from them."""

import dagster as dg

from heymilo_pipeline.defs.assets import TABLE_SPECS, candidate_tables, postings
from heymilo_pipeline.defs.checks import warehouse_checks
from heymilo_pipeline.defs.jobs import (
    candidates_job,
    postings_job,
    rebuild_job,
    shared_tables_maintenance_job,
    warehouse_checks_job,
)
from heymilo_pipeline.defs.partitions import candidate_partitions
from heymilo_pipeline.defs.resources import build_resources
from heymilo_pipeline.defs.schedules import daily_checks, daily_update, shared_tables_maintenance
from heymilo_pipeline.defs.sensors import new_postings, update_after_postings
from heymilo_pipeline.settings import Settings

# The code location's name, as workspace.yaml, pyproject.toml ([tool.dagster], [tool.dg.project]) and make dev's
# workspace give it; runs the CLI executes carry it so the UI lists them with the location's runs.
CODE_LOCATION_NAME = "heymilo_pipeline"


def build_defs(settings: Settings, *, secrets_from_env: bool = True) -> dg.Definitions:
    """Everything of the code location for ``settings``: the partitions start at its start date, the audit runs
    at its deadline, and the resources show its every field."""
    # The shared tables' upkeep exists only where there are shared tables.
    shared = settings.shared_catalog_url is not None
    return dg.Definitions(
        assets=[postings, candidate_tables(candidate_partitions(settings.start_date)), *TABLE_SPECS],
        asset_checks=[warehouse_checks],
        jobs=[candidates_job, postings_job, warehouse_checks_job, rebuild_job]
        + ([shared_tables_maintenance_job] if shared else []),
        schedules=[daily_update, daily_checks(settings.freshness_deadline_hour)]
        + ([shared_tables_maintenance] if shared else []),
        sensors=[new_postings, update_after_postings],
        resources=build_resources(settings, secrets_from_env=secrets_from_env),
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Loaded by `dagster dev` / the webserver when they load the code location, not when a module imports this.
    return build_defs(Settings.from_env())
