"""Resources: the API, the storage, what the pipeline does, and ``duckdb`` for assets of your own.

The first three take their fields from one group of ``heymilo_pipeline.settings`` each (``settings_resource``): the same
name, default and description, the description led by the field's ``HEYMILO_*`` variable. ``build_resources``
fills them from the settings the code location read once, so the Dagster UI (Deployment > Resources) shows the
effective configuration; secrets stay ``EnvVar`` references, never values. ``settings()`` turns a resource back
into its validated group, so a value changed in a launchpad is checked like one from the environment.
"""

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import BaseModel, Field, SecretStr, ValidationError, create_model

from heymilo_pipeline.api.client import HeyMiloClient
from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.api.settings import ClientSettings, ConnectionSettings
from heymilo_pipeline.settings import PipelineSettings, Settings, StorageSettings, problems, variable
from heymilo_pipeline.storage import StorageError, Store
from heymilo_pipeline.storage.reads import quote


def _config_type(annotation: Any) -> Any:
    """How Dagster config holds a setting: numbers and flags as they are, lists for tuples, text for the rest
    (paths, dates, choices, secrets); the settings model validates the text."""
    if get_origin(annotation) in (Union, UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _config_type(kept[0]) | None if len(kept) < len(get_args(annotation)) else str
    if annotation in (int, float, bool, str):
        return annotation
    return list[str] if get_origin(annotation) is tuple else str


def _as_config(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path | date):
        return str(value)
    return value


class SettingsResource(dg.ConfigurableResource):
    """A resource whose fields are one settings group's."""

    group: ClassVar[type[BaseModel]]

    def settings(self) -> Any:
        """The group, validated; a bad value fails the run with one line naming its variable."""
        try:
            return self.group(**{name: getattr(self, name) for name in self.group.model_fields})
        except ValidationError as exc:
            raise dg.Failure(f"invalid settings: {problems(exc, self.group)}", allow_retries=False) from None


def settings_resource(group: type[BaseModel]) -> type[SettingsResource]:
    """A resource base class with a field per setting of ``group``, as the group declares it."""
    fields: dict[str, Any] = {
        name: (
            _config_type(field.annotation),
            Field(_as_config(field.default), description=f"{variable(name)}: {field.description}"),
        )
        for name, field in group.model_fields.items()
    }
    base = create_model(f"{group.__name__}Fields", __base__=SettingsResource, __module__=__name__, **fields)
    base.group = group
    return base


class Storage(settings_resource(StorageSettings)):
    """The Parquet lake and the DuckDB warehouse under one data directory; or, with a shared catalog, the tables
    in a DuckLake that every host shares (catalog in PostgreSQL, files on S3)."""

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
            return self.settings().store(on_wait=on_wait)
        except StorageError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None


class HeyMiloAPI(settings_resource(ConnectionSettings)):
    """The HeyMilo Public API: where it is, the key (an EnvVar), and how hard to push it. The machine's rate
    budget lives under the storage's data directory (or in PostgreSQL, with HEYMILO_RATE_BUDGET_URL)."""

    storage: Storage

    def client_settings(self) -> ClientSettings:
        try:
            return ClientSettings.of(self.settings(), self.storage.settings().rate_limit_dir)
        except ConfigurationError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None

    def client(self) -> HeyMiloClient:
        return HeyMiloClient(self.client_settings())


class Pipeline(settings_resource(PipelineSettings)):
    """What the pipeline does: from when, which postings, the daily update's plan, what the checks allow.

    ``start_date`` is shown here as read; the partitions are built from the same value when the code
    location loads, so change it in the environment (and reload), not in a launchpad.
    """


class HeyMiloDuckDB(DuckDBResource):
    """dagster-duckdb's ``DuckDBResource`` on the pipeline's own tables, for assets of your own.

    ``get_connection()`` opens the tables where the ``storage`` resource keeps them: the DuckDB file (waiting, like
    the pipeline, up to HEYMILO_LOCK_TIMEOUT while another process writes it), or an in-memory DuckDB with the
    shared tables attached. Pass ``read_only=True`` to only read: readers never hold up each other. Either way
    the connection is yours only inside the ``with``, so keep it short: a load waits for it, too.
    """

    database: str = Field(
        description="What get_connection opens: the DuckDB file under HEYMILO_DATA_DIR, or ':memory:' with the "
        "shared tables attached (HEYMILO_SHARED_*). Follows the storage resource."
    )
    storage: Storage

    @contextmanager
    def get_connection(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        store = self.storage.store(on_wait=dg.get_dagster_logger().warning)
        if not store.exists():
            raise dg.Failure(
                f"there are no tables yet in {store.description}: materialize postings and raw_candidates first",
                allow_retries=False,
            )
        try:
            with store.connect(read_only=read_only) as conn:
                for name, value in self.connection_config.items():  # DuckDB settings, as the parent applies them
                    conn.execute(f"SET {quote(name)} = {_literal(value)}")
                yield conn
        except StorageError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None


def _literal(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + str(value).replace("'", "''") + "'"


def build_resources(settings: Settings, *, secrets_from_env: bool = True) -> dict[str, Any]:
    """The resources of ``settings``. Secrets are EnvVar references in the code location (the key always, so the
    UI names the variable even before it is set); a test that built its settings in code passes
    ``secrets_from_env=False`` to hand the values over."""

    def values(group: type[BaseModel]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in group.model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr) or name == "api_key":
                use_env = secrets_from_env or value is None
                value = dg.EnvVar(variable(name)) if use_env else value.get_secret_value()
            found[name] = _as_config(value)
        return found

    storage = Storage(**values(StorageSettings))
    database = ":memory:" if settings.shared_catalog_url is not None else str(settings.duckdb_path)
    return {
        "heymilo": HeyMiloAPI(**values(ConnectionSettings), storage=storage),
        "storage": storage,
        "pipeline": Pipeline(**values(PipelineSettings)),
        "duckdb": HeyMiloDuckDB(database=database, storage=storage),
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
