"""Crash safety: ``kill -9`` a backfill while it writes Parquet and while it loads DuckDB, then run it again.

The backfill is the real CLI (``heymilo-pipeline backfill``) in a child process (its own process group, killed
by id), against the simulator served from this process, with DAGSTER_HOME in a temp dir. The package has no test
hooks, so the test watches for evidence of the phase and kills then:

- Parquet: a hidden ``.part.parquet.tmp-*`` file appears in the lake (steps files are written before candidates
  files; one kill for each);
- DuckDB: the run logged that the lake is written and the DuckDB load begins, and one of its processes holds
  ``heymilo.duckdb`` open (read off /proc: the load's connection, whatever DuckDB writes first); one kill at that
  moment, one 0.25 s later (the load may have committed by then). Each starts from the same older
  DuckDB file.

A phase the probe misses (the run finished first) is tried again, up to three times. The crash site first holds
a complete, older load (the simulated clock was earlier), so a load killed halfway would show. After every kill:
an analyst's glob read of the lake works and Lake.paths lists no temp file, and DuckDB holds either the older
load or the new one, nothing in between. The last run completes; its tables and lake must equal a clean run's
in another data dir (content hashes), and leftover temp files are removed by ``Lake.clean_temp_files``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from heymilo_pipeline.lake import Lake
from heymilo_pipeline.simulator import Tenant, TenantSpec, create_app, serve_in_thread
from heymilo_pipeline.warehouse import Warehouse
from heymilo_pipeline_tests.support import LAST

# Servers, subprocesses or Dagster runs: the integration tier (`make test`), not `make test-fast`.
pytestmark = pytest.mark.integration

KEY = "sk_test_CRASH-0a9b8c7d"
FIRST = LAST - timedelta(days=2)
# One posting of 40k candidates over 3 days: ~13k per day, so each Parquet file takes a while to write.
SPEC = TenantSpec(seed=5, postings=4, start=FIRST, end=LAST, candidates_per_posting=(40_000, 40_000))
CLI = Path(sys.executable).with_name("heymilo-pipeline")
TABLES = ("candidates", "candidate_workflow_steps")
RUN_TIMEOUT_S = 240.0
POLL_S = 0.002


@dataclass
class Site:
    """One data dir and DAGSTER_HOME; every CLI invocation gets its own log file."""

    root: Path
    posting_id: str
    dagster_yaml: str | None = None  # None: Dagster's defaults (no pool limits)
    invocations: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def lake(self) -> Path:
        return self.data / "lake"

    @property
    def db(self) -> Path:
        return self.data / "heymilo.duckdb"

    @property
    def wal(self) -> Path:
        return self.data / "heymilo.duckdb.wal"

    def start(self, url: str) -> tuple[subprocess.Popen, Path]:
        home = self.root / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        if self.dagster_yaml is not None:
            (home / "dagster.yaml").write_text(self.dagster_yaml)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))},
            "HEYMILO_API_KEY": KEY,
            "HEYMILO_BASE_URL": url,
            "HEYMILO_DATA_DIR": str(self.data),
            "HEYMILO_START_DATE": FIRST.isoformat(),
            "HEYMILO_POSTINGS": self.posting_id,
            "HEYMILO_RATE_LIMIT": "1000000",
            "DAGSTER_HOME": str(home),
        }
        self.invocations += 1
        log = self.root / f"run-{self.invocations}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                # --verbose: the probe reads the run's log lines (Dagster's event stream) from the terminal
                [
                    str(CLI),
                    "--verbose",
                    "backfill",
                    "--start",
                    FIRST.isoformat(),
                    "--end",
                    LAST.isoformat(),
                    "--no-results",
                ],
                env=env,
                cwd=self.root,  # no .env from the project root
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed by id
            )
        return proc, log

    def run(self, url: str) -> None:
        proc, log = self.start(url)
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill(proc)
            raise AssertionError(f"the backfill did not finish in {RUN_TIMEOUT_S:g}s:\n{tail(log)}") from None
        assert rc == 0, tail(log)

    def temp_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.lake)) for p in self.lake.rglob(".*.tmp-*")) if self.lake.exists() else []


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we started (start_new_session), by its id
    proc.wait()


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_id_of(log: Path) -> str | None:
    found = re.findall(r"candidates_job - ([0-9a-f-]{36}) - ", log.read_text(errors="replace"))
    return found[-1] if found else None


def last_event(log: Path) -> str:
    events = [line for line in log.read_text(errors="replace").splitlines() if " - dagster - " in line]
    return events[-1].split(" - ", 4)[-1][:160] if events else "(no Dagster event yet)"


class LogTail:
    """The child's log, read incrementally (it grows to ~100 kB per run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.text = ""

    def read(self) -> str:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        self.offset += len(chunk)
        self.text += chunk.decode(errors="replace")
        return self.text


