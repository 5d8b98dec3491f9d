"""Sensors: register new postings and backfill them; start the day's candidate runs once postings are listed; fetch
the interview results of every candidates run's partitions once it has ended."""

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from heymilo_pipeline.api.errors import HeyMiloError
from heymilo_pipeline.defs.jobs import candidates_job, postings_job, results_job
from heymilo_pipeline.defs.partitions import POSTINGS, postings_partitions
from heymilo_pipeline.defs.resources import HeyMiloAPI, Pipeline, Storage
from heymilo_pipeline.defs.schedules import update_requests
from heymilo_pipeline.defs.tags import (
    AS_OF_TAG,
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    KIND_TAG,
    range_tags,
)
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


# A candidates run ended (succeeded, or failed for some postings): its partitions' results are due now.
_ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


@dg.sensor(
    job=results_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a run of candidates_job ends (the daily update's, a new posting's backfill), succeeded or "
    "failed: one results run over the same postings x days, so results always follow their candidates and one "
    "failed posting keeps no other posting's results waiting. On by default, like update_after_postings.",
)
def results_after_candidates(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    # Turned on for the first time: the runs of the last day, not every run the instance ever held.
    since = float(context.cursor) if context.cursor else time.time() - 86400
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=candidates_job.name, statuses=_ENDED, updated_after=_utc(since)), limit=100
    )
    if not runs:
        return dg.SkipReason("no candidates run has ended since the last look")
    requests = [results_request(run.run_id, run.tags) for run in runs]
    records = context.instance.get_run_records(filters=dg.RunsFilter(run_ids=[r.run_id for r in runs]))
    cursor = max([since, *(r.update_timestamp.timestamp() for r in records)])
    return dg.SensorResult(run_requests=[r for r in requests if r is not None], cursor=str(cursor))


def results_request(run_id: str, tags: Mapping[str, str]) -> dg.RunRequest | None:
    """The results run that follows the candidates run ``run_id``: its partition range and why it ran."""
    if ASSET_PARTITION_RANGE_START_TAG not in tags:
        return None
    return dg.RunRequest(run_key=f"results-after-{run_id}", tags=results_tags(tags))


def results_tags(candidates_tags: Mapping[str, str]) -> dict[str, str]:
    """A results run's tags after a candidates run tagged ``candidates_tags``: the same partitions and reason."""
    kept = (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG, KIND_TAG, AS_OF_TAG)
    return {k: candidates_tags[k] for k in kept if k in candidates_tags}


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
