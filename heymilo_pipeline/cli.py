"""``heymilo-pipeline``: backfill, update and status without the UI, recorded in DAGSTER_HOME when set.

The commands run the very jobs of the code location in this process, so their runs, partitions
and check results appear in the Dagster UI afterwards (when DAGSTER_HOME is set).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
import dagster as dg
import duckdb
from dotenv import load_dotenv  # what dagster uses to read .env, so both read it alike

from heymilo_pipeline import terminal
from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.definitions import build_defs
from heymilo_pipeline.defs.checks import WAREHOUSE_CHECKS
from heymilo_pipeline.defs.partitions import POSTINGS, candidate_partitions
from heymilo_pipeline.defs.resources import Storage, build_resources
from heymilo_pipeline.defs.schedules import checks_request, listing_request
from heymilo_pipeline.defs.sensors import requests_after_listing, results_tags
from heymilo_pipeline.defs.tags import (
    HOST_TAG,
    KIND_TAG,
    PID_TAG,
    REFRESH_TAG,
    range_days,
    range_tags,
)
from heymilo_pipeline.progress import BOARD
from heymilo_pipeline.settings import Settings
from heymilo_pipeline.status import latest_check_results, report
from heymilo_pipeline.storage import StorageError


def open_instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
        reap_dead_runs(instance)
    else:
        click.echo("DAGSTER_HOME is not set: runs are kept in memory only and will not show in the UI.", err=True)
        instance = dg.DagsterInstance.ephemeral()
    return instance


@dataclass(frozen=True)
class Location:
    """The code location as the commands run it: the settings, read once, and the definitions built from them."""

    settings: Settings
    defs: dg.Definitions
    verbose: bool = False  # Dagster's event stream in the terminal too (it is always in the run log)

    @classmethod
    def build(cls, settings: Settings, *, secrets_from_env: bool = True, verbose: bool = False) -> Location:
        return cls(settings, build_defs(settings, secrets_from_env=secrets_from_env), verbose)

    @classmethod
    def from_env(cls, verbose: bool = False) -> Location:
        try:
            return cls.build(Settings.from_env(), verbose=verbose)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None

    def needs_api(self) -> None:
        """Fail with one line, before any run, when a command that calls the API has no key (Dagster's config
        would otherwise refuse the run with its own stack)."""
        try:
            self.settings.client_settings()
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None

    def live(self) -> AbstractContextManager[None]:
        """The progress line while runs execute, its time estimate at the key's rate."""
        return terminal.live(self.settings.rate_limit)

    @property
    def storage(self) -> Storage:
        """The code location's storage resource, with its secrets' values (outside a run nothing resolves the
        EnvVar references): its lake and warehouse are the ones the runs write."""
        return build_resources(self.settings, secrets_from_env=False)["storage"]

    def execute(self, job_name: str, instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> bool:
        """Run one job in this process, tagged with the process that runs it; print its failures."""
        return self.run(job_name, instance, tags).success

    def run(
        self, job_name: str, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
    ) -> dg.ExecuteInProcessResult:
        tags = {**(tags or {}), PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        job = self.defs.resolve_job_def(job_name)
        # The events always go to the run log (the UI shows them); the terminal gets them only if asked.
        quiet = None if self.verbose else {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        result = job.execute_in_process(run_config=quiet, instance=instance, tags=tags, raise_on_error=False)
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                terminal.say(f"  {event.step_key} failed: {event.step_failure_data.error.message.strip()}")
        terminal.say(f"  run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
        return result


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark runs of this host whose process is gone as failed: a killed in-process run stays STARTED otherwise,
    and the UI would show it running forever."""
    from dagster import DagsterRunStatus, RunsFilter

    reaped = []
    host = socket.gethostname()
    unfinished = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(RunsFilter(statuses=unfinished, tags={HOST_TAG: host})):
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid <= 0 or pid == os.getpid() or _alive(pid):
            continue
        instance.report_run_failed(
            run, f"the process that ran it (pid {pid}) is gone; marked failed by heymilo-pipeline"
        )
        reaped.append(run.run_id)
    if reaped:
        click.echo(f"Marked {len(reaped)} run(s) whose process had died as failed: {reaped}")
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, not ours to judge
        return True
    return True


def ensure_postings(location: Location, instance: dg.DagsterInstance, refresh: bool) -> list[str]:
    registered = instance.get_dynamic_partitions(POSTINGS)
    if refresh or not registered:
        terminal.say("Listing postings ...")
        if not location.execute("postings_job", instance):
            raise click.ClickException("could not list postings; see the error above")
        registered = instance.get_dynamic_partitions(POSTINGS)
    return list(registered)


@click.group()
@click.option(
    "--verbose", "-v", is_flag=True, help="Print Dagster's event stream too (it is always in the run log, in the UI)."
)
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Fetch HeyMilo candidates into the lake and DuckDB, outside the Dagster UI."""
    # Like `dagster dev`, read .env from the working directory; variables already set win.
    load_dotenv(Path.cwd() / ".env", override=False)
    ctx.obj = Location.from_env(verbose)


@main.command()
@click.option("--start", "start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First UTC day.")
@click.option("--end", "end", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last UTC day (inclusive).")
@click.option("--posting", "posting_ids", multiple=True, help="Only this posting (repeatable). Default: all.")
@click.option(
    "--results/--no-results",
    default=True,
    show_default=True,
    help="Then fetch the interview results of the days' finished candidates (one request each).",
)
@click.pass_obj
def backfill(location: Location, start: datetime, end: datetime, posting_ids: tuple[str, ...], results: bool) -> None:
    """Fetch and load every day from START to END for every posting (or each --posting), in one run; then the
    interview results of their finished candidates (newest day first)."""
    settings = location.settings
    first, last = start.date(), end.date()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    if last < first:
        raise click.BadParameter(f"--end {last} is before --start {first}")
    if first < settings.start_date or last > yesterday:
        raise click.BadParameter(
            f"days must lie within the partitions: {settings.start_date} (HEYMILO_START_DATE) .. {yesterday} "
            "(yesterday)"
        )
    location.needs_api()
    instance = open_instance()
    registered = ensure_postings(location, instance, refresh=False)
    unknown = sorted(set(posting_ids) - set(registered))
    if unknown:
        raise click.ClickException(
            f"unknown posting(s) {unknown}; registered: {registered}. Run `heymilo-pipeline postings` to refresh."
        )
    failed = run_backfill(location, instance, first, last, list(posting_ids) or registered, results=results)
    if failed:
        raise click.ClickException(f"the backfill failed for posting(s) {failed}; rerunning them is safe")


def run_backfill(
    location: Location,
    instance: dg.DagsterInstance,
    first: date,
    last: date,
    posting_ids: list[str],
    *,
    results: bool = True,
) -> list[str]:
    """first..last for ``posting_ids`` in as few runs as rectangles allow (one, for all registered postings);
    each posting is published or fails on its own inside a run, as in a UI backfill; then, with ``results``, a
    results run over the same partitions. Returns the failed postings ("<id> (results)" for failed results)."""
    failed: list[str] = []
    BOARD.stage(f"backfill {first}..{last}", len(posting_ids))
    with location.live():
        for block in _contiguous(instance.get_dynamic_partitions(POSTINGS), posting_ids):
            terminal.say(f"Backfilling {first}..{last}, {_postings(block)}")
            tags = {**range_tags(first, last, block[0], block[-1]), KIND_TAG: "backfill"}
            failed += _failed_postings(location.run("candidates_job", instance, tags), block)
            if not results:
                continue
            # Then their interview results, as results_after_candidates follows every candidates run.
            terminal.say(f"Interview results of {first}..{last}, {_postings(block)}")
            if not location.execute("results_job", instance, results_tags(tags)):
                failed += [f"{p} (results)" for p in block]
    return failed


def _contiguous(registered: Sequence[str], wanted: Sequence[str]) -> list[list[str]]:
    """``wanted`` as runs of postings adjacent in the registration order: a run's partitions are a rectangle."""
    chosen = set(wanted)
    blocks: list[list[str]] = []
    previous = None
    for index, posting_id in enumerate(registered):
        if posting_id not in chosen:
            continue
        if blocks and previous == index - 1:
            blocks[-1].append(posting_id)
        else:
            blocks.append([posting_id])
        previous = index
    return blocks


def _postings(block: list[str]) -> str:
    return f"posting {block[0]}" if len(block) == 1 else f"{len(block)} postings ({block[0]} .. {block[-1]})"


def _failed_postings(result: dg.ExecuteInProcessResult, block: list[str]) -> list[str]:
    """The postings a run failed for: the step names them; a run that failed otherwise failed them all."""
    if result.success:
        return []
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        failure = data.user_failure_data if data else None
        named = failure.metadata.get("failed_postings") if failure else None
        if named is not None:
            return sorted(named.value)
    return list(block)


@main.command()
@click.option(
    "--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Day of the update (default: today)."
)
@click.option(
    "--results/--no-results",
    default=True,
    show_default=True,
    help="Fetch the interview results of the updated days after their candidates, as the automation does.",
)
@click.pass_obj
def update(location: Location, as_of: datetime | None, results: bool) -> None:
    """Exactly what the automation runs on AS_OF: list postings, fetch the recent days and that day's share of the
    older history (HEYMILO_FULL_REFRESH_DAYS) for every posting and then their interview results, then the
    warehouse checks."""
    day = as_of.date() if as_of else datetime.now(UTC).date()
    location.needs_api()
    instance = open_instance()
    outcome = run_update(location, instance, day, results=results)
    _report_checks(location, instance)
    if outcome.skipped:
        click.echo(f"Nothing to do: {outcome.skipped}")
    if outcome.failed_runs:
        raise click.ClickException(
            f"the update failed for some postings (runs {outcome.failed_runs}); every other posting was published. "
            "Rerunning the update is safe."
        )
    if not outcome.checked:
        raise click.ClickException("the warehouse checks could not run; see the error above")


@dataclass
class UpdateOutcome:
    listed: bool = False
    requests: list[dg.RunRequest] = field(default_factory=list)  # the candidate runs, as the sensor requested them
    failed_runs: list[str] = field(default_factory=list)
    checked: bool = False
    skipped: str | None = None


def run_update(location: Location, instance: dg.DagsterInstance, day: date, *, results: bool = True) -> UpdateOutcome:
    """The automation of one day, in this process, through the functions the automation itself calls: the listing
    ``daily_update`` requests, the candidate runs ``update_after_postings`` then requests (each followed by its
    results run, as ``results_after_candidates`` requests it, unless ``results`` is off), and the audit
    ``daily_checks`` requests at the deadline."""
    outcome = UpdateOutcome()
    terminal.say(f"Update of {day}: listing postings ...")
    listing = listing_request(day)
    outcome.listed = location.execute("postings_job", instance, dict(listing.tags))
    if not outcome.listed:
        raise click.ClickException("could not list postings; see the error above (nothing was fetched)")
    requests = requests_after_listing(instance, listing.tags, location.settings, location.storage.store())
    if isinstance(requests, dg.SkipReason):
        outcome.skipped = requests.skip_message
    else:
        outcome.requests = requests
        terminal.say(f"Update of {day}: {requests[0].tags[REFRESH_TAG]}")  # the plan, as every request carries it
    registered = instance.get_dynamic_partitions(POSTINGS)
    partitions = candidate_partitions(location.settings.start_date)
    with location.live():
        for request in outcome.requests:
            first, last = range_days(request.tags, partitions)
            terminal.say(f"Updating days {first}..{last}, {len(registered)} posting(s)")
            BOARD.stage(f"update {day}, days {first}..{last}", len(registered))
            if not location.execute("candidates_job", instance, dict(request.tags)):
                outcome.failed_runs.append(request.run_key or "?")
            # The results of those days once their candidates are in, whatever became of that run (the sensor
            # results_after_candidates does the same in the automation).
            if not results:
                continue
            terminal.say(f"Interview results of days {first}..{last}")
            if not location.execute("results_job", instance, results_tags(request.tags)):
                outcome.failed_runs.append(f"results of {request.run_key or '?'}")
    terminal.say("Checking the warehouse ...")
    outcome.checked = location.execute("warehouse_checks_job", instance, dict(checks_request(day).tags))
    return outcome


def _report_checks(location: Location, instance: dg.DagsterInstance) -> None:
    for name, status, _ in latest_check_results(instance, location.defs):
        if name.split(":")[-1] in WAREHOUSE_CHECKS:
            click.echo(f"  {name:<52} {status}")


@main.command()
@click.pass_obj
def check(location: Location) -> None:
    """Run the warehouse checks now (freshness, completeness against the API, uniqueness, references, lake)."""
    location.needs_api()  # completeness asks the API for its counts
    instance = open_instance()
    ok = location.execute("warehouse_checks_job", instance)
    _report_checks(location, instance)
    if not ok:
        raise click.ClickException("the warehouse checks could not run; see the error above")


@main.command()
@click.pass_obj
def rebuild(location: Location) -> None:
    """Rebuild the DuckDB tables from the lake alone (no API requests): after losing data/heymilo.duckdb or
    changing a column. The postings table is kept (the next listing refreshes it)."""
    if not location.execute("rebuild_job", open_instance()):
        raise click.ClickException("the rebuild failed; see the error above (the previous tables are untouched)")


@main.command()
@click.option(
    "--to",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The DuckDB file to write. Default: heymilo.duckdb under HEYMILO_DATA_DIR.",
)
@click.pass_obj
def publish(location: Location, target: Path | None) -> None:
    """Copy the tables into a DuckDB file for notebooks, in one transaction on the file: readers keep the previous
    copy until it commits, and loaders take turns. The shared tables (HEYMILO_SHARED_CATALOG_URL) are copied from
    one snapshot; without them the runs load HEYMILO_DATA_DIR's file themselves, and --to copies it elsewhere."""
    settings = location.settings
    path = target or settings.duckdb_path
    started = time.monotonic()
    try:
        counts = settings.store().publish(path, lock_timeout_s=settings.lock_timeout)
    except (StorageError, duckdb.Error) as exc:
        raise click.ClickException(str(exc)) from None
    rows = ", ".join(f"{table} {n:,}" for table, n in counts.items())
    click.echo(f"published {rows} into {path} in {time.monotonic() - started:.1f}s")


@main.command()
@click.pass_obj
def postings(location: Location) -> None:
    """List postings from the API, refresh the postings table and register new postings."""
    location.needs_api()
    registered = ensure_postings(location, open_instance(), refresh=True)
    click.echo(f"{len(registered)} posting(s) registered: {', '.join(registered)}")


@main.command()
@click.pass_obj
def status(location: Location) -> None:
    """Row counts, loaded partitions and the latest check results."""
    click.echo(report(location.settings, location.defs, open_instance()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
