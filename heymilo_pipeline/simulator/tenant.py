"""A deterministic fake HeyMilo workspace: postings, their candidates, and a simulated clock."""

from __future__ import annotations

import copy
import math
import random
import re
import threading
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .encoding import dumpb
from .fakedata import mix64
from .population import PeoplePool, Population, ShapeParams, build_population
from .postings import PostingDef, make_company, make_postings
from .render import DataShape, PostingContext, render_candidate
from .results import render_interview_data

_INTERVIEW_ID = re.compile(r"[0-9A-Fa-f]{16}")


class UnknownPosting(LookupError):
    def __init__(self, posting_id: str) -> None:
        super().__init__(posting_id)
        self.posting_id = posting_id


class UnknownInterview(LookupError):
    def __init__(self, interview_id: str) -> None:
        super().__init__(interview_id)
        self.interview_id = interview_id


class UnknownCursor(LookupError):
    def __init__(self, cursor: str) -> None:
        super().__init__(cursor)
        self.cursor = cursor


@dataclass(frozen=True)
class TenantSpec:
    """Shape of the simulated workspace. Same spec -> byte-identical data.

    ``postings`` is the number of postings, but never fewer than 4 are made: a draft (no candidates),
    an archived and an expired posting are always there, plus at least one active posting, and
    exactly one active posting is a test posting.

    ``null_objects_share``, ``extra_fields`` and ``score_as_string`` are data-shape faults for
    reliability tests; they are off by default so the default tenant matches the official spec.
    """

    seed: int = 7
    postings: int = 8
    start: date = date(2026, 1, 1)
    end: date = date(2026, 3, 31)  # inclusive
    candidates_per_posting: tuple[int, int] = (200, 1500)
    bulk_ingest_share: float = 0.25
    empty_day_share: float = 0.1
    null_objects_share: float = 0.0
    extra_fields: bool = False
    score_as_string: bool = False
    # Share of candidates erased in HeyMilo some time after they were invited (1..60 days later, on the
    # clock): they vanish from every answer, as a GDPR erasure does. Off by default.
    deleted_share: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.candidates_per_posting
        if self.postings < 1:
            raise ValueError("postings must be >= 1")
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if not 0 <= lo <= hi:
            raise ValueError("candidates_per_posting must be a (min, max) range with 0 <= min <= max")
        for name in ("bulk_ingest_share", "empty_day_share", "null_objects_share", "deleted_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")

    @property
    def start_epoch(self) -> float:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp()

    @property
    def end_epoch(self) -> float:
        """Midnight after the last day of the range (exclusive end)."""
        after = self.end + timedelta(days=1)
        return datetime(after.year, after.month, after.day, tzinfo=UTC).timestamp()


