"""The asset keys: each asset is named after the table it is (``tables`` declares the tables themselves)."""

import dagster as dg

from heymilo_pipeline import tables

RAW_CANDIDATES_KEY = dg.AssetKey(tables.RAW_RECORDS.name)
CANDIDATES_KEY = dg.AssetKey(tables.CANDIDATES.name)
WORKFLOW_STEPS_KEY = dg.AssetKey(tables.WORKFLOW_STEPS.name)
INTERVIEW_RESULTS_KEY = dg.AssetKey(tables.INTERVIEW_RESULTS.name)
