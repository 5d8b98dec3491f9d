"""The code location: assembles what lives in ``defs/`` and nothing else."""

import dagster as dg

from heymilo_pipeline.defs.assets import candidate_tables, postings
from heymilo_pipeline.defs.checks import warehouse_checks
from heymilo_pipeline.defs.jobs import candidates_job, postings_job, rebuild_job, warehouse_checks_job
from heymilo_pipeline.defs.resources import build_resources
from heymilo_pipeline.defs.schedules import daily_checks, daily_update
from heymilo_pipeline.defs.sensors import new_postings, update_after_postings

defs = dg.Definitions(
    assets=[postings, candidate_tables],
    asset_checks=[warehouse_checks],
    jobs=[candidates_job, postings_job, warehouse_checks_job, rebuild_job],
    schedules=[daily_update, daily_checks],
    sensors=[new_postings, update_after_postings],
    resources=build_resources(),
)
