"""Resources: the API, the storage, and what the pipeline does, each field one setting of ``Settings``.

``build_resources`` makes them from the settings the code location read once, so the Dagster UI (Deployment
> resources) shows the effective configuration; secrets stay ``EnvVar`` references, never values.
"""

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, ValidationError

from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.settings import ClientSettings, ConnectionSettings
from heymilo_pipeline.settings import VARIABLE, PipelineSettings, Settings, problems
from heymilo_pipeline.storage import StorageError, Store, open_store


def _as_config(value: Any) -> Any:
    """A setting's value as Dagster config holds it: lists for tuples, text for paths and dates."""
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)


def setting(name: str) -> Any:
    """A resource field with the setting's default and description, prefixed by its environment variable."""
    field = Settings.model_fields[name]
    var = VARIABLE.get(name)
    return Field(_as_config(field.default), description=f"{var}: {field.description}" if var else field.description)


class HeyMiloAPI(dg.ConfigurableResource):
    """The HeyMilo Public API: where it is, the key (an EnvVar), and how hard to push it."""

    api_key: str = Field(description="HEYMILO_API_KEY, bound with EnvVar: the value is never stored or shown.")
    base_url: str = setting("base_url")
    requests_per_minute: int = setting("requests_per_minute")
    rate_window_seconds: float = setting("rate_window_seconds")
    page_size: int = setting("page_size")
    max_attempts: int = setting("max_attempts")
    backoff_initial: float = setting("backoff_initial")
    backoff_max: float = setting("backoff_max")
    timeout_seconds: float = setting("timeout_seconds")
    max_concurrency: int = setting("max_concurrency")
    state_dir: str = Field(
        "data/.ratelimit", description="Where the rate budget shared by every run of this key lives."
    )
    rate_budget_url: str | None = Field(
        None, description="HEYMILO_RATE_BUDGET_URL, bound with EnvVar when set: the budget in PostgreSQL, all hosts."
    )

    def client_settings(self) -> ClientSettings:
        connection = {name: getattr(self, name) for name in ConnectionSettings.model_fields}
        try:
            return ClientSettings.build(
                **connection, api_key=self.api_key, state_dir=Path(self.state_dir), rate_budget_url=self.rate_budget_url
            )
        except ConfigurationError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None

    def client(self) -> HeyMiloClient:
        return HeyMiloClient(self.client_settings())


class Storage(dg.ConfigurableResource):
    """The Parquet lake and the DuckDB warehouse under one data directory; or, with a shared catalog, the tables
    in a DuckLake that every host shares (catalog in PostgreSQL, files on S3)."""

    data_dir: str = setting("data_dir")
    lock_timeout_seconds: float = setting("lock_timeout_seconds")
    shared_catalog_url: str | None = Field(
        None, description="HEYMILO_SHARED_CATALOG_URL, bound with EnvVar when set: the shared tables' catalog."
    )
    shared_data_path: str | None = setting("shared_data_path")

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

    def store(self, on_wait: Callable[[str], None] | None = None) -> Store:
        """Where the tables are: the data directory's lake and DuckDB file or, when configured, the shared tables.
        ``on_wait`` hears when another process holds the DuckDB file."""
        try:
            return open_store(
                Path(self.data_dir),
                lock_timeout_s=self.lock_timeout_seconds,
                shared_catalog_url=self.shared_catalog_url,
                shared_data_path=self.shared_data_path,
                on_wait=on_wait,
            )
        except StorageError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None


class Pipeline(dg.ConfigurableResource):
    """What the pipeline does: from when, which postings, the daily update's plan, what the checks allow.

    ``start_date`` is shown here as read; the partitions are built from the same value when the code
    location loads, so change it in the environment (and reload), not in a launchpad.
    """

    start_date: str = setting("start_date")
    lookback_days: int = setting("lookback_days")
    full_refresh_days: int = setting("full_refresh_days")
    active_days: int = setting("active_days")
    include_postings: list[str] = setting("include_postings")
    exclude_postings: list[str] = setting("exclude_postings")
    include_test_postings: bool = setting("include_test_postings")
    pii: str = setting("pii")
    pii_key: str | None = Field(None, description="HEYMILO_PII_KEY, bound with EnvVar when set: keys the hash.")
    vanished_postings: str = setting("vanished_postings")
    freshness_deadline_hour: int = setting("freshness_deadline_hour")
    score_max: float = setting("score_max")
    resume_score_max: float = setting("resume_score_max")
    web_interview_score_max: float = setting("web_interview_score_max")

    def settings(self) -> PipelineSettings:
        try:
            return PipelineSettings(**{name: getattr(self, name) for name in PipelineSettings.model_fields})
        except ValidationError as exc:
            raise dg.Failure(f"invalid settings: {problems(exc)}", allow_retries=False) from None


def build_resources(settings: Settings, *, secrets_from_env: bool = True) -> dict[str, Any]:
    """The resources of ``settings``. Secrets are EnvVar references in the code location; a test that built its
    settings in code passes ``secrets_from_env=False`` to hand the values over."""

    def secret(var: str, value: Any) -> Any:
        if value is None:
            return None
        return dg.EnvVar(var) if secrets_from_env else value.get_secret_value()

    def values(model: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        return {name: _as_config(getattr(settings, name)) for name in model.model_fields if name not in exclude}

    return {
        "heymilo": HeyMiloAPI(
            **values(ConnectionSettings),
            api_key=secret("HEYMILO_API_KEY", settings.api_key) or dg.EnvVar("HEYMILO_API_KEY"),
            state_dir=str(settings.rate_limit_dir),
            rate_budget_url=secret("HEYMILO_RATE_BUDGET_URL", settings.rate_budget_url),
        ),
        "storage": Storage(
            data_dir=str(settings.data_dir),
            lock_timeout_seconds=settings.lock_timeout_seconds,
            shared_catalog_url=secret("HEYMILO_SHARED_CATALOG_URL", settings.shared_catalog_url),
            shared_data_path=settings.shared_data_path,
        ),
        "pipeline": Pipeline(
            **values(PipelineSettings, exclude=("pii_key",)), pii_key=secret("HEYMILO_PII_KEY", settings.pii_key)
        ),
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
