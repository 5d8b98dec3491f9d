"""Which postings exist, and which of them the pipeline fetches (filters, test postings)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.models import PostingResponse
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.flatten import postings_table
from heymilo_pipeline.settings import PipelineSettings


@dataclass
class Discovery:
    listed: list[PostingResponse]
    wanted: list[str]
    skipped: dict[str, str]  # posting id -> why it is not fetched
    stats: QueryStats
    new: list[str] = field(default_factory=list)  # filled in when registered

    def table(self, listed_at: datetime) -> pa.Table:
        return postings_table(self.listed, listed_at)

    def by_status(self) -> dict[str, int]:
        return dict(Counter(p.status for p in self.listed))


async def discover_postings(client: HeyMiloClient, settings: PipelineSettings) -> Discovery:
    """List every posting and apply the filters; unknown ids in the filters are an error, not a no-op."""
    async with client:
        listed, stats = await client.list_postings()
    known = {p.id for p in listed}
    unknown = sorted((set(settings.postings) | set(settings.exclude_postings)) - known)
    if unknown:
        raise ConfigurationError(
            f"posting(s) {unknown} in HEYMILO_POSTINGS / HEYMILO_EXCLUDE_POSTINGS do not exist in this workspace "
            f"(it has {len(known)} postings). Fix the ids; `heymilo-pipeline status` lists the known ones."
        )
    wanted, skipped = [], {}
    for posting in listed:
        if settings.wants(posting.id, test_posting=posting.test_posting):
            wanted.append(posting.id)
        elif posting.id in settings.exclude_postings:
            skipped[posting.id] = "excluded by HEYMILO_EXCLUDE_POSTINGS"
        elif settings.postings:
            skipped[posting.id] = "not in HEYMILO_POSTINGS"
        else:
            skipped[posting.id] = "test posting (set HEYMILO_INCLUDE_TEST_POSTINGS=1 to fetch it)"
    return Discovery(listed, wanted, skipped, stats)
