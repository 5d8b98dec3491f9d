"""The HeyMilo Public API client: cursor paging, inclusive day bounds, shared pacing, retries.

One ``HeyMiloClient`` wraps one ``httpx.AsyncClient`` (keep-alive, one connection pool). Every
request first takes a slot from the key's rate budget (``api.limits``, shared with other processes and hosts),
then is retried on 429 / 5xx / timeouts / dropped connections / unparseable bodies with bounded
exponential backoff and jitter (tenacity). 401, 404, 400 and 422 fail at once with the API's
message: retrying them only burns the rate budget.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic
import pydantic_core
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
    wait_random_exponential,
)

from heymilo_pipeline.api import errors
from heymilo_pipeline.api.limits import RateLimiter
from heymilo_pipeline.api.models import (
    APIModel,
    CandidateList,
    CandidateResponse,
    PaginationMeta,
    PostingList,
    PostingResponse,
    PostingSummary,
    PostingSummaryList,
)
from heymilo_pipeline.api.results import InterviewAnswer, classify, not_ready_marker
from heymilo_pipeline.api.settings import ClientSettings
from heymilo_pipeline.api.stats import QueryStats
from heymilo_pipeline.api.windows import DayRange, iso_z

log = logging.getLogger("heymilo_pipeline.api")

M = TypeVar("M", bound=pydantic.BaseModel)
R = TypeVar("R")


@dataclass
class CandidatePage:
    """One page of one candidate query: the records exactly as the API sent them (``raw``, each once,
    each within the days asked for) and the validated pagination.

    The records' interview_id and created_at are checked here (paging and day selection rest on them);
    the whole record is validated either in bulk by ``flatten.flatten`` or, for callers that want models,
    by ``candidates`` (a ``SchemaError`` naming the record when one does not match the spec).
    """

    posting_id: str
    days: DayRange | None
    number: int
    raw: list[dict[str, Any]]
    pagination: PaginationMeta
    context: errors.RequestContext = field(repr=False)

    @cached_property
    def candidates(self) -> list[CandidateResponse]:
        body = {"data": self.raw, "pagination": self.pagination}
        return _validate(CandidateList, body, self.context, self.number).data


class _CandidateEnvelope(APIModel):
    """The candidates page, its records left as sent (checked in bulk later, or by CandidatePage.candidates)."""

    data: list[Any]
    pagination: PaginationMeta


@dataclass
class CandidateBatch:
    """Every candidate of one (posting, day range) query, each once, with the query's statistics."""

    posting_id: str
    days: DayRange | None
    candidates: list[CandidateResponse] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    stats: QueryStats = field(default_factory=QueryStats)


