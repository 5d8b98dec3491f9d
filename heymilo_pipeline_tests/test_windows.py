"""Day ranges against the API's inclusive bounds and fractional timestamps."""

from __future__ import annotations

from datetime import date

import pytest

from heymilo_pipeline.api.windows import DayRange, day_of, iso_z, midnight


def test_bounds_cover_the_whole_last_day() -> None:
    days = DayRange(date(2026, 3, 13), date(2026, 3, 14))
    assert days.query_params() == {"created_after": "2026-03-13T00:00:00Z", "created_before": "2026-03-15T00:00:00Z"}
    assert len(days) == 2
    assert days.days == [date(2026, 3, 13), date(2026, 3, 14)]


def test_fractional_seconds_and_exact_midnights() -> None:
    days = DayRange.single(date(2026, 3, 13))
    assert midnight(date(2026, 3, 13)) in days
    assert midnight(date(2026, 3, 14)) - 0.5 in days  # 23:59:59.5 is not lost
    assert midnight(date(2026, 3, 14)) - 1e-6 in days
    assert midnight(date(2026, 3, 14)) not in days  # next midnight belongs to the next day
    assert day_of(midnight(date(2026, 3, 14))) == date(2026, 3, 14)
    assert day_of(midnight(date(2026, 3, 14)) - 0.5) == date(2026, 3, 13)


def test_iso_formatting() -> None:
    assert iso_z(1710288000.0) == "2024-03-13T00:00:00Z"
    assert iso_z(1710288000.25) == "2024-03-13T00:00:00.250000Z"


def test_reversed_range_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        DayRange(date(2026, 3, 2), date(2026, 3, 1))