class Tenant:
    """Postings and candidates built from a TenantSpec, queried the way the API queries them."""

    def __init__(self, spec: TenantSpec | None = None) -> None:
        self.spec = spec = spec or TenantSpec()
        rng = random.Random(spec.seed)
        self.company = make_company(rng)
        self._postings: list[PostingDef] = make_postings(
            rng, self.company, spec.postings, spec.start_epoch, spec.end_epoch, spec.extra_fields
        )
        self._by_id = {p.id: p for p in self._postings}
        shape = ShapeParams(
            start_us=int(spec.start_epoch) * 1_000_000,
            days=(spec.end - spec.start).days + 1,
            first_weekday=spec.start.weekday(),
            bulk_share=spec.bulk_ingest_share,
            empty_day_share=spec.empty_day_share,
        )
        data_shape = DataShape(spec.null_objects_share, spec.extra_fields, spec.score_as_string)
        people = PeoplePool(random.Random(spec.seed * 7919 + 1))
        id_base = mix64(spec.seed ^ 0x1D_C0FFEE)
        issued = 0
        self._populations: dict[str, Population] = {}
        self._contexts: dict[str, PostingContext] = {}
        lo, hi = spec.candidates_per_posting
        for posting in self._postings:
            # One RNG per posting keeps a posting's candidates stable when other postings change size.
            prng = random.Random((spec.seed << 16) + posting.index)
            n = prng.randint(lo, hi) if posting.accepts_candidates else 0
            self._populations[posting.id] = build_population(prng, shape, n, id_base, issued, people.for_posting(n))
            issued += n
            self._contexts[posting.id] = PostingContext(
                spec.seed, posting.id, self.company.slug, posting.steps, data_shape
            )
        self._clock_lock = threading.Lock()
        self._now = spec.end_epoch
        # Deletions: planned ones (deleted_share, on the clock) and explicit ones (delete_candidates /
        # delete_posting, effective at once). Without any, paging keeps its O(log n) bisect path.
        self._deleted_at = {pid: _deletion_plan(spec, pop) for pid, pop in self._populations.items()}
        self._erased: set[int] = set()
        self._deleted_postings: set[str] = set()

    # --- clock ------------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Simulated current time (UTC epoch seconds). Candidates exist once created_at <= now."""
        return self._now

    def set_now(self, ts: float) -> float:
        with self._clock_lock:
            self._now = float(ts)
            return self._now

    def advance(self, seconds: float) -> float:
        with self._clock_lock:
            self._now += float(seconds)
            return self._now

    # --- postings ---------------------------------------------------------------------------------

    def postings(self) -> list[dict[str, Any]]:
        """PostingResponse documents in listing order (copies: callers may mutate them)."""
        return [copy.deepcopy(p.document) for p in self._live_postings()]

    def posting_ids(self) -> list[str]:
        return [p.id for p in self._live_postings()]

    def posting(self, posting_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._get(posting_id).document)

    def has_posting(self, posting_id: str) -> bool:
        return posting_id in self._by_id and posting_id not in self._deleted_postings

    def _live_postings(self) -> list[PostingDef]:
        return [p for p in self._postings if p.id not in self._deleted_postings]

    # --- deletions --------------------------------------------------------------------------------

    def delete_posting(self, posting_id: str) -> None:
        """The posting and its candidates are gone: listings skip it, its candidates answer 404."""
        self._get(posting_id)
        self._deleted_postings.add(posting_id)

    def delete_candidates(self, interview_ids: list[str]) -> int:
        """Erase candidates now (whatever their posting); returns how many existed."""
        known = 0
        for text in interview_ids:
            number = int(text, 16) if _INTERVIEW_ID.fullmatch(text) else None
            if number is not None and any(p.position_of(number) is not None for p in self._populations.values()):
                self._erased.add(number)
                known += 1
        return known

    def _visible(self, posting_id: str, as_of: float) -> list[int] | None:
        """Positions (in paging order) of the candidates that exist at ``as_of``, or None when no candidate
        of the posting was ever deleted (then every created one exists and bisecting is enough)."""
        planned = self._deleted_at[posting_id]
        if planned is None and not self._erased:
            return None
        pop = self._populations[posting_id]
        end = bisect_right(pop.created_at, as_of)
        erased = self._erased
        return [
            i
            for i in range(end)
            if (planned is None or planned[i] > as_of) and (not erased or pop.interview_ids[i] not in erased)
        ]

    def postings_page(
        self, search: str | None, starting_after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool, int]:
        needle = search.lower() if search else None
        matching = [p for p in self._live_postings() if needle is None or needle in p.document["title"].lower()]
        total = len(matching)
        if starting_after is not None:
            cursor = self._by_id.get(starting_after)
            if cursor is None:
                raise UnknownCursor(starting_after)
            matching = [p for p in matching if p.index > cursor.index]
        page = matching[:limit]
        return [copy.deepcopy(p.document) for p in page], len(matching) > limit, total

    def _get(self, posting_id: str) -> PostingDef:
        try:
            return self._by_id[posting_id]
        except KeyError:
            raise UnknownPosting(posting_id) from None

    # --- candidates -------------------------------------------------------------------------------

    def candidate_count(self, as_of: float | None = None) -> int:
        as_of = self._now if as_of is None else as_of
        return sum(len(self._positions(p.id, as_of)) for p in self._live_postings())

    def _positions(self, posting_id: str, as_of: float) -> range | list[int]:
        visible = self._visible(posting_id, as_of)
        return range(bisect_right(self._populations[posting_id].created_at, as_of)) if visible is None else visible

    def candidates_page(
        self,
        posting_id: str,
        created_after: float | None = None,
        created_before: float | None = None,
        starting_after: str | None = None,
        limit: int = 20,
    ) -> tuple[list[dict[str, Any]], bool, int]:
        """One page of candidates ordered by (created_at, interview_id), bounds inclusive.

        The cursor is a position in that ordering, so it works even when it lies outside the filter;
        total_count is the size of the filtered set, ignoring the cursor.
        """
        if not self.has_posting(posting_id):
            raise UnknownPosting(posting_id)
        pop = self._populations[posting_id]
        now = self._now
        upper = now if created_before is None else min(created_before, now)
        lo = 0 if created_after is None else bisect_left(pop.created_at, created_after)
        hi = bisect_right(pop.created_at, upper)
        begin = lo
        if starting_after is not None:
            # A deleted candidate still works as a cursor: it is a position in the ordering.
            begin = max(lo, self._cursor_position(pop, starting_after) + 1)
        visible = self._visible(posting_id, now)
        if visible is None:
            positions: range | list[int] = range(begin, min(hi, begin + limit))
            total, more = max(0, hi - lo), begin + limit < hi
        else:
            within = visible[bisect_left(visible, lo) : bisect_left(visible, hi)]
            rest = within[bisect_left(within, begin) :]
            positions, total, more = rest[:limit], len(within), len(rest) > limit
        ctx = self._contexts[posting_id]
        items = [render_candidate(ctx, pop.interview_ids[i], pop.created_at[i], pop.people[i], now) for i in positions]
        return items, more, total

    @staticmethod
    def _cursor_position(pop: Population, cursor: str) -> int:
        position = pop.position_of(int(cursor, 16)) if _INTERVIEW_ID.fullmatch(cursor) else None
        if position is None:
            raise UnknownCursor(cursor)
        return position

    # --- interview results ------------------------------------------------------------------------

    def interview_data(self, interview_id: str) -> dict[str, Any]:
        """getInterviewData's ``data`` for a candidate that exists now (``status: "not_ready"`` while unfinished);
        UnknownInterview for any other id: erased, not created yet, its posting deleted, or never issued."""
        number = int(interview_id, 16) if _INTERVIEW_ID.fullmatch(interview_id) else None
        if number is not None and number not in self._erased:
            now = self._now
            for posting in self._live_postings():
                pop = self._populations[posting.id]
                i = pop.position_of(number)
                if i is None:
                    continue
                planned = self._deleted_at[posting.id]
                if pop.created_at[i] <= now and (planned is None or planned[i] > now):
                    ctx = self._contexts[posting.id]
                    return render_interview_data(ctx, number, pop.created_at[i], pop.people[i], now)
                break
        raise UnknownInterview(interview_id)

    def interview_results(self, as_of: float | None = None) -> Iterator[dict[str, Any]]:
        """The results of every candidate existing at ``as_of`` (default: now) whose results are ready, exactly as
        getInterviewData would return them then."""
        as_of = self._now if as_of is None else as_of
        for posting in self._live_postings():
            pop = self._populations[posting.id]
            ctx = self._contexts[posting.id]
            for i in self._positions(posting.id, as_of):
                doc = render_interview_data(ctx, pop.interview_ids[i], pop.created_at[i], pop.people[i], as_of)
                if doc["status"] != "not_ready":
                    yield doc

    # --- ground truth -----------------------------------------------------------------------------

    def truth(self, as_of: float | None = None) -> Iterator[dict[str, Any]]:
        """Every candidate existing at ``as_of`` (default: now), exactly as the API would return it."""
        as_of = self._now if as_of is None else as_of
        for posting in self._live_postings():
            pop = self._populations[posting.id]
            ctx = self._contexts[posting.id]
            for i in self._positions(posting.id, as_of):
                yield render_candidate(ctx, pop.interview_ids[i], pop.created_at[i], pop.people[i], as_of)

    def truth_gzip_chunks(self, as_of: float | None = None, level: int = 1) -> Iterator[bytes]:
        """Gzip-compressed JSON lines of ``truth``. zlib's gzip header carries no mtime or file name,
        so the bytes depend on the data only; level 1 because a 500k truth is ~1 GB of JSON."""
        as_of = self._now if as_of is None else as_of
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        buffer: list[bytes] = []
        for doc in self.truth(as_of):
            buffer.append(dumpb(doc))
            if len(buffer) >= 500:
                yield compressor.compress(b"\n".join(buffer) + b"\n")
                buffer.clear()
        if buffer:
            yield compressor.compress(b"\n".join(buffer) + b"\n")
        yield compressor.flush()

    def write_truth(self, path: str | Path, as_of: float | None = None) -> int:
        """Write the ground truth as gzip JSON lines; returns the number of candidates written."""
        as_of = self._now if as_of is None else as_of
        with open(path, "wb") as fh:
            for chunk in self.truth_gzip_chunks(as_of):
                fh.write(chunk)
        return self.candidate_count(as_of)


def _deletion_plan(spec: TenantSpec, pop: Population) -> array | None:
    """When each candidate is erased (inf: never), 1..60 days after its invitation, for ``deleted_share``
    of them; a pure function of (seed, interview_id), like everything else about a candidate."""
    if not spec.deleted_share or not len(pop):
        return None
    out = array("d")
    for created_at, interview_id in zip(pop.created_at, pop.interview_ids, strict=True):
        h = mix64(interview_id ^ (spec.seed * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF) ^ 0xDE1E7E)
        if (h & 0xFFFFFFFF) / 2**32 < spec.deleted_share:
            out.append(created_at + 86400.0 * (1 + (h >> 32) % 60) + (h >> 40) % 86400)
        else:
            out.append(math.inf)
    return out
