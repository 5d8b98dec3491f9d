"""Every run tag the project sets or reads, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import dagster as dg

from heymilo_pipeline.defs.partitions import key, keys_of

# Ours.
KIND_TAG = "heymilo/kind"  # "backfill" or "update": why a candidates run was requested
AS_OF_TAG = "heymilo/as_of"  # the day whose update (and audit) a run belongs to
REFRESH_TAG = "heymilo/refresh"  # the update's plan, for people reading the run
# Runs the CLI executes carry the process that runs them, so a later command can tell a run that is still going
# from one whose process was killed (kill -9, OOM, a closed laptop).
PID_TAG, HOST_TAG = "heymilo/pid", "heymilo/host"

# Dagster's documented tags of a partition range, as the UI sets them for a single-run backfill (Dagster exports
# no public constant for them), and the tags of any partitioned run.
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_RUN_TAGS = ("dagster/partition", ASSET_PARTITION_RANGE_START_TAG, "dagster/backfill")


def range_tags(first_day: date, last_day: date, first_posting: str, last_posting: str) -> dict[str, str]:
    """Run tags for the rectangle days x postings (postings in the order they were registered).

    A multi-partition key range is the product of its dimensions' ranges, so one run can cover
    every posting for a few days (the daily update) or one posting for a year (a backfill).
    """
    return {
        ASSET_PARTITION_RANGE_START_TAG: key(first_posting, first_day),
        ASSET_PARTITION_RANGE_END_TAG: key(last_posting, last_day),
    }


def range_days(tags: Mapping[str, str], partitions: dg.MultiPartitionsDefinition) -> tuple[date, date]:
    """The first and last day of a run's partition range, read through the partitions definition."""
    (_, first), (_, last) = keys_of(
        partitions, [tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]]
    )
    return first, last
