"""Shared helpers of the benchmarks: child processes with peak-RSS accounting, the simulator as a
separate process, the cached JSON pages of the local benchmark, machine facts.

Every benchmark script writes one JSON document (``--out``); ``run.py`` starts each script as a
child process, samples the RSS of its whole process tree (and kills it above ``RSS_LIMIT``, the
machine is shared), and adds the peak to the document.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import resource
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

try:  # in the bench extra; without it only the child itself is sampled (from /proc)
    import psutil
except ImportError:  # pragma: no cover
    psutil = None  # type: ignore[assignment]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
WORK_DIR = BENCH_DIR / ".work"
PYTHON = sys.executable
SIM = str(Path(sys.executable).with_name("heymilo-sim"))
KEY = "sk_bench_local-simulator"  # not a secret: the simulator only answers on 127.0.0.1
RSS_LIMIT = 6 * 1024**3  # never let one benchmark take more than this on the shared machine
GiB, MiB = 1024**3, 1024**2

# One year of history ending on a fixed day, so every run renders the same candidates.
YEAR_FIRST, YEAR_LAST = date(2025, 1, 1), date(2025, 12, 31)


ARROW_POOL_FROM_USER = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")  # read before heymilo_pipeline sets it


def _proc_status_bytes(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status (bytes), None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def vm_hwm() -> int:
    """This process's peak resident set (bytes), from /proc (ru_maxrss as a fallback)."""
    peak = _proc_status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def vm_rss() -> int:
    """This process's current resident set (bytes), from /proc (0 where there is none)."""
    return _proc_status_bytes("VmRSS") or 0


def write_result(path: str | None, result: dict[str, Any]) -> None:
    result.setdefault("self_peak_rss", vm_hwm())
    text = json.dumps(result, indent=2, default=str)
    if path:
        Path(path).write_text(text)
    else:
        print(text)


def range_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of a backfill script: the server, the days, the postings; and where the result goes."""
    parser.add_argument("--url", required=True)
    parser.add_argument("--first", type=date.fromisoformat, required=True)
    parser.add_argument("--last", type=date.fromisoformat, required=True)
    parser.add_argument("--posting", action="append", default=[])
    parser.add_argument("--out")
    return parser


def dagster_home(work: Path, config: str) -> Path:
    """A fresh Dagster instance under ``work`` with ``config`` as its dagster.yaml."""
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(config)
    return home


def pipeline_environ(url: str, work: Path, start_date: date, rate_limit: int, home: Path) -> dict[str, str]:
    """The settings a Dagster bench run of the pipeline reads: the simulator at ``url``, a data directory and a
    Dagster instance (``home``) under ``work``, and the key's limit."""
    return {
        "HEYMILO_API_KEY": KEY,
        "HEYMILO_BASE_URL": url,
        "HEYMILO_DATA_DIR": str(work / "data"),
        "HEYMILO_START_DATE": start_date.isoformat(),
        "HEYMILO_RATE_LIMIT": str(rate_limit),
        "DAGSTER_HOME": str(home),
    }


CLI = str(Path(sys.executable).with_name("heymilo-pipeline"))


def production_profile(postgres: str | None, shared_data: str | None = None) -> tuple[str, dict[str, str]]:
    """deploy/'s Dagster side pointed at the database ``postgres``: the dagster.yaml lines of its storage, and the
    variables compose gives every process (the key's budget there, Dagster's batch size; with ``shared_data`` the
    shared tables, catalog in the same database). Nothing for the local profile (``postgres`` None). Its run
    launcher is not used: the runs execute in the benchmark's own processes."""
    if not postgres:
        return "", {}
    deployed = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yaml").read_text())
    env = {
        "DAGSTER_POSTGRES_URL": postgres,
        "HEYMILO_RATE_BUDGET_URL": postgres,
        "DAGSTER_EVENT_BATCH_SIZE": compose["x-environment"]["DAGSTER_EVENT_BATCH_SIZE"],
    }
    if shared_data:  # S3 credentials, where the path is in S3: AWS's variables, from the caller
        env |= {"HEYMILO_SHARED_CATALOG_URL": postgres, "HEYMILO_SHARED_DATA_PATH": shared_data}
    return yaml.safe_dump({"storage": deployed["storage"]}), env


