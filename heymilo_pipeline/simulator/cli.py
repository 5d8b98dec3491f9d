"""``heymilo-sim``: serve the simulated API, or write its ground truth."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from .app import create_app
from .faults import Faults
from .server import base_url, bind_socket, make_server
from .tenant import Tenant, TenantSpec
from .timeparse import parse_timestamp

_DEFAULTS = TenantSpec()


def _timestamp(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise click.BadParameter("use ISO-8601 (2026-03-31T12:00:00Z) or epoch seconds") from None


def _shape_options(command: Callable[..., Any]) -> Callable[..., Any]:
    date = click.DateTime(formats=["%Y-%m-%d"])
    options = [
        click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True),
        click.option("--postings", type=click.IntRange(min=1), default=_DEFAULTS.postings, show_default=True),
        click.option("--start", type=date, default=_DEFAULTS.start.isoformat(), show_default=True),
        click.option("--end", type=date, default=_DEFAULTS.end.isoformat(), show_default=True, help="Inclusive."),
        click.option("--min-candidates", type=click.IntRange(min=0), default=_DEFAULTS.candidates_per_posting[0]),
        click.option("--max-candidates", type=click.IntRange(min=0), default=_DEFAULTS.candidates_per_posting[1]),
        click.option("--bulk-share", type=click.FloatRange(0, 1), default=_DEFAULTS.bulk_ingest_share),
        click.option("--empty-day-share", type=click.FloatRange(0, 1), default=_DEFAULTS.empty_day_share),
        click.option("--null-objects-share", type=click.FloatRange(0, 1), default=0.0),
        click.option("--extra-fields", is_flag=True, help="Add fields unknown to the spec."),
        click.option("--score-as-string", is_flag=True, help="Send score as a JSON string."),
        click.option(
            "--deleted-share", type=click.FloatRange(0, 1), default=0.0, help="Candidates erased 1..60 days later."
        ),
        click.option(
            "--now", callback=_timestamp, help="Simulated time (ISO-8601 or epoch); default: midnight after --end."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _tenant(
    seed: int,
    postings: int,
    start: datetime,
    end: datetime,
    min_candidates: int,
    max_candidates: int,
    bulk_share: float,
    empty_day_share: float,
    null_objects_share: float,
    extra_fields: bool,
    score_as_string: bool,
    deleted_share: float,
    now: float | None,
) -> Tenant:
    try:
        spec = TenantSpec(
            seed=seed,
            postings=postings,
            start=start.date(),
            end=end.date(),
            candidates_per_posting=(min_candidates, max_candidates),
            bulk_ingest_share=bulk_share,
            empty_day_share=empty_day_share,
            null_objects_share=null_objects_share,
            extra_fields=extra_fields,
            score_as_string=score_as_string,
            deleted_share=deleted_share,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    tenant = Tenant(spec)
    if now is not None:
        tenant.set_now(now)
    return tenant


_SHAPE_NAMES = (
    "seed",
    "postings",
    "start",
    "end",
    "min_candidates",
    "max_candidates",
    "bulk_share",
    "empty_day_share",
    "null_objects_share",
    "extra_fields",
    "score_as_string",
    "deleted_share",
    "now",
)


def _shape_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: kwargs.pop(name) for name in _SHAPE_NAMES}


@click.group()
def main() -> None:
    """Simulator of the HeyMilo Public API (deterministic fake workspace, optional faults)."""


@main.command()
@_shape_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 = any free port.")
@click.option("--api-key", envvar="HEYMILO_API_KEY", required=True, help="Key clients must send (or $HEYMILO_API_KEY).")
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0)
@click.option("--rate-limit", type=click.IntRange(min=1), default=None, help="Requests per window; unset = none.")
@click.option("--rate-window", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True)
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--truncate-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--malformed-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--stall-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--stall-seconds", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option("--fault-seed", type=int, default=0, show_default=True)
@click.option("--stuck-cursor", is_flag=True)
@click.option("--total-count-offset", type=int, default=0)
@click.option("--zero-retry-after-rate", type=click.FloatRange(0, 1), default=0.0, help="429s saying Retry-After: 0.")
def serve(host: str, port: int, api_key: str, **kwargs: Any) -> None:
    """Serve the simulated API over HTTP until interrupted."""
    tenant = _tenant(**_shape_kwargs(kwargs))
    faults = Faults(
        latency_ms=kwargs["latency_ms"],
        rate_limit=kwargs["rate_limit"],
        rate_window_s=kwargs["rate_window"],
        error_rate=kwargs["error_rate"],
        drop_rate=kwargs["drop_rate"],
        truncate_rate=kwargs["truncate_rate"],
        malformed_rate=kwargs["malformed_rate"],
        stall_rate=kwargs["stall_rate"],
        stall_s=kwargs["stall_seconds"],
        stuck_cursor=kwargs["stuck_cursor"],
        total_count_offset=kwargs["total_count_offset"],
        zero_retry_after_rate=kwargs["zero_retry_after_rate"],
        seed=kwargs["fault_seed"],
    )
    app = create_app(tenant, api_key, faults)
    sock = bind_socket(host, port)
    url = base_url(host, sock.getsockname()[1])
    click.echo(
        f"HeyMilo simulator on {url} ({len(tenant.posting_ids())} postings, "
        f"{tenant.candidate_count()} candidates, seed {tenant.spec.seed})"
    )
    make_server(app).run(sockets=[sock])


@main.command()
@_shape_options
@click.option("--out", type=click.Path(dir_okay=False, writable=True), required=True, help="*.jsonl.gz")
def truth(out: str, **kwargs: Any) -> None:
    """Write every candidate as the API returns it at --now, as gzip JSON lines."""
    tenant = _tenant(**_shape_kwargs(kwargs))
    count = tenant.write_truth(out)
    click.echo(f"wrote {count} candidates to {out} (as of {tenant.now})")