class HeyMiloClient:
    """Async client of the HeyMilo Public API. Use as ``async with HeyMiloClient(settings) as c``."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        results_lane: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self._own_limiter = limiter is None
        self.limiter = limiter or settings.limiter()
        self._own_lane = results_lane is None
        self._results_lane = results_lane  # made on the first results request: most runs make none
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None  # one per connection of the pool, made with it

    def __repr__(self) -> str:  # the key is deliberately absent
        return f"HeyMiloClient(base_url={self.settings.base_url!r})"

    async def __aenter__(self) -> HeyMiloClient:
        connections = max(4, self.settings.max_concurrency * 2)
        # A request takes a connection before it takes its turn in the rate budget: a turn spent waiting for
        # the pool would send requests in bursts the server's window counts together (429s).
        self._slots = asyncio.Semaphore(connections)
        self._http = httpx.AsyncClient(
            base_url=self.settings.base_url,
            transport=self._transport,
            timeout=httpx.Timeout(self.settings.timeout),
            limits=httpx.Limits(max_connections=connections),
            headers={"Accept": "application/json", "User-Agent": "heymilo-pipeline"},
            follow_redirects=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._own_limiter:
            self.limiter.close()
        if self._own_lane and self._results_lane is not None:
            self._results_lane.close()
            self._results_lane = None

    # --- postings ---------------------------------------------------------------------------

    async def list_postings(self, *, search: str | None = None) -> tuple[list[PostingResponse], QueryStats]:
        """Every posting of the workspace (``GET /api/v2/postings``), all pages."""
        return await self._list_all("/api/v2/postings", PostingList, search=search)

    async def list_posting_summaries(self, *, search: str | None = None) -> tuple[list[PostingSummary], QueryStats]:
        """Every posting as id/title/name (``GET /api/v2/postings/list``), all pages."""
        return await self._list_all("/api/v2/postings/list", PostingSummaryList, search=search)

    async def _list_all(self, path: str, envelope: type[Any], *, search: str | None) -> tuple[list, QueryStats]:
        stats = QueryStats()
        context = errors.RequestContext(f"listing postings ({path})")
        items: list[Any] = []
        params = {"search": search} if search else {}
        async for _, page, _ in self._pages(path, params, envelope, stats, context, _posting_keys):
            items.extend(page.data)
        return items, stats

    async def _pages(
        self,
        path: str,
        params: dict[str, Any],
        envelope: type[M],
        stats: QueryStats,
        context: errors.RequestContext,
        keys_of: Callable[[Any, M, errors.RequestContext, int], list[tuple[str, Any]]],
        posting_id: str | None = None,
    ) -> AsyncIterator[tuple[Any, M, list[tuple[str, Any]]]]:
        """The paging loop of every list endpoint: request, validate, count, then follow ``starting_after`` (the
        id of the page's last item, from ``keys_of``) while ``has_more``; stops rather than go round in circles.
        Yields (body as sent, validated page, keys)."""
        params = {"limit": self.settings.page_size, **params}
        cursors: set[str] = set()
        started = time.perf_counter()
        try:
            while True:
                body = await self._get_json(path, params, stats, context, posting_id=posting_id)
                page = _validate(envelope, body, context, stats.pages + 1)
                keys = keys_of(body, page, context, stats.pages + 1)
                stats.pages += 1
                stats.rows += len(keys)
                if stats.total_count is None:
                    stats.total_count = page.pagination.total_count
                yield body, page, keys
                if not page.pagination.has_more:
                    return
                params["starting_after"] = _next_cursor([key for key, _ in keys], cursors, context)
        finally:
            stats.seconds += time.perf_counter() - started

    # --- candidates -------------------------------------------------------------------------

    async def candidate_pages(
        self,
        posting_id: str,
        days: DayRange | None = None,
        stats: QueryStats | None = None,
        seen: set[str] | None = None,
    ) -> AsyncIterator[CandidatePage]:
        """Pages of one posting's candidates created in ``days`` (all of them when None).

        Each candidate is yielded once. ``stats`` (if given) is updated as pages arrive. ``seen``: interview_ids
        already yielded by other queries of the same slice (shared by its sub-ranges, so an undated candidate,
        which every range may return, is kept once).
        """
        stats = stats if stats is not None else QueryStats()
        context = errors.RequestContext("fetching candidates", posting_id, str(days) if days else None)
        path = f"/api/v2/postings/{posting_id}/candidates"
        params = days.query_params() if days is not None else {}
        seen = set() if seen is None else seen
        number = 0
        pages = self._pages(path, params, _CandidateEnvelope, stats, context, _candidate_keys, posting_id)
        async for body, page, keys in pages:
            number += 1
            kept = _select(keys, body["data"], days, seen, stats, posting_id)
            yield CandidatePage(posting_id, days, number, kept, page.pagination, context)

    async def count_candidates(self, posting_id: str, days: DayRange, stats: QueryStats | None = None) -> int | None:
        """``pagination.total_count`` of one ``limit=1`` query: how many candidates the API holds for those days
        (None when it does not say). One request, whatever the size of the range."""
        stats = stats if stats is not None else QueryStats()
        context = errors.RequestContext("counting candidates", posting_id, str(days))
        # created_before is inclusive: stop a microsecond before the next midnight, whose candidates belong
        # to the next day (fetching drops them from a range; a count cannot).
        params = {"limit": 1, "created_after": iso_z(days.start), "created_before": iso_z(days.end - 1e-6)}
        path = f"/api/v2/postings/{posting_id}/candidates"
        body = await self._get_json(path, params, stats, context, posting_id=posting_id)
        return _validate(_CandidateEnvelope, body, context).pagination.total_count

    async def fetch_candidates(self, posting_id: str, days: DayRange | None = None) -> CandidateBatch:
        """All candidates of one posting and day range, in memory (use ``candidate_pages`` to stream)."""
        batch = CandidateBatch(posting_id, days)
        async for page in self.candidate_pages(posting_id, days, batch.stats):
            batch.candidates.extend(page.candidates)
            batch.raw.extend(page.raw)
        return batch

    async def fetch_many(
        self, queries: Iterable[tuple[str, DayRange | None]], *, max_concurrency: int | None = None
    ) -> list[CandidateBatch]:
        """Several postings at once (bounded), so latency does not hold us below the rate limit."""
        return await gather_bounded(
            [lambda q=q: self.fetch_candidates(*q) for q in queries],
            max_concurrency or self.settings.max_concurrency,
        )

    # --- interview results ------------------------------------------------------------------

    async def interview_data(
        self, interview_id: str, *, posting_id: str | None = None, stats: QueryStats | None = None
    ) -> InterviewAnswer:
        """getInterviewData (``GET /api/v2/interviews/{interview_id}/data``): the interview's results as sent, or
        why there are none (not ready yet; gone, a 404, as for an erased candidate). One request, retried like
        every other; errors other than those raise as usual."""
        stats = stats if stats is not None else QueryStats()
        context = errors.RequestContext(f"fetching the results of interview {interview_id}", posting_id)
        path = f"/api/v2/interviews/{quote(interview_id, safe='')}/data"
        if self._results_lane is None:
            self._results_lane = self.settings.results_lane()
        try:
            body = await self._get_json(path, {}, stats, context, posting_id=posting_id, lane=self._results_lane)
        except errors.APIError as exc:
            if not_ready_marker({"error": {"code": exc.code, "type": exc.error_type}}):
                return InterviewAnswer(interview_id, "not_ready", note=f"not ready (HTTP {exc.status_code})")
            if isinstance(exc, errors.NotFoundError):
                return InterviewAnswer(interview_id, "gone", note=exc.detail)
            raise
        stats.rows += 1
        return classify(interview_id, body)

    # --- one request, retried ---------------------------------------------------------------

    async def _get_json(
        self,
        path: str,
        params: dict[str, Any],
        stats: QueryStats,
        context: errors.RequestContext,
        *,
        posting_id: str | None = None,
        lane: RateLimiter | None = None,
    ) -> Any:
        if self._http is None:
            raise RuntimeError("use HeyMiloClient inside 'async with'")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._backoff,
            retry=retry_if_exception(lambda e: isinstance(e, errors.HeyMiloError) and e.retryable),
            before_sleep=lambda state: self._note_retry(state, stats, context),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(path, params, stats, context, posting_id, lane)
        except RetryError as exhausted:
            last = exhausted.last_attempt.exception()
            assert isinstance(last, errors.HeyMiloError)
            raise errors.RetriesExhaustedError(
                f"gave up after {self.settings.max_attempts} attempts; last error: {last.detail}. "
                "The API or the network is failing; the run can be retried as is, nothing was published. "
                "Raise HEYMILO_MAX_ATTEMPTS if this is a known flaky period.",
                last_error=last,
                attempts=self.settings.max_attempts,
                context=context,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, errors.RateLimitedError):
            if error.retry_after:
                # The limiter already holds every process back until Retry-After; jitter spreads the restart.
                return wait_random_exponential(multiplier=0.05, max=1.0)(state)
            # No usable Retry-After (absent, or "0" from a gateway that means "soon"): the server is over
            # its limit all the same, so wait at least backoff_initial, doubling per attempt. Full jitter
            # could draw ~0 s again and again and burn every attempt in a second.
            initial, top = self.settings.backoff_initial, self.settings.backoff_max
            return wait_exponential_jitter(multiplier=initial, max=top, jitter=initial)(state)
        return wait_random_exponential(multiplier=self.settings.backoff_initial, max=self.settings.backoff_max)(state)

    def _note_retry(self, state: RetryCallState, stats: QueryStats, context: errors.RequestContext) -> None:
        stats.retries += 1
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: attempt %d failed (%s); retrying in %.1fs",
            context.describe(),
            state.attempt_number,
            getattr(error, "detail", error),
            state.upcoming_sleep,
        )

    async def _get_once(
        self,
        path: str,
        params: dict[str, Any],
        stats: QueryStats,
        context: errors.RequestContext,
        posting_id: str | None,
        lane: RateLimiter | None = None,
    ) -> Any:
        assert self._http is not None and self._slots is not None
        async with self._slots:
            if lane is not None:
                stats.waited_seconds += await lane.acquire()  # the lane first: its share, then the key's turn
            stats.waited_seconds += await self.limiter.acquire()
            stats.requests += 1
            response = await self._send(path, params, context)
        stats.bytes += len(response.content)
        if response.status_code >= 400:
            raise self._error_for(response, stats, context, posting_id)
        return _parse_json(response, context)

    async def _send(self, path: str, params: dict[str, Any], context: errors.RequestContext) -> httpx.Response:
        assert self._http is not None
        try:
            async with asyncio.timeout(self.settings.timeout):
                return await self._http.get(path, params=params, headers={"X-API-KEY": self.settings.key})
        except (TimeoutError, httpx.TimeoutException):
            raise errors.TransportError(
                f"no complete response within {self.settings.timeout:g}s", context=context
            ) from None
        except httpx.ConnectError as exc:
            raise errors.TransportError(
                f"could not connect to {self.settings.base_url} ({exc or 'no detail'}); check HEYMILO_BASE_URL "
                "and the network",
                context=context,
            ) from None
        except httpx.TransportError as exc:
            raise errors.TransportError(
                f"connection failed ({type(exc).__name__}: {exc or 'no detail'})", context=context
            ) from None

    def _error_for(
        self,
        response: httpx.Response,
        stats: QueryStats,
        context: errors.RequestContext,
        posting_id: str | None,
    ) -> errors.HeyMiloError:
        try:
            body = response.json()
        except ValueError:
            body = None
        pause = retry_after = None
        if response.status_code == 429:
            stats.rate_limited += 1
            retry_after = _retry_after(response)
            pause = retry_after or self.settings.backoff_initial
            self.limiter.pause_for(pause)  # everyone sharing the key waits, not just us
        return errors.from_response(
            response.status_code,
            body,
            response.reason_phrase or "error",
            context=context,
            subject=f"posting {posting_id!r}" if posting_id else response.request.url.path,
            redact=self._redact,
            pause=pause,
            retry_after=retry_after,
        )

    def _redact(self, text: str) -> str:
        key = self.settings.key
        return text.replace(key, "***") if key else text


# --- helpers --------------------------------------------------------------------------------


def _parse_json(response: httpx.Response, context: errors.RequestContext) -> Any:
    """The body as Python objects: pydantic-core's Rust parser (~1.5x json.loads, big ints exact), and
    json.loads for what it refuses but JSON allows (a lone surrogate escape, UTF-16/32 bodies)."""
    content = response.content
    try:
        # Keys repeat on every record; values (ids, names, URLs) rarely do, so only keys are worth caching.
        return pydantic_core.from_json(content, cache_strings="keys")
    except ValueError:
        pass
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.ResponseFormatError(
            f"HTTP {response.status_code} with a body that is not valid JSON "
            f"({len(content)} bytes, {exc}); probably truncated",
            context=context,
        ) from None


def _validate(envelope: type[M], body: Any, context: errors.RequestContext, page: int | None = None) -> M:
    try:
        return envelope.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        record = _record_id(body, first["loc"])
        # The input's type, never its value: a missing field's input is the whole record (names, emails).
        got = _input_type(body, first["loc"])
        on_page = f" on page {page}" if page else ""
        raise errors.SchemaError(
            f"the API's answer{on_page} does not match its documented schema at field {where}{record}: "
            f"{first['msg']}{got}. The pipeline stops rather than store it wrongly; {exc.error_count()} problem(s) "
            "in this page. Report it to HeyMilo, or exclude the posting until it is fixed.",
            context=context,
        ) from None


def _input_type(body: Any, loc: tuple[Any, ...]) -> str:
    value = body
    try:
        for part in loc:
            value = value[part]
    except (KeyError, IndexError, TypeError):
        return ""
    return f" (got {'null' if value is None else type(value).__name__})"


def _record_id(body: Any, loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "data" and isinstance(loc[1], int):
        try:
            item = body["data"][loc[1]]
            ident = item.get("interview_id") or item.get("id")
            return f" (record {ident})" if ident else ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return ""
    return ""


def _next_cursor(ids: list[str], used: set[str], context: errors.RequestContext) -> str:
    """The ``starting_after`` for the next page; refuses to go round in circles."""
    if not ids:
        raise errors.PagingError(
            "the API said has_more=true but returned an empty page, so there is no cursor to continue "
            "from. Stopped instead of looping; retry later or report it to HeyMilo.",
            context=context,
        )
    cursor = ids[-1]
    if cursor in used:
        raise errors.PagingError(
            f"the cursor repeated (starting_after={cursor!r} was already used): the API is not "
            "advancing. Stopped instead of looping forever; retry later or report it to HeyMilo.",
            context=context,
        )
    used.add(cursor)
    return cursor


def _posting_keys(body: Any, page: Any, context: errors.RequestContext, number: int) -> list[tuple[str, Any]]:
    return [(posting.id, None) for posting in page.data]


def _candidate_keys(
    body: Any, page: Any, context: errors.RequestContext, number: int
) -> list[tuple[str, float | None]]:
    return _keys(body["data"], body, context, number)


def _keys(records: list[Any], body: Any, context: errors.RequestContext, number: int) -> list[tuple[str, float | None]]:
    """(interview_id, created_at) of every record: what paging and day selection rest on.

    Checked here, record by record (cheap). A record that fails the check goes to the models with the
    whole page: they name what is wrong (SchemaError), or coerce what their lax mode accepts.
    """
    keys = []
    for record in records:
        if not isinstance(record, dict):
            break
        interview_id, created = record.get("interview_id"), record.get("created_at")
        if not isinstance(interview_id, str) or not (
            created is None or (isinstance(created, int | float) and not isinstance(created, bool))
        ):
            break
        keys.append((interview_id, created))
    else:
        return keys
    return [(c.interview_id, c.created_at) for c in _validate(CandidateList, body, context, number).data]


def _select(
    keys: list[tuple[str, float | None]],
    records: list[dict[str, Any]],
    days: DayRange | None,
    seen: set[str],
    stats: QueryStats,
    posting_id: str,
) -> list[dict[str, Any]]:
    """Drop what is not ours: a repeat of a candidate already yielded, or one outside ``days``.

    The upper bound is inclusive on the API side, so a candidate created exactly at the next
    midnight comes back here; it belongs to the next day and is fetched with it.
    """
    kept: list[dict[str, Any]] = []
    for (interview_id, created), record in zip(keys, records, strict=True):
        if interview_id in seen:
            stats.duplicates += 1
            continue
        if days is not None and created is not None and created not in days:
            if created == days.end:
                stats.next_day_boundary += 1
            else:
                stats.out_of_range += 1
                log.warning(
                    "posting %s: candidate %s created at %s lies outside the requested days %s; ignored",
                    posting_id,
                    interview_id,
                    created,
                    days,
                )
            continue
        if created is None:
            stats.undated += 1
        seen.add(interview_id)
        kept.append(record)
    stats.kept += len(kept)
    return kept


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


async def gather_bounded(factories: list[Callable[[], Awaitable[R]]], limit: int) -> list[R]:
    """Run coroutine factories with at most ``limit`` in flight; results in input order."""
    semaphore = asyncio.Semaphore(max(1, limit))

    async def run(factory: Callable[[], Awaitable[R]]) -> R:
        async with semaphore:
            return await factory()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(factory)) for factory in factories]
    except ExceptionGroup as failed:
        # The first failure cancels the rest; callers catch our own error types, not a group of them.
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