def user_environment(
    args: argparse.Namespace, root: Path, rate_limit: int, postings: list[str], **extra: str
) -> dict[str, str]:
    """What a user's ``heymilo-pipeline`` commands see: this environment without any HEYMILO_ or DAGSTER_
    variable, then ``args``' server and first day, a fresh data dir and Dagster home (make demo's, or
    ``extra["DAGSTER_YAML"]``) under ``root``, and the rest of ``extra``. Registers the postings
    (``heymilo-pipeline postings``) before it returns."""
    from heymilo_pipeline.demo import DAGSTER_YAML

    config = extra.pop("DAGSTER_YAML", DAGSTER_YAML)  # another profile's dagster.yaml (cli_run.py --postgres)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEYMILO_", "DAGSTER_"))}
    env.update(
        HEYMILO_API_KEY=KEY, HEYMILO_BASE_URL=args.url, HEYMILO_DATA_DIR=str(root / "data"),
        HEYMILO_START_DATE=args.first.isoformat(), HEYMILO_RATE_LIMIT=str(rate_limit),
        HEYMILO_POSTINGS=",".join(postings), DAGSTER_HOME=str(dagster_home(root, config)), **extra,
    )  # fmt: skip
    listed = subprocess.run([CLI, "postings"], env=env, cwd=root, capture_output=True, text=True)
    if listed.returncode != 0:
        raise SystemExit(f"heymilo-pipeline postings failed in {root}:\n{listed.stdout}\n{listed.stderr[-3000:]}")
    return env


# --- child processes ------------------------------------------------------------------------


@dataclass
class ChildResult:
    returncode: int
    seconds: float
    peak_rss: int  # largest sampled RSS of the child's process tree (bytes)
    killed_for_memory: bool
    stdout: str
    stderr: str


