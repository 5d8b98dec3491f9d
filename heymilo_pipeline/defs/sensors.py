"""Sensors: register new postings and backfill them; start the day's candidate runs once postings are listed."""

import asyncio
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from heymilo_pipeline.api.errors import HeyMiloError
from heymilo_pipeline.defs.jobs import candidates_job, postings_job
from heymilo_pipeline.defs.partitions import POSTINGS, postings_partitions
from heymilo_pipeline.defs.resources import HeyMiloAPI, Pipeline, Storage
from heymilo_pipeline.defs.schedules import update_requests
from heymilo_pipeline.defs.tags import AS_OF_TAG, KIND_TAG, range_tags
from heymilo_pipeline.discovery import discover_postings
from heymilo_pipeline.refresh import todays_plan
from heymilo_pipeline.settings import PipelineSettings
from heymilo_pipeline.storage import Store


@dg.sensor(
    jobs=[candidates_job, postings_job],
    minimum_interval_seconds=600,
    description="Every 10 minutes: list postings (one request per 100), register new ones and backfill each "
    "from HEYMILO_START_DATE to yesterday in its own run.",
)
def new_postings(
    context: dg.SensorEvaluationContext, heymilo: HeyMiloAPI, pipeline: Pipeline
) -> dg.SensorResult | dg.SkipReason:
    settings = pipeline.settings()
    try:
        found = asyncio.run(discover_postings(heymilo.client(), settings))
    except HeyMiloError as exc:
        return dg.SkipReason(f"could not list postings: {exc}")
    existing = set(context.instance.get_dynamic_partitions(POSTINGS))
    new = [posting_id for posting_id in found.wanted if posting_id not in existing]
    if not new:
        return dg.SkipReason(f"no new postings ({len(found.wanted)} registered)")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M")
    runs = [dg.RunRequest(run_key=f"postings-{stamp}", job_name=postings_job.name)]
    if yesterday >= settings.start_date:
        runs += [
            dg.RunRequest(
                run_key=f"backfill-{posting_id}",
                job_name=candidates_job.name,
                tags={**range_tags(settings.start_date, yesterday, posting_id, posting_id), KIND_TAG: "backfill"},
            )
            for posting_id in new
        ]
    context.log.info(f"new postings: {new}")
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=[postings_partitions.build_add_request(new)])


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[postings_job],
    request_job=candidates_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When the daily update's listing of postings succeeds: the candidate runs of that day's refresh "
    "plan (it does nothing for other postings runs, so it is on by default).",
)
def update_after_postings(
    context: dg.RunStatusSensorContext, storage: Storage, pipeline: Pipeline
) -> list[dg.RunRequest] | dg.SkipReason:
    return requests_after_listing(context.instance, context.dagster_run.tags, pipeline.settings(), storage.store())


def requests_after_listing(
    instance: dg.DagsterInstance, listing_tags: Mapping[str, str], settings: PipelineSettings, store: Store
) -> list[dg.RunRequest] | dg.SkipReason:
    """What follows a successful listing of postings: for the daily update's (``schedules.listing_request``), the
    candidate runs of its day's refresh plan; nothing for any other."""
    if listing_tags.get(KIND_TAG) != "update" or AS_OF_TAG not in listing_tags:
        return dg.SkipReason("not a daily update's listing")
    as_of = date.fromisoformat(listing_tags[AS_OF_TAG])
    return update_requests(instance, as_of, todays_plan(as_of, settings, store))
