"""UTC day ranges and how they map onto the API's inclusive ``created_after``/``created_before``.

The API's bounds are both inclusive and ``created_at`` carries fractions of a second. A range of
days [first, last] is therefore asked for as ``created_after = first 00:00:00Z`` and
``created_before = (last + 1) 00:00:00Z``: nothing created at 23:59:59.5 falls between two
queries, and the one candidate that can sit exactly on the upper bound belongs to the next day,
so the client drops it here (it is fetched with that day). One range query serves any number of
days: a year of one posting costs ceil(candidates / 100) requests, not 365.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

SECONDS_PER_DAY = 86_400
_EPOCH = date(1970, 1, 1)


def midnight(day: date) -> float:
    """Epoch seconds of 00:00:00 UTC on ``day``."""
    return float((day - _EPOCH).days * SECONDS_PER_DAY)


def day_of(epoch_seconds: float) -> date:
    """The UTC day an epoch timestamp falls on (00:00:00.000 exactly belongs to that day)."""
    return _EPOCH + timedelta(days=int(epoch_seconds // SECONDS_PER_DAY))


def iso_z(epoch_seconds: float) -> str:
    """ISO-8601 in UTC with a ``Z``; whole seconds when the value is whole (day bounds always are)."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    text = moment.isoformat(timespec="seconds" if moment.microsecond == 0 else "microseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, order=True)
class DayRange:
    """Consecutive UTC days ``first``..``last``, both included."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"day range ends before it starts: {self.first}..{self.last}")

    @classmethod
    def single(cls, day: date) -> DayRange:
        return cls(day, day)

    @property
    def start(self) -> float:
        """Inclusive lower bound, epoch seconds."""
        return midnight(self.first)

    @property
    def end(self) -> float:
        """Exclusive upper bound: midnight after ``last``."""
        return midnight(self.last + timedelta(days=1))

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range(len(self))]

    def __len__(self) -> int:
        return (self.last - self.first).days + 1

    def __contains__(self, epoch_seconds: object) -> bool:
        return isinstance(epoch_seconds, int | float) and self.start <= epoch_seconds < self.end

    def query_params(self) -> dict[str, str]:
        return {"created_after": iso_z(self.start), "created_before": iso_z(self.end)}

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"
