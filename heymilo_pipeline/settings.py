"""The settings: every ``HEYMILO_*`` variable, read once (``Settings.from_env``) and validated.

Nothing else in the package reads the environment for a setting. ``PipelineSettings`` is what the pipeline
does (from when, which postings, how often old days come back, what the checks allow); ``Settings`` adds where
data lives and how to reach the API. The Dagster code location shows every field as a resource field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.settings import ClientSettings, ConnectionSettings, PostgresURL
from heymilo_pipeline.privacy import PiiMode, Scrubber
from heymilo_pipeline.quality import ScoreBounds
from heymilo_pipeline.storage import DUCKDB_NAME, StorageError, open_store

if TYPE_CHECKING:
    from heymilo_pipeline.storage import Store

DEFAULT_START_DATE = date(2025, 1, 1)

# Environment variable -> field of Settings: the one list README's configuration table follows.
ENVIRONMENT = {
    "HEYMILO_API_KEY": "api_key",
    "HEYMILO_BASE_URL": "base_url",
    "HEYMILO_RATE_LIMIT": "requests_per_minute",
    "HEYMILO_MAX_ATTEMPTS": "max_attempts",
    "HEYMILO_TIMEOUT": "timeout_seconds",
    "HEYMILO_MAX_CONCURRENCY": "max_concurrency",
    "HEYMILO_BACKOFF_INITIAL": "backoff_initial",
    "HEYMILO_BACKOFF_MAX": "backoff_max",
    "HEYMILO_DATA_DIR": "data_dir",
    "HEYMILO_RATE_BUDGET_URL": "rate_budget_url",
    "HEYMILO_SHARED_CATALOG_URL": "shared_catalog_url",
    "HEYMILO_SHARED_DATA_PATH": "shared_data_path",
    "HEYMILO_LOCK_TIMEOUT": "lock_timeout_seconds",
    "HEYMILO_START_DATE": "start_date",
    "HEYMILO_LOOKBACK_DAYS": "lookback_days",
    "HEYMILO_FULL_REFRESH_DAYS": "full_refresh_days",
    "HEYMILO_ACTIVE_DAYS": "active_days",
    "HEYMILO_POSTINGS": "include_postings",
    "HEYMILO_EXCLUDE_POSTINGS": "exclude_postings",
    "HEYMILO_INCLUDE_TEST_POSTINGS": "include_test_postings",
    "HEYMILO_PII": "pii",
    "HEYMILO_PII_KEY": "pii_key",
    "HEYMILO_VANISHED_POSTINGS": "vanished_postings",
    "HEYMILO_FRESHNESS_DEADLINE_HOUR": "freshness_deadline_hour",
    "HEYMILO_SCORE_MAX": "score_max",
    "HEYMILO_RESUME_SCORE_MAX": "resume_score_max",
    "HEYMILO_WEB_INTERVIEW_SCORE_MAX": "web_interview_score_max",
}
VARIABLE = {name: var for var, name in ENVIRONMENT.items()}


def problems(exc: ValidationError) -> str:
    """Every invalid setting by its variable, never its value (a key or a secret may be the input)."""
    return "; ".join(
        f"{VARIABLE.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'settings'}: {e['msg']}"
        for e in exc.errors(include_input=False)
    )


class PipelineSettings(BaseModel):
    """What the pipeline does: the partitions, which postings, the daily update's plan, what the checks allow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_date: date = Field(DEFAULT_START_DATE, description="First UTC day of the candidate partitions.")
    lookback_days: int = Field(7, ge=0, description="Days before yesterday that the daily update fetches again.")
    full_refresh_days: int = Field(
        7, ge=1, description="Every older day is fetched again at least once in any this many daily updates."
    )
    active_days: int = Field(
        30,
        ge=0,
        description="The daily update also fetches days up to this old that hold unfinished candidates (not "
        "shortlisted, dismissed or knocked out): their records still change. 0: only the lookback.",
    )
    include_postings: tuple[str, ...] = Field((), description="Only these postings (empty: all).")
    exclude_postings: tuple[str, ...] = Field((), description="Never these postings.")
    include_test_postings: bool = Field(False, description="Also fetch postings flagged test_posting.")
    pii: PiiMode = Field("keep", description="What to store of names, emails and links: keep, hash or drop.")
    pii_key: SecretStr | None = Field(None, description="Secret that keys the hash when pii=hash.")
    vanished_postings: Literal["delete", "keep"] = Field(
        "delete",
        description="A posting gone from the API (missing from the listing, and its candidates answer 404): delete "
        "its candidates from DuckDB and the lake, or keep them. Its postings row stays, marked vanished_at.",
    )
    freshness_deadline_hour: int = Field(
        6, ge=0, le=23, description="UTC hour by which yesterday must be loaded; the freshness check runs then."
    )
    score_max: float = Field(100.0, gt=0, description="Top of the documented score range (0..100); blocking.")
    resume_score_max: float = Field(100.0, gt=0, description="Top of resume_score (undocumented range); warns.")
    web_interview_score_max: float = Field(
        100.0, gt=0, description="Top of web_interview_score (undocumented range); warns."
    )

    @field_validator("include_postings", "exclude_postings", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.replace(";", ",").split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _hash_needs_key(self) -> PipelineSettings:
        if self.pii == "hash" and not (self.pii_key and self.pii_key.get_secret_value()):
            raise ValueError("HEYMILO_PII=hash needs HEYMILO_PII_KEY, a secret that keys the hash")
        return self

    def score_bounds(self) -> ScoreBounds:
        return ScoreBounds(
            score=(0.0, self.score_max),
            web_interview_score=(0.0, self.web_interview_score_max),
            resume_score=(0.0, self.resume_score_max),
        )

    def scrubber(self) -> Scrubber:
        return Scrubber(self.pii, self.pii_key.get_secret_value() if self.pii_key else None)

    @field_validator("start_date")
    @classmethod
    def _not_in_future(cls, value: date) -> date:
        if value > date.today():
            raise ValueError(f"{value} is in the future; there is nothing to fetch before it")
        return value

    def wants(self, posting_id: str, *, test_posting: bool = False) -> bool:
        """Whether a posting is fetched under these filters."""
        if posting_id in self.exclude_postings:
            return False
        if self.include_postings:
            return posting_id in self.include_postings
        return self.include_test_postings or not test_posting


class Settings(PipelineSettings, ConnectionSettings):
    """Every setting of the pipeline: what it does, where its data lives, how it reaches the API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr | None = Field(None, description="The HeyMilo API key (never logged, stored or shown).")
    data_dir: Path = Field(Path("data"), description="Root of the lake, the DuckDB file and the rate-limit state.")
    rate_budget_url: PostgresURL | None = Field(
        None,
        description="A PostgreSQL URL: the API key's rate budget lives in that database, shared by every host that "
        "reaches it (several machines, pods). Unset: a file under the data dir, shared by this machine's processes.",
    )
    shared_catalog_url: PostgresURL | None = Field(
        None,
        description="A PostgreSQL URL: the tables live in a DuckLake whose catalog is that database, shared by every "
        "host (with HEYMILO_SHARED_DATA_PATH). Unset: the lake's Parquet files and the DuckDB file under the data dir.",
    )
    shared_data_path: str | None = Field(
        None,
        description="Where the shared tables' Parquet files go: s3://bucket/prefix/ (credentials from "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and, for storage other than AWS, AWS_ENDPOINT_URL) or "
        "a directory.",
    )
    lock_timeout_seconds: float = Field(
        300.0, gt=0, description="How long a load waits for a DuckDB file held by another process (a notebook?)."
    )

    @model_validator(mode="after")
    def _shared_needs_both(self) -> Settings:
        if (self.shared_catalog_url is None) != (self.shared_data_path is None):
            raise ValueError("HEYMILO_SHARED_CATALOG_URL and HEYMILO_SHARED_DATA_PATH go together: set both or neither")
        return self

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / DUCKDB_NAME

    @property
    def rate_limit_dir(self) -> Path:
        return self.data_dir / ".ratelimit"

    def client_settings(self) -> ClientSettings:
        if self.api_key is None:
            raise ConfigurationError(
                "HEYMILO_API_KEY is not set. Put your HeyMilo API key in the environment (or in .env) "
                "to use the real API, or run against the simulator (make demo)."
            )
        connection = {name: getattr(self, name) for name in ConnectionSettings.model_fields}
        return ClientSettings.build(
            **connection, api_key=self.api_key, state_dir=self.rate_limit_dir, rate_budget_url=self.rate_budget_url
        )

    def store(self, environ: Mapping[str, str] | None = None) -> Store:
        """Where the tables are (``storage.open_store``); S3 credentials from AWS's variables, as every S3 client
        reads them."""
        url = self.shared_catalog_url.get_secret_value() if self.shared_catalog_url is not None else None
        return open_store(
            self.data_dir,
            lock_timeout_s=self.lock_timeout_seconds,
            shared_catalog_url=url,
            shared_data_path=self.shared_data_path,
            environ=environ,
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings from ``HEYMILO_*`` variables (empty ones count as unset), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {name: env[var] for var, name in ENVIRONMENT.items() if env.get(var)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid settings: {problems(exc)}") from None
        if settings.shared_catalog_url is not None:
            try:
                settings.store(env)  # its catalog checks URL and credentials when the code location loads
            except StorageError as exc:
                raise ConfigurationError(f"invalid settings: HEYMILO_SHARED_*: {exc}") from None
        return settings