LOAD_STARTED = "lake written; loading into DuckDB"


def walk(root: Path) -> Iterator[Path]:
    for directory, _, files in os.walk(root):
        for name in files:
            yield Path(directory) / name


Probe = Callable[[], dict[str, Any] | None]
ProbeFactory = Callable[[LogTail, int], Probe]  # (the run's log, its process group) -> probe


def parquet_temp(site: Site, under: str = "") -> Probe:
    """A hidden temp file of a Parquet write exists (under lake/<under>)."""

    def probe() -> dict[str, Any] | None:
        temps = [p for p in walk(site.lake / under) if p.name.startswith(".part.parquet.tmp-")]
        return {"temp_files_at_kill": [str(p.relative_to(site.lake)) for p in temps]} if temps else None

    return probe


def loading(site: Site, group: int, log: LogTail, delay_s: float = 0.0) -> Probe:
    """The load step has begun: its log line, and a process of the run holds the DuckDB file open.

    The file is open only while the warehouse works (it is closed between calls), and the line comes after the
    lake's writes, so both together are the load itself. /proc, not DuckDB's WAL: which statement first writes
    a WAL differs between DuckDB releases.
    """
    state: dict[str, float] = {}

    def probe() -> dict[str, Any] | None:
        if "since" not in state:
            if LOAD_STARTED not in log.read() or not holds_open(group, site.db):
                return None
            state["since"] = time.monotonic()
        if time.monotonic() - state["since"] < delay_s:
            return None
        return {"db_open_at_kill": holds_open(group, site.db), "wal_at_kill": site.wal.exists()}

    return probe


def holds_open(group: int, path: Path) -> bool:
    """Whether a process of the process group ``group`` has ``path`` open."""
    target = str(path.resolve())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            if any(os.readlink(fd.path) == target for fd in os.scandir(f"/proc/{entry.name}/fd")):
                return True
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return False


@dataclass
class Kill:
    phase: str
    seconds: float
    evidence: dict[str, Any]
    last_event: str
    missed: int  # earlier attempts whose run finished before the probe saw the phase (then tried again)
    checksums_before: dict[str, str]
    loaded_by_killed_run: int  # partition_loads rows written by the killed run (0: killed before the commit)
    temp_files_after: list[str]
    lake_read: dict[str, int]  # rows an analyst's glob read of the lake sees right after the kill
    visible_paths_ok: bool  # Lake.paths lists only complete part files
    checksums_after: dict[str, str]


