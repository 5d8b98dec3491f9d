"""How the client reaches the API and how hard it pushes it: validated before any request.

The API package reads no environment: ``heymilo_pipeline.settings.Settings`` does, once, and builds these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.limits import (
    POSTGRES_SCHEMES,
    RESULTS_LANE,
    PostgresRateLimiter,
    RateLimiter,
    SharedRateLimiter,
)

DEFAULT_BASE_URL = "https://api.heymilo.ai"


def _postgres_url(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().startswith(POSTGRES_SCHEMES):
        raise ValueError("must be a PostgreSQL URL (postgresql://user:password@host:port/database)")
    return value


# A URL that may hold a password: a secret, shown and logged as ********.
PostgresURL = Annotated[SecretStr, AfterValidator(_postgres_url)]


class ConnectionSettings(BaseModel):
    """How to reach the API and how hard to push it: one declaration, read by ``Settings`` from ``HEYMILO_<NAME>``
    and shown as the fields of the Dagster ``heymilo`` resource."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = Field(
        None, description="Your HeyMilo API key, needed to fetch; never logged, stored or shown."
    )
    base_url: str = Field(DEFAULT_BASE_URL, description="API base URL (the real API, or a simulator).")
    rate_limit: int = Field(
        300, ge=1, description="Requests your key may make per window (HeyMilo: 300 a minute); every run shares it."
    )
    rate_window_seconds: float = Field(60.0, gt=0, description="Length of the rate-limit window in seconds.")
    page_size: int = Field(100, ge=1, le=100, description="Candidates per request (the API allows 1..100).")
    max_attempts: int = Field(8, ge=1, description="Attempts per request before giving up.")
    backoff_initial: float = Field(0.5, ge=0, description="First backoff step in seconds (doubles, jittered).")
    backoff_max: float = Field(30.0, ge=0, description="Longest single backoff in seconds.")
    timeout: float = Field(30.0, gt=0, description="Seconds one whole request may take.")
    max_concurrency: int = Field(
        4,
        ge=1,
        description="Postings fetched at once by one run, and day sub-ranges a large posting is walked in at once.",
    )
    results_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of rate_limit that interview results (one request per interview) may use at most, so "
        "they never starve the candidate listing; the rest stays for candidates and postings.",
    )
    rate_budget_url: PostgresURL | None = Field(
        None,
        description="A PostgreSQL URL: the key's rate budget lives in that database, shared by every host that "
        "reaches it (several machines, pods). Unset: a file under the data dir, shared by this machine's processes.",
    )

    @field_validator("base_url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ClientSettings(ConnectionSettings):
    """What ``HeyMiloClient`` needs: the connection with a key, and the directory of the machine's rate budget
    (unless ``rate_budget_url`` puts it in PostgreSQL). ``repr`` and logs never show the key."""

    state_dir: Path | None = Field(
        None, description="Where this machine's rate budget lives (one file per key), unless rate_budget_url is set."
    )

    @model_validator(mode="after")
    def _key_and_budget(self) -> ClientSettings:
        if self.api_key is None or not self.api_key.get_secret_value().strip():
            raise ValueError("the API key is missing or empty")
        if self.state_dir is None and self.rate_budget_url is None:
            raise ValueError("the rate budget needs a place: state_dir or rate_budget_url")
        return self

    @classmethod
    def of(cls, connection: ConnectionSettings, state_dir: Path) -> ClientSettings:
        """The client's settings for ``connection``, the machine's rate budget under ``state_dir``."""
        values = {name: getattr(connection, name) for name in ConnectionSettings.model_fields}
        return cls.build(**values, state_dir=state_dir)

    @property
    def key(self) -> str:
        assert self.api_key is not None  # checked above
        return self.api_key.get_secret_value()

    @classmethod
    def build(cls, **values: Any) -> ClientSettings:
        """The settings, or a ``ConfigurationError`` naming every invalid field (never its value)."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])} {e['msg']}" for e in exc.errors(include_input=False)
            )
            raise ConfigurationError(f"invalid HeyMilo client settings: {problems}") from None

    def limiter(self) -> RateLimiter:
        """The key's budget: every request takes a slot of it."""
        return self._budget("", self.rate_limit)

    def results_lane(self) -> RateLimiter:
        """The results' lane: a request for an interview's results takes a slot of it before one of the key's
        budget, so results use at most ``results_share`` of the limit, however many runs fetch them."""
        return self._budget(RESULTS_LANE, max(1, int(self.rate_limit * self.results_share)))

    def _budget(self, lane: str, requests: int) -> RateLimiter:
        key, window = self.key, self.rate_window_seconds
        if self.rate_budget_url is not None:
            url = self.rate_budget_url.get_secret_value()
            return PostgresRateLimiter.for_key(url, key, self.base_url, requests, window, lane=lane)
        assert self.state_dir is not None  # checked above
        return SharedRateLimiter.for_key(self.state_dir, key, self.base_url, requests, window, lane=lane)
