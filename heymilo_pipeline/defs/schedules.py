"""The daily update: yesterday and a lookback window, for every registered posting, in one run."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from heymilo_pipeline.defs.jobs import candidates_job
from heymilo_pipeline.defs.partitions import POSTINGS, range_tags
from heymilo_pipeline.settings import PipelineSettings


def update_request(
    instance: dg.DagsterInstance, as_of: date, settings: PipelineSettings
) -> dg.RunRequest | dg.SkipReason:
    """What the daily update runs on ``as_of``: days [yesterday - lookback, yesterday] x every posting.

    Late status and score changes land because those days are fetched again. One run covers all
    postings (a key range of a multi-partition is the product of its dimensions' ranges), so the
    client fetches postings concurrently within one process instead of starting a run per posting.
    """
    registered = instance.get_dynamic_partitions(POSTINGS)
    if not registered:
        return dg.SkipReason("no postings registered yet: materialize `postings` or turn on the new_postings sensor")
    last = as_of - timedelta(days=1)
    first = max(settings.start_date, last - timedelta(days=settings.lookback_days))
    if last < first:
        return dg.SkipReason(f"nothing to update: yesterday ({last}) is before HEYMILO_START_DATE ({first})")
    return dg.RunRequest(
        run_key=f"update-{as_of.isoformat()}",
        tags={
            **range_tags(first, last, registered[0], registered[-1]),
            "heymilo/kind": "update",
            "heymilo/as_of": as_of.isoformat(),
        },
    )


@dg.schedule(
    job=candidates_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Every day at 03:00 UTC: yesterday plus the lookback window (HEYMILO_LOOKBACK_DAYS, default 7), "
    "every posting.",
)
def daily_update(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    as_of = (context.scheduled_execution_time or datetime.now(UTC)).date()
    return update_request(context.instance, as_of, PipelineSettings.from_env())
