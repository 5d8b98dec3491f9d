"""What many tests share: the test days, settings built in code, and a harness that runs the code location.

Tests configure the pipeline the way the code location does, through one ``Settings`` object (never the
environment): ``settings_for`` builds it, ``Harness`` turns it into definitions and runs them.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from heymilo_pipeline.cli import Location
from heymilo_pipeline.defs.checks import warehouse_checks
from heymilo_pipeline.defs.jobs import CANDIDATES_SELECTION
from heymilo_pipeline.defs.partitions import POSTINGS, daily_partitions
from heymilo_pipeline.defs.tags import AS_OF_TAG, range_tags
from heymilo_pipeline.settings import DEFAULT_START_DATE, Settings
from heymilo_pipeline.storage import Store

# The tests' clock: one chosen day, never the wall clock, so the suite means the same on any date. In the past
# (Dagster's daily partitions end at the real yesterday), and START..LAST crosses a month and a year boundary.
# HEYMILO_TEST_TODAY=YYYY-MM-DD runs the suite as of another day, no later than the real today (under faketime).
TODAY = date.fromisoformat(os.environ.get("HEYMILO_TEST_TODAY") or "2026-01-15")
LAST = TODAY - timedelta(days=1)
# 30 days of history, so the runs stay small.
START = TODAY - timedelta(days=30)


def product_yesterday(seconds_from_now: float = 0) -> date:
    """The product's newest daily partition (``seconds_from_now`` later): the real clock's yesterday, for tests
    that run the product in a process of its own (``dagster dev``, ``make dev``), whose clock they cannot choose."""
    at = datetime.fromtimestamp(time.time() + seconds_from_now, UTC)
    return date.fromisoformat(daily_partitions(DEFAULT_START_DATE).get_partition_keys(current_time=at)[-1])


if product_yesterday() < LAST:
    raise RuntimeError(f"HEYMILO_TEST_TODAY={TODAY} is after the real today: run the tests under faketime instead")


def settings_for(url: str, key: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a run against the simulator at ``url``: no client-side pacing unless asked."""
    values: dict[str, Any] = {
        "api_key": key,
        "base_url": url,
        "data_dir": data_dir,
        "start_date": START,
        "rate_limit": 1_000_000,
        "lock_timeout": 20,
    }
    return Settings(**{**values, **overrides})


def with_changes(settings: Settings, **changes: Any) -> Settings:
    return Settings.model_validate({**dict(settings), **changes})


@dataclass
class Harness:
    """The code location of ``settings`` run in process against ``instance``; keyword changes give a variant
    (another server, other bounds) for one call."""

    settings: Settings
    instance: dg.DagsterInstance
    # True: secrets are EnvVar references resolved when a run starts, as in the code location.
    secrets_from_env: bool = field(default=False, kw_only=True)

    def defs(self, **changes: Any) -> dg.Definitions:
        return self.location(**changes).defs

    def location(self, **changes: Any) -> Location:
        return Location.build(with_changes(self.settings, **changes), secrets_from_env=self.secrets_from_env)

    def materialize(
        self, selection: Any, tags: dict[str, str] | None = None, raise_on_error: bool = True, **changes: Any
    ) -> dg.ExecuteInProcessResult:
        defs = self.defs(**changes)
        return dg.materialize(
            [*defs.assets, *defs.asset_checks],
            instance=self.instance,
            resources=defs.resources,
            selection=selection,
            tags=tags,
            raise_on_error=raise_on_error,
        )

    def list_postings(self, tags: dict[str, str] | None = None, **changes: Any) -> dg.ExecuteInProcessResult:
        return self.materialize(["postings"], tags, **changes)

    def candidates(
        self, first: date, last: date, first_posting: str, last_posting: str, **changes: Any
    ) -> dg.ExecuteInProcessResult:
        """Candidates for the rectangle of days x postings, as one run of candidates_job."""
        tags = range_tags(first, last, first_posting, last_posting)
        return self.materialize(CANDIDATES_SELECTION, tags, raise_on_error=False, **changes)

    def check(self, as_of: date, **changes: Any) -> dict[str, dg.AssetCheckEvaluation]:
        """The warehouse checks as the daily audit of ``as_of`` runs them; evaluations by check name."""
        selection = dg.AssetSelection.checks(warehouse_checks)
        result = self.materialize(selection, {AS_OF_TAG: as_of.isoformat()}, **changes)
        return {e.check_name: e for e in result.get_asset_check_evaluations()}

    def resource(self, name: str, **changes: Any) -> Any:
        return self.defs(**changes).resources[name]

    @property
    def registered(self) -> list[str]:
        return list(self.instance.get_dynamic_partitions(POSTINGS))

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def store(self) -> Store:
        """The tables as the runs open them (the storage resource's store, with its lock timeout)."""
        return self.resource("storage").store()


def cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    """``heymilo-pipeline ARGS`` in a process of its own with exactly ``env`` (a terminal user's command)."""
    command = [sys.executable, "-m", "heymilo_pipeline.cli", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def clean_environ() -> dict[str, str]:
    """This process's environment without any HEYMILO_ or DAGSTER_ variable: a command's settings are the test's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))}


def slots_from_processes(take: Callable[..., None], state: str, processes: int = 3, count: int = 20) -> list[float]:
    """Every slot that ``processes`` spawned processes took, ``count`` each, from the rate budget at ``state``:
    ``take(state, count, queue)`` puts its list of slot starts on the queue. Sorted; checks each exited cleanly."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=take, args=(state, count, queue)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    slots = sorted(slot for _ in workers for slot in queue.get(timeout=60))
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return slots


def smallest_gap(slots: list[float]) -> float:
    return min(b - a for a, b in itertools.pairwise(slots))
