"""Client configuration, from the environment or from code, validated before any request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.limits import SharedRateLimiter

DEFAULT_BASE_URL = "https://api.heymilo.ai"

# Environment variable -> setting. Kept in one place so the README and the code agree.
ENVIRONMENT = {
    "HEYMILO_API_KEY": "api_key",
    "HEYMILO_BASE_URL": "base_url",
    "HEYMILO_RATE_LIMIT": "requests_per_minute",
    "HEYMILO_MAX_ATTEMPTS": "max_attempts",
    "HEYMILO_TIMEOUT": "timeout_seconds",
    "HEYMILO_MAX_CONCURRENCY": "max_concurrency",
    "HEYMILO_BACKOFF_INITIAL": "backoff_initial",
    "HEYMILO_BACKOFF_MAX": "backoff_max",
}


def default_data_dir() -> Path:
    return Path(os.environ.get("HEYMILO_DATA_DIR", "data"))


class ClientSettings(BaseModel):
    """How to reach the API and how hard to push it. ``repr`` and logs never show the key."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr
    base_url: str = DEFAULT_BASE_URL
    requests_per_minute: int = Field(300, ge=1, description="The key's rate limit (requests per window).")
    rate_window_seconds: float = Field(60.0, gt=0, description="Length of the rate-limit window.")
    page_size: int = Field(100, ge=1, le=100, description="Candidates per request (the API allows 100).")
    max_attempts: int = Field(8, ge=1, description="Attempts per request before giving up.")
    backoff_initial: float = Field(0.5, ge=0, description="First backoff step in seconds (doubles, jittered).")
    backoff_max: float = Field(30.0, ge=0, description="Longest single backoff in seconds.")
    timeout_seconds: float = Field(30.0, gt=0, description="Deadline for one whole request.")
    max_concurrency: int = Field(4, ge=1, description="Postings fetched at once by one client.")
    state_dir: Path = Field(
        default_factory=lambda: default_data_dir() / ".ratelimit",
        description="Where the shared rate budget lives (one file per key).",
    )

    @field_validator("api_key")
    @classmethod
    def _key_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value

    @field_validator("base_url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ClientSettings:
        """Settings from ``HEYMILO_*`` variables, then ``overrides``; a clear error if invalid."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {name: env[var] for var, name in ENVIRONMENT.items() if env.get(var)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "api_key" not in values:
            raise ConfigurationError(
                "HEYMILO_API_KEY is not set. Put your HeyMilo API key in the environment (or in .env) "
                "to use the real API, or run against the simulator (make demo)."
            )
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> ClientSettings:
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])} {e['msg']}" for e in exc.errors(include_input=False)
            )
            raise ConfigurationError(f"invalid HeyMilo client settings: {problems}") from None

    def limiter(self) -> SharedRateLimiter:
        return SharedRateLimiter.for_key(
            self.state_dir,
            self.api_key.get_secret_value(),
            self.base_url,
            self.requests_per_minute,
            self.rate_window_seconds,
        )