def run_child(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 900.0) -> ChildResult:
    """Run a command, sampling the RSS of its process tree every 50 ms; kill it above RSS_LIMIT."""
    started = time.perf_counter()
    full_env = {**os.environ, **(env or {})}
    # Importing heymilo_pipeline here chose Arrow's allocator for this process; children start from the
    # user's environment and choose for themselves (dlt's runs keep Arrow's default, as its users would).
    if ARROW_POOL_FROM_USER is None and "ARROW_DEFAULT_MEMORY_POOL" not in (env or {}):
        full_env.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    proc = subprocess.Popen(args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    peak = 0
    killed = False
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    try:
        while proc.poll() is None:
            rss = _tree_rss(proc.pid)
            peak = max(peak, rss)
            if rss > RSS_LIMIT or time.perf_counter() - started > timeout:
                killed = rss > RSS_LIMIT
                _kill_tree(proc)
                break
            time.sleep(0.05)
    finally:
        proc.wait()
        for reader in readers:
            reader.join(5)
    return ChildResult(proc.returncode, time.perf_counter() - started, peak, killed, "".join(out), "".join(err))


def _tree_rss(pid: int) -> int:
    """RSS of a process and its descendants (bytes); 0 once it is gone."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            total = 0
            for p in [root, *root.children(recursive=True)]:
                with suppress(psutil.Error):
                    total += p.memory_info().rss
            return total
        except psutil.Error:
            return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _kill_tree(proc: subprocess.Popen) -> None:
    if psutil is not None:
        try:
            for p in psutil.Process(proc.pid).children(recursive=True):
                with suppress(psutil.Error):
                    p.kill()
        except psutil.Error:
            pass
    proc.kill()


def bench_script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``bench/<name>.py args --out <tmp>`` as a child; its JSON result plus the measured peak RSS."""
    WORK_DIR.mkdir(exist_ok=True)
    out = WORK_DIR / f"result-{name}-{os.getpid()}-{time.monotonic_ns()}.json"
    child = run_child([PYTHON, str(BENCH_DIR / f"{name}.py"), *args, "--out", str(out)], env=env, timeout=timeout)
    if child.returncode != 0 or not out.exists():
        why = "killed above the memory limit" if child.killed_for_memory else f"exit code {child.returncode}"
        return {
            "error": f"{name} {' '.join(args)}: {why}",
            "stderr_tail": child.stderr[-3000:],
            "peak_rss": child.peak_rss,
            "seconds": child.seconds,
            "killed_for_memory": child.killed_for_memory,
        }
    result = json.loads(out.read_text())
    out.unlink()
    # The sampled tree peak and the child's own high-water mark: the larger is the honest figure.
    result["peak_rss"] = max(child.peak_rss, result.get("self_peak_rss", 0))
    result["child_seconds"] = child.seconds
    return result


# --- the simulator in its own process -------------------------------------------------------


@dataclass(frozen=True)
class SimSpec:
    postings: int
    candidates: tuple[int, int]
    first: date = YEAR_FIRST
    last: date = YEAR_LAST
    seed: int = 7
    rate_limit: int | None = None
    rate_window_s: float = 60.0
    latency_ms: float = 0.0

    def args(self) -> list[str]:
        args = [
            "--seed", str(self.seed), "--postings", str(self.postings),
            "--start", self.first.isoformat(), "--end", self.last.isoformat(),
            "--min-candidates", str(self.candidates[0]), "--max-candidates", str(self.candidates[1]),
            "--latency-ms", str(self.latency_ms), "--rate-window", str(self.rate_window_s),
        ]  # fmt: skip
        if self.rate_limit is not None:
            args += ["--rate-limit", str(self.rate_limit)]
        return args

    def tenant(self):
        from heymilo_pipeline.simulator import Tenant, TenantSpec

        return Tenant(
            TenantSpec(
                seed=self.seed,
                postings=self.postings,
                start=self.first,
                end=self.last,
                candidates_per_posting=self.candidates,
            )
        )


@contextmanager
def simulator(spec: SimSpec) -> Iterator[str]:
    """``heymilo-sim serve`` on a free loopback port, in its own process (its own core); yields the URL."""
    proc = subprocess.Popen(
        [SIM, "serve", "--host", "127.0.0.1", "--port", "0", "--api-key", KEY, *spec.args()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if not match:
            raise RuntimeError(f"simulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        url = match.group(1)
        from heymilo_pipeline.simulator.server import wait_healthy

        wait_healthy(url, lambda: proc.poll() is None, 30.0)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spanned(
    function: Callable[..., Awaitable[Any]],
    spans: list[tuple[float, float]],
    on_result: Callable[[Any], None] | None = None,
) -> Callable[..., Awaitable[Any]]:
    """``function`` (async), recording each call's (start, end) in ``spans`` and handing its result to
    ``on_result``: how the benchmarks time the API calls inside a run (a method too, set on its class)."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await function(*args, **kwargs)
        finally:
            spans.append((started, time.perf_counter()))
        if on_result is not None:
            on_result(result)
        return result

    return wrapper


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """The time at least one of the spans covers: concurrent calls count once."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def sim_stats(url: str, reset: bool = False) -> dict[str, Any]:
    if reset:
        return httpx.post(f"{url}/_sim/stats/reset", headers={"X-API-KEY": KEY}, trust_env=False).json()
    return httpx.get(f"{url}/_sim/stats", headers={"X-API-KEY": KEY}, trust_env=False).json()


def candidate_requests(stats: dict[str, Any]) -> int:
    return sum(n for route, n in stats["requests_by_route"].items() if route.endswith("/candidates"))


def wanted_postings(tenant) -> list[str]:
    """The postings the pipeline fetches by default: all but test postings (drafts included)."""
    return [p["id"] for p in tenant.postings() if not p["test_posting"]]


def counts_in(tenant, posting_ids: list[str], first: date, last: date) -> dict[str, int]:
    from heymilo_pipeline.api.windows import midnight

    after, before = midnight(first), midnight(last + timedelta(days=1))
    # total_count of the range query the pipeline sends: what it has to page through.
    return {p: tenant.candidates_page(p, after, before, None, 1)[2] for p in posting_ids}


def minimum_requests(counts: dict[str, int]) -> int:
    """One query per posting: the pipeline's own figure (``api.stats.minimum_requests``)."""
    from heymilo_pipeline.api.stats import minimum_requests

    return minimum_requests(counts.values())


# --- cached JSON pages (local benchmark) ----------------------------------------------------

_LEN = struct.Struct("<I")


def page_cache(base_postings: int, per_posting: int, seed: int = 7) -> Path:
    """Pages of ``base_postings`` x ``per_posting`` candidates over a year, as the API sends them
    (rendered once by the simulator, 100 per page, then cached in bench/.cache)."""
    directory = CACHE_DIR / f"pages-s{seed}-p{base_postings}-n{per_posting}"
    if (directory / "index.json").exists():
        return directory
    from heymilo_pipeline.api.windows import DayRange
    from heymilo_pipeline.simulator.encoding import dumpb
    from heymilo_pipeline.simulator.responses import paginated

    directory.mkdir(parents=True, exist_ok=True)
    # Postings come as draft/archived/expired/active; ask for enough that base_postings have candidates.
    spec = SimSpec(postings=base_postings + 4, candidates=(per_posting, per_posting), seed=seed)
    tenant = spec.tenant()
    days = DayRange(YEAR_FIRST, YEAR_LAST)
    after, before = days.start, days.end
    index = []
    for posting in tenant.postings():
        if posting["test_posting"] or posting["status"] == "draft" or len(index) >= base_postings:
            continue
        posting_id = posting["id"]
        cursor = None
        pages = []
        cursors = [None]
        while True:
            items, more, total = tenant.candidates_page(posting_id, after, before, cursor, 100)
            url = f"/api/v2/postings/{posting_id}/candidates"
            pages.append(dumpb(paginated(items, more, total, url)))
            if not more:
                break
            cursor = items[-1]["interview_id"]
            cursors.append(cursor)
        with gzip.open(directory / f"{posting_id}.bin.gz", "wb", compresslevel=1) as out:
            for body in pages:
                out.write(_LEN.pack(len(body)) + body)
        index.append({"posting_id": posting_id, "pages": len(pages), "total": total, "cursors": cursors})
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def read_pages(directory: Path, posting_id: str) -> list[bytes]:
    data = gzip.decompress((directory / f"{posting_id}.bin.gz").read_bytes())
    pages, offset = [], 0
    while offset < len(data):
        (size,) = _LEN.unpack_from(data, offset)
        offset += _LEN.size
        pages.append(data[offset : offset + size])
        offset += size
    return pages


def replica_id(base_id: str, replica: int) -> str:
    """A posting id of the same length as ``base_id`` for copy ``replica`` (0 = the base itself)."""
    if replica == 0:
        return base_id
    return f"R{replica:02d}{base_id[3:]}"


_INTERVIEW_ID = re.compile(rb'"interview_id":"([0-9A-F]{2})([0-9A-F]{14})"')


def replica_cursor(cursor: str | None, base_id: str, new_id: str) -> str | None:
    """The interview_id ``cursor`` as ``replicate`` renamed it."""
    if cursor is None or new_id == base_id:
        return cursor
    return "R" + new_id[2] + cursor[2:]


def replicate(pages: list[bytes], base_id: str, new_id: str) -> list[bytes]:
    """The pages of another posting: its id, and interview_ids of its own (interview_id is the key of the
    candidates table, so a copy with the same ids would replace the original's rows)."""
    if new_id == base_id:
        return pages
    old = b'"posting_id":"' + base_id.encode() + b'"'
    new = b'"posting_id":"' + new_id.encode() + b'"'
    url_old, url_new = f"/postings/{base_id}/".encode(), f"/postings/{new_id}/".encode()
    prefix = b"R" + new_id[2].encode()  # R and the replica's digit: never a hex pair, so never an original id
    ids = rb'"interview_id":"' + prefix + rb"\2" + b'"'
    return [_INTERVIEW_ID.sub(ids, p.replace(old, new).replace(url_old, url_new)) for p in pages]


# --- machine facts --------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("dagster", "duckdb", "pyarrow", "pydantic", "pydantic-core", "httpx", "pandas", "uvicorn", "dlt"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }
