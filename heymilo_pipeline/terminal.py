"""The live line ``heymilo-pipeline`` draws while its runs execute in the process (from ``progress.BOARD``).

Dagster's event stream goes to the run log (the UI) rather than the terminal unless ``--verbose``; this line
says what matters meanwhile: postings done, pages, rows, requests and retries, and the time the remaining
requests take at the key's rate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from heymilo_pipeline.progress import BOARD, Snapshot


def _terminal() -> TextIO:
    """The terminal as it is now: Dagster captures the step's stdout and stderr at the descriptor level while a
    run executes in this process, so the live line writes to its own copy of the descriptor."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    except (AttributeError, OSError, ValueError):  # no descriptor (an embedding that replaced sys.stderr)
        return sys.stderr


# One console for the live line and the lines printed meanwhile, so they never land on the same row.
CONSOLE = Console(file=_terminal())


def say(message: str) -> None:
    """A line above the live display (or just a line, when there is none)."""
    CONSOLE.print(message, highlight=False, markup=False, soft_wrap=True)


def describe(snapshot: Snapshot, requests_per_minute: float) -> str:
    s = snapshot
    if s.results is not None:
        answered, due, per_minute = s.results
        left = max(0, due - answered)
        eta = "done" if not left else f"~{duration(left * 60.0 / per_minute)} left at {per_minute:,.0f}/min"
        parts = [s.stage, f"{answered:,}/{due:,} results", f"{s.requests:,} requests", eta,
                 f"{duration(s.elapsed_s)} elapsed"]  # fmt: skip
        return " · ".join(parts)
    failed = f" ({s.failed} failed)" if s.failed else ""
    expected = f" of ~{s.expected_rows:,}" if s.expected_rows else ""
    retried = f" ({s.retries:,} retried)" if s.retries else ""
    left = s.seconds_left(requests_per_minute)
    if s.postings and s.done >= s.postings:
        eta = "done"
    elif left is not None:
        eta = f"~{duration(left)} left at {requests_per_minute:,.0f}/min"
    else:
        eta = "sizing up"
    parts = [
        s.stage,
        f"postings {s.done}/{s.postings}{failed}",
        f"{s.pages:,} pages",
        f"{s.rows:,}{expected} rows",
        f"{s.requests:,} requests{retried}",
        eta,
        f"{duration(s.elapsed_s)} elapsed",
    ]
    return " · ".join(p for p in parts if p)


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextmanager
def live(requests_per_minute: float, console: Console | None = None) -> Iterator[None]:
    """Redraw the line four times a second on a terminal; elsewhere (a pipe, CI) print it once at the end."""
    console = console or CONSOLE
    if not console.is_terminal:
        try:
            yield
        finally:
            console.print(describe(BOARD.snapshot(), requests_per_minute), highlight=False, soft_wrap=True)
        return
    with Live(
        get_renderable=lambda: Text(describe(BOARD.snapshot(), requests_per_minute)),
        console=console,
        refresh_per_second=4,
    ):
        yield
