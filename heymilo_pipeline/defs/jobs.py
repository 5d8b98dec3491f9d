"""Jobs: fetching and loading candidates (partitioned), and refreshing postings."""

import dagster as dg

from heymilo_pipeline.defs.assets import WORKFLOW_STEPS_KEY, postings
from heymilo_pipeline.defs.checks import CANDIDATES, RAW_CANDIDATES

candidates_job = dg.define_asset_job(
    "candidates_job",
    selection=dg.AssetSelection.assets(RAW_CANDIDATES, CANDIDATES, WORKFLOW_STEPS_KEY),
    description="Fetch, check and publish candidates for a rectangle of postings x days, then check freshness.",
)

postings_job = dg.define_asset_job(
    "postings_job", selection=dg.AssetSelection.assets(postings), description="List postings and register them."
)
