"""The code location: assembles what lives in ``defs/`` and nothing else."""

import dagster as dg

from heymilo_pipeline.defs.assets import postings, raw_candidates, warehouse_tables
from heymilo_pipeline.defs.checks import freshness
from heymilo_pipeline.defs.jobs import candidates_job, postings_job
from heymilo_pipeline.defs.resources import build_resources
from heymilo_pipeline.defs.schedules import daily_update
from heymilo_pipeline.defs.sensors import new_postings

defs = dg.Definitions(
    assets=[postings, raw_candidates, warehouse_tables],
    asset_checks=[freshness],
    jobs=[candidates_job, postings_job],
    schedules=[daily_update],
    sensors=[new_postings],
    resources=build_resources(),
)
