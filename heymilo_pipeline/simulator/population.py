"""Compact per-posting candidate columns: when each candidate was created, its interview id and who it is.

Only these three numbers are stored per candidate (about 32 bytes with the cursor index), in
``array`` columns sorted by (created_at, interview_id). Everything else about a candidate is derived
on demand from (seed, interview_id, now) by ``render``, which keeps a 500k tenant small.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

from .fakedata import mix64

DAY_US = 86_400_000_000
# Mon..Sun: recruiting traffic dips hard at weekends.
_WEEKDAY_WEIGHT = (1.15, 1.1, 1.05, 1.0, 0.9, 0.35, 0.3)
BULK_MIN, BULK_MAX = 20, 300


@dataclass(frozen=True, slots=True)
class ShapeParams:
    start_us: int
    days: int
    first_weekday: int
    bulk_share: float
    empty_day_share: float


class Population:
    """Candidates of one posting, as parallel columns ordered by (created_at, interview_id)."""

    __slots__ = ("_order", "_sorted_ids", "created_at", "interview_ids", "people")

    def __init__(self, rows: list[tuple[int, int, int]]) -> None:
        rows.sort()
        # Dividing integer microseconds is correctly rounded, exactly like datetime.timestamp(), so a
        # bound parsed from "…T23:59:59.999Z" compares equal to a candidate created at that instant.
        self.created_at = array("d", [r[0] / 1_000_000 for r in rows])
        self.interview_ids = array("Q", [r[1] for r in rows])
        self.people = array("I", [r[2] for r in rows])
        order = sorted(range(len(rows)), key=self.interview_ids.__getitem__)
        self._order = array("I", order)
        self._sorted_ids = array("Q", [self.interview_ids[i] for i in order])

    def __len__(self) -> int:
        return len(self.created_at)

    def position_of(self, interview_id: int) -> int | None:
        j = bisect_left(self._sorted_ids, interview_id)
        if j < len(self._sorted_ids) and self._sorted_ids[j] == interview_id:
            return self._order[j]
        return None


class PeoplePool:
    """Hands out person numbers; a few candidates are the same person applying to another posting."""

    def __init__(self, rng: random.Random, reuse_share: float = 0.07) -> None:
        self._rng = rng
        self._reuse_share = reuse_share
        self.count = 0

    def for_posting(self, n: int) -> list[int]:
        earlier = self.count  # only people from earlier postings: one interview per person and posting
        reused: set[int] = set()
        out = []
        for _ in range(n):
            if earlier and self._rng.random() < self._reuse_share:
                person = self._rng.randrange(earlier)
                if person not in reused:
                    reused.add(person)
                    out.append(person)
                    continue
            out.append(self.count)
            self.count += 1
        return out


def _day_weights(rng: random.Random, shape: ShapeParams, keep: set[int]) -> list[float]:
    n_empty = round(shape.days * shape.empty_day_share)
    choosable = [d for d in range(shape.days) if d not in keep]
    empty = set(rng.sample(choosable, min(n_empty, len(choosable))))
    trend = rng.uniform(-0.5, 0.8)  # postings ramp up or wind down over the quarter
    weights = []
    for d in range(shape.days):
        if d in empty:
            weights.append(0.0)
            continue
        base = _WEEKDAY_WEIGHT[(shape.first_weekday + d) % 7] * (1 + trend * d / max(1, shape.days - 1))
        weights.append(max(0.05, base) * rng.lognormvariate(0, 0.35))
    return weights


def _boundary_times(rng: random.Random, shape: ShapeParams, nonempty: list[int]) -> list[int]:
    """Instants that break sloppy window arithmetic: exact midnights and the last moments of a day,
    on the first two days, the last day and a few random days of the range."""
    midnight, half, milli = 0, DAY_US - 500_000, DAY_US - 1_000  # 00:00:00, 23:59:59.5, 23:59:59.999
    second = min(1, shape.days - 1)
    last = shape.days - 1
    picks = [rng.choice(nonempty) for _ in range(3)]
    instants = [
        (0, midnight),
        (0, half),
        (second, midnight),
        (second, milli),
        (last, midnight),
        (last, milli),
        (picks[0], midnight),
        (picks[1], half),
        (picks[2], milli),
    ]
    return [shape.start_us + day * DAY_US + offset for day, offset in instants]


def created_times(rng: random.Random, shape: ShapeParams, n: int) -> list[int]:
    """n creation instants in integer microseconds (unsorted)."""
    if n <= 0:
        return []
    keep = {0, min(1, shape.days - 1), shape.days - 1}
    weights = _day_weights(rng, shape, keep)
    nonempty = [d for d, w in enumerate(weights) if w > 0]
    cum = list(accumulate(weights))
    days = range(shape.days)
    start = shape.start_us

    times = _boundary_times(rng, shape, nonempty)[:n]
    bulk_left = round(n * shape.bulk_share)
    first_group = True
    while bulk_left >= BULK_MIN and len(times) + BULK_MIN <= n:
        # The first ingest of a posting is bigger than one page of 100 when the budget allows, so
        # paging through a run of identical created_at values is always exercised.
        low = BULK_MIN if not first_group or bulk_left <= 100 else 101
        size = min(rng.randint(low, min(BULK_MAX, bulk_left)), n - len(times))
        day = rng.choices(days, cum_weights=cum)[0]
        # A nightly ATS sync at exactly midnight is the nastiest bulk ingest for day-window fetchers.
        second = 0 if first_group else rng.randrange(86_400)
        first_group = False
        times.extend([start + day * DAY_US + second * 1_000_000] * size)
        bulk_left -= size

    rest = n - len(times)
    rand = rng.randrange
    hour_pick = rng.random
    # Most invitations go out during North-American office hours (13:00-23:00 UTC).
    for day in rng.choices(days, cum_weights=cum, k=rest):
        offset = 46_800_000_000 + rand(36_000_000_000) if hour_pick() < 0.6 else rand(DAY_US)
        times.append(start + day * DAY_US + offset)
    return times


def build_population(
    rng: random.Random, shape: ShapeParams, n: int, id_base: int, id_counter: int, people: list[int]
) -> Population:
    """``id_base + id_counter + k`` through mix64 gives tenant-unique interview ids for free."""
    times = created_times(rng, shape, n)
    rows = [(t, mix64(id_base + id_counter + k), people[k]) for k, t in enumerate(times)]
    return Population(rows)
