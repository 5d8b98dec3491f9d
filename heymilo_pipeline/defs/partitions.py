"""Candidates are partitioned posting x UTC day; postings are a dynamic dimension kept by the listing."""

from collections.abc import Sequence
from datetime import date

import dagster as dg

POSTINGS = "postings"

postings_partitions = dg.DynamicPartitionsDefinition(name=POSTINGS)


def daily_partitions(start: date) -> dg.DailyPartitionsDefinition:
    # end_offset=0: the newest partition is yesterday, the last complete UTC day.
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=0)


def candidate_partitions(start: date) -> dg.MultiPartitionsDefinition:
    """Posting x UTC day from ``start`` (HEYMILO_START_DATE), built when the definitions are."""
    return dg.MultiPartitionsDefinition({"date": daily_partitions(start), "posting": postings_partitions})


def key(posting_id: str, day: date) -> str:
    return str(dg.MultiPartitionKey({"date": day.isoformat(), "posting": posting_id}))


def keys_of(partitions: dg.MultiPartitionsDefinition, partition_keys: Sequence[str]) -> list[tuple[str, date]]:
    """(posting_id, day) of every partition key of a run."""
    out = []
    for text in partition_keys:
        dims = partitions.get_partition_key_from_str(text).keys_by_dimension
        out.append((dims["posting"], date.fromisoformat(dims["date"])))
    return out


def register_postings(instance: dg.DagsterInstance, wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """Make the postings dimension exactly ``wanted``: returns (added, removed).

    Removing matters: the daily update covers every registered posting, so a posting excluded by
    the filters (or gone from the API) must leave the dimension. Its rows stay in DuckDB and its
    materialization history in Dagster; registering it again brings both back into view.
    """
    existing = list(instance.get_dynamic_partitions(POSTINGS))
    added = [posting_id for posting_id in wanted if posting_id not in set(existing)]
    removed = [posting_id for posting_id in existing if posting_id not in set(wanted)]
    if added:
        instance.add_dynamic_partitions(POSTINGS, added)
    for posting_id in removed:
        instance.delete_dynamic_partition(POSTINGS, posting_id)
    return added, removed
