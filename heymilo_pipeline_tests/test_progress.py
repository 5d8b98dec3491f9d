"""The progress board the candidate step feeds, and the line the CLI draws from it."""

from __future__ import annotations

import io

from rich.console import Console

from heymilo_pipeline import terminal
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.progress import BOARD, Board, Snapshot


def test_the_board_sums_postings_and_estimates_the_requests_left() -> None:
    board = Board()
    board.stage("backfill", 3)
    board.page("P1", QueryStats(requests=2, pages=2, rows=200, total_count=450))
    first = board.snapshot()
    # P1 needs 5 pages (450 / 100) and has 2; P2 and P3 are not sized yet: one request each until one finishes.
    assert (first.postings, first.done, first.rows, first.requests, first.expected_rows) == (3, 0, 200, 2, None)
    assert first.remaining_requests == 3 + 2
    board.finished("P1", QueryStats(requests=6, retries=1, pages=5, rows=450), failed=False)  # summed: no total
    board.page("P2", QueryStats(requests=1, pages=1, rows=100, total_count=100))
    board.finished("P2", QueryStats(requests=1, pages=1, rows=100), failed=True)
    second = board.snapshot()
    assert (second.done, second.failed, second.retries, second.requests, second.rows) == (2, 1, 1, 7, 550)
    assert second.remaining_requests == 3  # P3 unstarted: the mean of P1 (5 pages) and P2 (1 page)
    assert second.seconds_left(requests_per_minute=60) == 3.0
    board.stage("update", 1)  # a new stage keeps the command's totals
    board.page("P1", QueryStats(requests=1, pages=1, rows=40, total_count=40))
    third = board.snapshot()
    assert (third.stage, third.postings, third.done, third.rows, third.requests) == ("update", 1, 0, 590, 8)
    assert third.expected_rows == 550 + 40 and third.remaining_requests == 0


def test_the_line_says_what_matters_and_prints_once_off_a_terminal() -> None:
    board_line = terminal.describe(
        Snapshot(
            stage="backfill 2026-01-01..2026-03-31",
            postings=8,
            done=3,
            failed=1,
            pages=420,
            rows=41_234,
            expected_rows=None,
            requests=431,
            retries=11,
            elapsed_s=125,
            remaining_requests=900,
        ),
        requests_per_minute=300,
    )
    assert board_line == (
        "backfill 2026-01-01..2026-03-31 · postings 3/8 (1 failed) · 420 pages · 41,234 rows · "
        "431 requests (11 retried) · ~3m00s left at 300/min · 2m05s elapsed"
    )
    out = io.StringIO()
    BOARD.stage("backfill", 1)  # what an earlier test's run left on the process's board is not this command's
    with terminal.live(300, Console(file=out, force_terminal=False)):
        terminal.say("not drawn live here")
    assert out.getvalue().count("postings ") == 1  # the summary, once, at the end
