"""The HeyMilo Public API: models, client, errors and the shared rate budget. No Dagster here."""

from heymilo_pipeline.api.client import CandidateBatch, CandidatePage, HeyMiloClient
from heymilo_pipeline.api.limits import PostgresRateLimiter, RateLimiter, SharedRateLimiter
from heymilo_pipeline.api.settings import ClientSettings
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.api.windows import DayRange

__all__ = [
    "CandidateBatch",
    "CandidatePage",
    "ClientSettings",
    "DayRange",
    "HeyMiloClient",
    "PostgresRateLimiter",
    "QueryStats",
    "RateLimiter",
    "SharedRateLimiter",
]
