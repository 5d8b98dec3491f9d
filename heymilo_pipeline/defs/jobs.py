"""Jobs: candidates and interview results (partitioned), postings, the warehouse checks, the rebuild of DuckDB from
the lake, and the shared tables' maintenance (production profile only)."""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from heymilo_pipeline.defs.assets import postings
from heymilo_pipeline.defs.checks import warehouse_checks
from heymilo_pipeline.defs.keys import CANDIDATES_KEY, INTERVIEW_RESULTS_KEY, RAW_CANDIDATES_KEY, WORKFLOW_STEPS_KEY
from heymilo_pipeline.defs.resources import Storage
from heymilo_pipeline.tables import CANDIDATES, WORKFLOW_STEPS

# The slice rules (checks of raw_candidates) run inside the step; the warehouse checks (of the DuckDB tables,
# which the step loads and records) run on their own.
CANDIDATES_SELECTION = dg.AssetSelection.assets(RAW_CANDIDATES_KEY)

candidates_job = dg.define_asset_job(
    "candidates_job",
    selection=CANDIDATES_SELECTION,
    description="Fetch, check and publish candidates for a rectangle of postings x days, posting by posting.",
)

results_job = dg.define_asset_job(
    "results_job",
    selection=dg.AssetSelection.assets(INTERVIEW_RESULTS_KEY),
    description="Fetch and store the interview results due for a rectangle of postings x days (finished candidates "
    "without results for their current state), newest day first, within HEYMILO_RESULTS_SHARE of the budget.",
)

postings_job = dg.define_asset_job(
    "postings_job",
    selection=dg.AssetSelection.assets(postings),
    description="List postings: refresh the postings table, register new ones, mark and handle vanished ones.",
)

warehouse_checks_job = dg.define_asset_job(
    "warehouse_checks_job",
    selection=dg.AssetSelection.checks(warehouse_checks),
    description="Audit the whole warehouse: freshness, completeness against the API, uniqueness, references, "
    "DuckDB against the lake.",
)


@dg.op(description="Drop and recreate candidates, candidate_workflow_steps and partition_loads from the lake alone.")
def rebuild_warehouse(context: dg.OpExecutionContext, storage: Storage) -> None:
    counts = storage.store(on_wait=context.log.warning).rebuild(context.run_id)
    context.log.info(f"rebuilt: {counts}")
    for asset, table in ((CANDIDATES_KEY, CANDIDATES.name), (WORKFLOW_STEPS_KEY, WORKFLOW_STEPS.name)):
        context.log_event(
            dg.AssetMaterialization(asset_key=asset, metadata={"dagster/row_count": counts[table], "rebuilt": True})
        )


@dg.job(
    description="Rebuild the DuckDB tables from the lake, without the API: after losing the DuckDB file or "
    "changing a column. `heymilo-pipeline rebuild` runs it."
)
def rebuild_job() -> None:
    rebuild_warehouse()


class MaintenanceConfig(dg.Config):
    keep_hours: float = Field(
        24.0,
        gt=0,
        description="Keep snapshots (time travel) and killed writes' files this long; older ones go, "
        "and with them deleted candidates' rows.",
    )


@dg.op(description="Compact the shared tables' files, expire old snapshots and delete the files nothing needs.")
def maintain_shared_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, storage: Storage) -> None:
    done = storage.store().maintain(timedelta(hours=config.keep_hours))
    context.log.info(f"maintained: {done}")


def shared_tables_maintenance_job() -> dg.JobDefinition:
    """The upkeep job, built only where there are shared tables (``definitions.build_defs``)."""

    @dg.job(
        name="shared_tables_maintenance_job",
        description="The shared tables' upkeep (HEYMILO_SHARED_CATALOG_URL): merge small files, expire snapshots "
        "older than a day and delete the files they held, delete files killed writes left.",
    )
    def job() -> None:
        maintain_shared_tables()

    return job
