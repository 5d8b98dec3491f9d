"""The daily update and the daily audit.

03:00 UTC: ``daily_update`` lists postings (``postings_job``); when that run succeeds, the sensor
``update_after_postings`` requests the candidate runs of the day's refresh plan (``refresh.plan``): the recent
days, and one share of the older history, every registered posting. At the freshness deadline
(HEYMILO_FRESHNESS_DEADLINE_HOUR, UTC) ``daily_checks`` audits the whole warehouse, so a missed or failed
update shows as a failed freshness check, whatever became of the update's own runs.
"""

from datetime import UTC, date, datetime

import dagster as dg

from heymilo_pipeline.defs.jobs import postings_job, warehouse_checks_job
from heymilo_pipeline.defs.partitions import POSTINGS
from heymilo_pipeline.defs.tags import AS_OF_TAG, KIND_TAG, REFRESH_TAG, range_tags
from heymilo_pipeline.refresh import RefreshPlan


def update_requests(
    instance: dg.DagsterInstance, as_of: date, todo: RefreshPlan
) -> list[dg.RunRequest] | dg.SkipReason:
    """The candidate runs of the update on ``as_of`` (its refresh plan ``todo``, from ``refresh.todays_plan``):
    one per range of the plan, every registered posting.

    A run's partitions are a rectangle (a multi-partition key range is the product of its dimensions'
    ranges), so the recent days and the share are one run each unless they touch; within a run, each
    posting is one range query, fetched several at once.
    """
    registered = instance.get_dynamic_partitions(POSTINGS)
    if not registered:
        return dg.SkipReason("no postings registered yet: materialize `postings` or turn on the new_postings sensor")
    if not todo.ranges:
        return dg.SkipReason(f"nothing to update on {as_of}: yesterday is before HEYMILO_START_DATE")
    return [
        dg.RunRequest(
            run_key=f"update-{as_of.isoformat()}-{days.first.isoformat()}",
            tags={
                **range_tags(days.first, days.last, registered[0], registered[-1]),
                KIND_TAG: "update",
                AS_OF_TAG: as_of.isoformat(),
                REFRESH_TAG: todo.describe(),
            },
        )
        for days in todo.ranges
    ]


@dg.schedule(
    job=postings_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Every day at 03:00 UTC: list postings, then (sensor update_after_postings) fetch the recent days "
    "(HEYMILO_LOOKBACK_DAYS) and one share of the older history (HEYMILO_FULL_REFRESH_DAYS), every posting.",
)
def daily_update(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return listing_request((context.scheduled_execution_time or datetime.now(UTC)).date())


def listing_request(as_of: date) -> dg.RunRequest:
    """The daily update's first run on ``as_of``: the listing of postings, tagged so ``update_after_postings``
    follows it with the candidate runs."""
    return dg.RunRequest(run_key=f"postings-{as_of.isoformat()}", tags={KIND_TAG: "update", AS_OF_TAG: str(as_of)})


def checks_request(as_of: date) -> dg.RunRequest:
    """The audit of ``as_of``: the warehouse checks."""
    return dg.RunRequest(run_key=f"checks-{as_of.isoformat()}", tags={AS_OF_TAG: str(as_of)})


def daily_checks(deadline_hour: int) -> dg.ScheduleDefinition:
    """The warehouse checks every day at the freshness deadline (built from HEYMILO_FRESHNESS_DEADLINE_HOUR)."""

    @dg.schedule(
        name="daily_checks",
        job=warehouse_checks_job,
        cron_schedule=f"0 {deadline_hour} * * *",
        execution_timezone="UTC",
        description=f"Every day at the freshness deadline, {deadline_hour:02d}:00 UTC "
        "(HEYMILO_FRESHNESS_DEADLINE_HOUR): the warehouse checks.",
    )
    def _daily_checks(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return checks_request((context.scheduled_execution_time or datetime.now(UTC)).date())

    return _daily_checks


def shared_tables_maintenance(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """The upkeep's schedule, built only where there are shared tables (``definitions.build_defs``). An hour before
    the daily update (03:00 UTC), so its merges do not contend with the update's writes."""
    return dg.ScheduleDefinition(
        name="shared_tables_maintenance",
        job=job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        description="Every day at 02:00 UTC: the shared tables' upkeep (production profile only).",
    )
