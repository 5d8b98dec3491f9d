"""The settings: every ``HEYMILO_*`` variable, read once (``Settings.from_env``) and validated.

Nothing else in the package reads the environment for a setting. ``PipelineSettings`` is what the pipeline
does (from when, which postings, how often old days come back, what the checks allow); ``Settings`` adds where
data lives and how to reach the API. The Dagster code location shows every field as a resource field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.limits import RATE_BUDGET_DIR
from heymilo_pipeline.api.settings import ClientSettings, ConnectionSettings, PostgresURL
from heymilo_pipeline.privacy import PiiMode, Scrubber
from heymilo_pipeline.quality import ScoreBounds
from heymilo_pipeline.storage import DUCKDB_NAME, StorageError, open_store

if TYPE_CHECKING:
    from heymilo_pipeline.storage import Store

DEFAULT_START_DATE = date(2025, 1, 1)

PREFIX = "HEYMILO_"


def variable(name: str) -> str:
    """The environment variable of a setting: its name, upper case, after ``HEYMILO_`` (one name everywhere)."""
    return PREFIX + name.upper()


def problems(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every invalid setting by its variable and what it expects, never its value (it may be a secret)."""

    def one(error: Any) -> str:
        name = str(error["loc"][0]) if error["loc"] else ""
        field = (model or Settings).model_fields.get(name)
        if field is None:
            return f"settings: {error['msg']}"
        return f"{variable(name)}: {error['msg']} (expected: {field.description})"

    return "; ".join(one(e) for e in exc.errors(include_input=False))


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
    postings: tuple[str, ...] = Field(
        (),
        description="Only these postings, comma-separated ids (empty: all but test postings); an unknown id is an "
        "error, and a posting left out later leaves the partitions (its rows stay).",
    )
    exclude_postings: tuple[str, ...] = Field((), description="Never these postings, comma-separated ids.")
    include_test_postings: bool = Field(False, description="Also fetch postings flagged test_posting.")
    pii: PiiMode = Field(
        "keep", description="What to store of names, emails, resume and recording links: keep, hash (keyed) or drop."
    )
    pii_key: SecretStr | None = Field(None, description="Secret that keys the hash; required with HEYMILO_PII=hash.")
    vanished_postings: Literal["delete", "keep"] = Field(
        "delete",
        description="A posting gone from the API (missing from the listing, and its candidates answer 404): delete "
        "its candidates from DuckDB and the lake, or keep them. Its postings row stays, marked vanished_at.",
    )
    freshness_deadline_hour: int = Field(
        6, ge=0, le=23, description="UTC hour by which yesterday must be loaded; the warehouse checks run then."
    )
    score_max: float = Field(100.0, gt=0, description="Top of the documented score range (0..100); blocking.")
    resume_score_max: float = Field(100.0, gt=0, description="Top of resume_score (undocumented range); warns.")
    web_interview_score_max: float = Field(
        100.0, gt=0, description="Top of web_interview_score (undocumented range); warns."
    )

    store_transcripts: bool = Field(
        False,
        description="Store interview and SMS transcripts, and the candidate's words quoted as evidence, with the "
        "interview results (personal data, following HEYMILO_PII). Off: results without them.",
    )
    results_grace_days: int = Field(
        2,
        ge=0,
        description="The results check wants current results for every candidate that finished (last activity) "
        "more than this many days ago: the time the share of the budget needs to catch up.",
    )

    @field_validator("postings", "exclude_postings", mode="before")
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
        if self.postings:
            return posting_id in self.postings
        return self.include_test_postings or not test_posting


class StorageSettings(BaseModel):
    """Where the tables live: the data directory's lake and DuckDB file, or shared tables (DuckLake)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(Path("data"), description="Root of the lake, the DuckDB file and the rate-limit state.")
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
    lock_timeout: float = Field(
        300.0, gt=0, description="Seconds a load waits for a DuckDB file another process holds (a notebook?)."
    )

    @model_validator(mode="after")
    def _shared_needs_both(self) -> StorageSettings:
        if (self.shared_catalog_url is None) != (self.shared_data_path is None):
            raise ValueError("HEYMILO_SHARED_CATALOG_URL and HEYMILO_SHARED_DATA_PATH go together: set both or neither")
        return self

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / DUCKDB_NAME

    @property
    def rate_limit_dir(self) -> Path:
        return self.data_dir / RATE_BUDGET_DIR

    def store(self, environ: Mapping[str, str] | None = None, on_wait: Callable[[str], None] | None = None) -> Store:
        """Where the tables are (``storage.open_store``); S3 credentials from AWS's variables, as every S3 client
        reads them. ``on_wait`` hears when another process holds the DuckDB file."""
        url = self.shared_catalog_url.get_secret_value() if self.shared_catalog_url is not None else None
        return open_store(
            self.data_dir,
            lock_timeout_s=self.lock_timeout,
            shared_catalog_url=url,
            shared_data_path=self.shared_data_path,
            environ=environ,
            on_wait=on_wait,
        )


class Settings(PipelineSettings, StorageSettings, ConnectionSettings):
    """Every setting of the pipeline, declared once in its group: what it does (``PipelineSettings``), where its
    data lives (``StorageSettings``), how it reaches the API (``ConnectionSettings``). Each is read from
    ``HEYMILO_<NAME>`` and shown under its own name as a field of the group's Dagster resource."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def client_settings(self) -> ClientSettings:
        if self.api_key is None:
            raise ConfigurationError(
                "HEYMILO_API_KEY is not set. Put your HeyMilo API key in the environment (or in .env) "
                "to use the real API, or run against the simulator (make demo)."
            )
        return ClientSettings.of(self, self.rate_limit_dir)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings from ``HEYMILO_*`` variables (empty ones count as unset), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {name: env[variable(name)] for name in cls.model_fields if env.get(variable(name))}
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
