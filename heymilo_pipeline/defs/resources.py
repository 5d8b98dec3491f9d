"""Resources: how to reach the HeyMilo API, and where the lake and the DuckDB file live.

Chosen in one place (``build_resources``) from the environment, so the same code location runs
against the simulator (``make demo``) or the real API (``HEYMILO_API_KEY`` in ``.env``).
"""

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.settings import ENVIRONMENT, ClientSettings
from heymilo_pipeline.lake import Lake
from heymilo_pipeline.settings import PipelineSettings
from heymilo_pipeline.warehouse import Warehouse


class HeyMiloAPI(dg.ConfigurableResource):
    """The HeyMilo Public API. The key comes from ``HEYMILO_API_KEY`` and is never stored in run config."""

    api_key: str = Field(description="HeyMilo API key (bind with EnvVar so it is never stored).")
    base_url: str | None = Field(None, description="API base URL; default HEYMILO_BASE_URL or the real API.")
    requests_per_minute: int | None = Field(
        None, description="The key's rate limit; default HEYMILO_RATE_LIMIT or 300."
    )
    max_concurrency: int | None = Field(None, description="Postings fetched at once in one run.")
    state_dir: str = Field(description="Where the rate budget shared by all runs on this machine lives.")

    def client_settings(self) -> ClientSettings:
        env = {var: value for var, value in os.environ.items() if var in ENVIRONMENT}
        env["HEYMILO_API_KEY"] = self.api_key
        try:
            return ClientSettings.from_env(
                env,
                base_url=self.base_url,
                requests_per_minute=self.requests_per_minute,
                max_concurrency=self.max_concurrency,
                state_dir=Path(self.state_dir),
            )
        except ConfigurationError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None

    def client(self) -> HeyMiloClient:
        return HeyMiloClient(self.client_settings())


class Storage(dg.ConfigurableResource):
    """The Parquet lake and the DuckDB warehouse under one data directory."""

    data_dir: str = Field(description="HEYMILO_DATA_DIR: lake/, heymilo.duckdb and the rate-limit state.")
    lock_timeout_seconds: float = Field(
        300.0, description="How long a load waits for a DuckDB file held by another process (a notebook?)."
    )

    def ensure_writable(self) -> None:
        """Fail before fetching anything when the data directory cannot take our files."""
        root = Path(self.data_dir)
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise dg.Failure(
                f"HEYMILO_DATA_DIR {root} is not a writable directory ({exc.strerror or exc}). Point HEYMILO_DATA_DIR "
                "at a directory this user can write; nothing was fetched or written.",
                allow_retries=False,
            ) from None

    @property
    def lake(self) -> Lake:
        return Lake(Path(self.data_dir) / "lake")

    def warehouse(self, on_wait: Callable[[str], None] | None = None) -> Warehouse:
        return Warehouse(
            Path(self.data_dir) / "heymilo.duckdb", lock_timeout_s=self.lock_timeout_seconds, on_wait=on_wait
        )


def build_resources(settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or PipelineSettings.from_env()
    return {
        "heymilo": HeyMiloAPI(api_key=dg.EnvVar("HEYMILO_API_KEY"), state_dir=str(settings.rate_limit_dir)),
        "storage": Storage(data_dir=str(settings.data_dir)),
    }


class _ToDagsterLog(logging.Handler):
    def __init__(self, log: dg.DagsterLogManager) -> None:
        super().__init__(logging.INFO)
        self.dagster_log = log

    def emit(self, record: logging.LogRecord) -> None:
        level = logging.getLevelName(record.levelno).lower()
        getattr(self.dagster_log, level, self.dagster_log.info)(self.format(record))


@contextmanager
def core_logs_to(log: dg.DagsterLogManager) -> Iterator[None]:
    """Show the core's log lines (retries, waits for the DuckDB file) in the run's log, whatever the instance's
    python_logs setting; the core itself stays free of Dagster."""
    handler = _ToDagsterLog(log)
    core = logging.getLogger("heymilo_pipeline")
    core.addHandler(handler)
    previous = core.propagate, core.level
    core.propagate = False
    core.setLevel(logging.INFO)
    try:
        yield
    finally:
        core.removeHandler(handler)
        core.propagate, core.level = previous