def kill_during(
    site: Site, url: str, phase: str, make_probe: ProbeFactory, restore_db: Path | None = None, attempts: int = 3
) -> Kill:
    """Start the backfill, SIGKILL it when the probe sees the phase; try again if the run was too quick.

    ``restore_db``: put this DuckDB file back first, so every attempt starts from the same older load.
    """
    for missed in range(attempts):
        if restore_db is not None:
            site.wal.unlink(missing_ok=True)  # a killed run's WAL holds only its committed schema statements
            shutil.copy2(restore_db, site.db)
        before = checksums(site.db) if site.db.exists() else {}
        proc, log = site.start(url)
        probe = make_probe(LogTail(log), proc.pid)
        started = time.monotonic()
        evidence = None
        try:
            while evidence is None and proc.poll() is None:
                if time.monotonic() - started > RUN_TIMEOUT_S:
                    raise AssertionError(f"{phase}: no evidence of the phase in {RUN_TIMEOUT_S:g}s:\n{tail(log)}")
                evidence = probe()
                if evidence is None:
                    time.sleep(POLL_S)
        finally:
            kill(proc)
        if evidence is None:
            assert proc.returncode == 0, f"{phase}: the run failed before the kill:\n{tail(log)}"
            continue  # it finished before the probe saw the phase: try again
        lake = Lake(site.lake)
        with Warehouse(site.db).connect(read_only=True) as conn:
            loaded = conn.execute("SELECT count(*) FROM partition_loads WHERE run_id = ?", [run_id_of(log)]).fetchone()[
                0
            ]
        return Kill(
            phase=phase,
            seconds=time.monotonic() - started,
            evidence=evidence,
            last_event=last_event(log),
            missed=missed,
            checksums_before=before,
            loaded_by_killed_run=loaded,
            temp_files_after=site.temp_files(),
            lake_read=analyst_read(site.lake),
            visible_paths_ok=all(p.name == "part.parquet" for t in TABLES for p in lake.paths(t)),
            checksums_after=checksums(site.db),
        )
    raise AssertionError(f"{phase}: every one of {attempts} runs finished before the probe saw the phase")


def analyst_read(lake: Path) -> dict[str, int]:
    """What a notebook does: one glob over the lake's Parquet files (hive partitioning auto-detected)."""
    conn = duckdb.connect()
    try:
        return {
            t: conn.execute(f"SELECT count(*) FROM read_parquet('{lake}/{t}/**/*.parquet')").fetchone()[0]
            for t in TABLES
        }
    finally:
        conn.close()


def checksums(db: Path) -> dict[str, str]:
    warehouse = Warehouse(db)
    return {t: warehouse.checksum(t) for t in TABLES}


def lake_content(lake: Path) -> dict[str, pa.Table]:
    """Each lake table's rows in a canonical order (the files' content, whatever their bytes)."""
    store = Lake(lake)
    out = {}
    for table in TABLES:
        rows = store.read(table)
        keys = ["interview_id", "step_id"] if table == "candidate_workflow_steps" else ["interview_id"]
        out[table] = rows.sort_by([(k, "ascending") for k in keys])
    return out


@dataclass
class CrashStory:
    posting_id: str
    clean: dict[str, str]
    older: dict[str, str]
    older_lake: dict[str, int]  # rows per table an analyst's glob read sees after the older load
    clean_lake: dict[str, int]  # ... and after the clean run's load
    kills: list[Kill] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)
    lake_equal: bool = False
    raw_equal: bool = False
    leftovers: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    after_cleaning: list[str] = field(default_factory=list)
    paths_after_cleaning_unchanged: bool = False
    seconds: float = 0.0


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> CrashStory:
    started = time.monotonic()
    tenant = Tenant(SPEC)
    posting_id = next(p["id"] for p in tenant.postings() if p["status"] != "draft" and not p["test_posting"])
    clean = Site(tmp_path_factory.mktemp("clean"), posting_id)
    crash = Site(tmp_path_factory.mktemp("crash"), posting_id)
    with serve_in_thread(create_app(tenant, KEY)) as url:
        # The crash site holds a complete load of an earlier moment: fewer candidates, earlier statuses.
        tenant.set_now(SPEC.end_epoch - 20 * 3600)
        crash.run(url)
        older, older_lake = checksums(crash.db), analyst_read(crash.lake)
        assert not crash.wal.exists()  # checkpointed on a clean exit: the file alone is the older load
        older_db = shutil.copy2(crash.db, crash.root / "older.duckdb")
        tenant.set_now(SPEC.end_epoch)
        clean.run(url)
        story = CrashStory(posting_id, checksums(clean.db), older, older_lake, analyst_read(clean.lake))
        assert story.clean != older, "moving the clock should have changed the tables"
        assert all(older_lake[t] < story.clean_lake[t] for t in TABLES), (older_lake, story.clean_lake)
        story.kills.append(kill_during(crash, url, "writing Parquet (steps files)", lambda *_: parquet_temp(crash)))
        story.kills.append(
            kill_during(crash, url, "writing Parquet (candidates files)", lambda *_: parquet_temp(crash, "candidates"))
        )
        story.kills.append(
            kill_during(
                crash, url, "loading DuckDB (load begun)", lambda log, group: loading(crash, group, log), older_db
            )
        )
        story.kills.append(
            kill_during(
                crash, url, "loading DuckDB (+0.25 s)", lambda log, group: loading(crash, group, log, 0.25), older_db
            )
        )
        crash.run(url)
    story.final = checksums(crash.db)
    clean_lake, crash_lake = lake_content(clean.lake), lake_content(crash.lake)
    story.lake_equal = all(clean_lake[t].equals(crash_lake[t]) for t in TABLES)
    lake_a, lake_b = Lake(clean.lake), Lake(crash.lake)
    days = [FIRST + timedelta(days=i) for i in range(3)]
    story.raw_equal = all(
        sorted(map(repr, lake_a.read_raw(posting_id, d))) == sorted(map(repr, lake_b.read_raw(posting_id, d)))
        for d in days
    )
    story.leftovers = crash.temp_files()
    paths_before = {t: Lake(crash.lake).paths(t) for t in (*TABLES, "raw/candidates")}
    story.cleaned = sorted(str(p.relative_to(crash.lake)) for p in Lake(crash.lake).clean_temp_files(older_than_s=0))
    story.after_cleaning = crash.temp_files()
    story.paths_after_cleaning_unchanged = paths_before == {t: Lake(crash.lake).paths(t) for t in paths_before}
    story.seconds = time.monotonic() - started
    report(story)
    return story


