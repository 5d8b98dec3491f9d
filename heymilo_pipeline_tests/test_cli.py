"""The command line's own logic (the runs it makes are tested against the simulator in test_pipeline)."""

from __future__ import annotations

from heymilo_pipeline.cli import _contiguous


def test_a_backfill_of_some_postings_takes_one_run_per_adjacent_block() -> None:
    registered = ["A", "B", "C", "D", "E"]
    assert _contiguous(registered, registered) == [registered]
    assert _contiguous(registered, ["D", "A", "B"]) == [["A", "B"], ["D"]]  # in registration order
    assert _contiguous(registered, ["E"]) == [["E"]] and _contiguous(registered, []) == []