def report(story: CrashStory) -> None:
    """Evidence for the reader of the test output (pytest -s) and the report."""
    print(f"\ncrash story for posting {story.posting_id} ({story.seconds:.0f} s)")
    for k in story.kills:
        print(
            f"- killed {k.phase} after {k.seconds:.1f}s: {k.evidence}; last event: {k.last_event!r}; "
            f"rows of partition_loads by the killed run: {k.loaded_by_killed_run}; temp files left: "
            f"{len(k.temp_files_after)}; analyst read {k.lake_read}; missed attempts: {k.missed}"
        )
    print(f"- leftovers after the final run: {story.leftovers}; cleaned: {len(story.cleaned)}")


PARQUET, DUCKDB = slice(0, 2), slice(2, 4)


def test_kills_hit_the_parquet_writes(story: CrashStory) -> None:
    # (The probes kill only once a temp file exists, under lake/ for the first and lake/candidates for the second.)
    for k in story.kills[PARQUET]:
        assert k.loaded_by_killed_run == 0, k  # the run never reached DuckDB
        assert k.checksums_after == k.checksums_before, k  # DuckDB untouched


def test_kills_hit_the_duckdb_load_and_publish_nothing_half(story: CrashStory) -> None:
    for k in story.kills[DUCKDB]:
        assert k.checksums_before == story.older, k  # every attempt started from the older load
        # One transaction: either the older load or this run's whole load, never a part of it.
        if k.loaded_by_killed_run:
            assert k.checksums_after == story.clean, k
        else:
            assert k.checksums_after == story.older, k
    assert story.kills[2].loaded_by_killed_run == 0, "the first DuckDB kill should land before the commit"


def test_readers_never_see_a_half_written_file(story: CrashStory) -> None:
    for k in story.kills:
        assert k.visible_paths_ok, k
        # Every file of the glob was readable and whole: each table holds exactly one load's rows, the
        # older one or the new one (a table's month file is replaced at once, never written in place).
        for t in TABLES:
            assert k.lake_read[t] in (story.older_lake[t], story.clean_lake[t]), (t, k.lake_read, story)


def test_the_rerun_equals_a_clean_run(story: CrashStory) -> None:
    assert story.final == story.clean
    assert story.lake_equal, "the lake's Parquet rows differ from the clean run's"
    assert story.raw_equal, "the lake's raw JSON lines differ from the clean run's"


def test_leftover_temp_files_are_hidden_and_cleaned(story: CrashStory) -> None:
    assert story.cleaned == story.leftovers
    assert story.after_cleaning == []
    assert story.paths_after_cleaning_unchanged
