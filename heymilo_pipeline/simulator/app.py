"""The simulated HeyMilo Public API as a Starlette application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .admin import AdminRoutes
from .faults import FaultInjector, Faults
from .gateway import Gateway
from .params import date_range, limit_param, optional_str
from .ratelimit import SlidingWindowLog
from .responses import ApiError, invalid_request, json_response, paginated
from .stats import SimStats
from .tenant import Tenant, UnknownCursor, UnknownInterview

Handler = Callable[[Request], Awaitable[Response]]


def _api_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.body, exc.status)

    return wrapped


class ApiRoutes:
    def __init__(self, tenant: Tenant, faults: Faults, stats: SimStats) -> None:
        self.tenant = tenant
        self.faults = faults
        self.stats = stats

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/api/v2/postings", _api_errors(self.list_postings), methods=["GET"]),
            Route("/api/v2/postings/list", _api_errors(self.list_posting_summaries), methods=["GET"]),
            Route("/api/v2/postings/{posting_id}/candidates", _api_errors(self.list_candidates), methods=["GET"]),
            Route("/api/v2/interviews/{interview_id}/data", _api_errors(self.interview_data), methods=["GET"]),
        ]

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    def _postings_page(self, request: Request) -> tuple[list[dict], bool, int]:
        limit = limit_param(request.query_params)
        cursor = optional_str(request.query_params, "starting_after")
        try:
            return self.tenant.postings_page(optional_str(request.query_params, "search"), cursor, limit)
        except UnknownCursor:
            raise invalid_request("invalid_cursor", f"No such posting: {cursor!r}", "starting_after") from None

    async def list_postings(self, request: Request) -> Response:
        items, has_more, total = self._postings_page(request)
        return json_response(paginated(items, has_more, total, request.url.path))

    async def list_posting_summaries(self, request: Request) -> Response:
        items, has_more, total = self._postings_page(request)
        summaries = [
            {"object": "posting_summary", "id": p["id"], "title": p["title"], "name": p["name"]} for p in items
        ]
        return json_response(paginated(summaries, has_more, total, request.url.path))

    async def list_candidates(self, request: Request) -> Response:
        posting_id = request.path_params["posting_id"]
        query = request.query_params
        limit = limit_param(query)  # FastAPI validates parameters before the handler can 404
        if not self.tenant.has_posting(posting_id):
            raise invalid_request("resource_missing", f"No such posting: {posting_id!r}", "posting_id", status=404)
        after, before = date_range(query)
        cursor = optional_str(query, "starting_after")
        stuck = self.faults.stuck_cursor
        if stuck and cursor is not None:
            self.stats.fault("stuck_cursor")
            cursor = None
        try:
            items, has_more, total = self.tenant.candidates_page(posting_id, after, before, cursor, limit)
        except UnknownCursor:
            raise invalid_request(
                "invalid_cursor",
                f"No candidate with interview_id {cursor!r} in posting {posting_id!r}.",
                "starting_after",
            ) from None
        if self.faults.total_count_offset:
            self.stats.fault("total_count_offset")
            total += self.faults.total_count_offset
        return json_response(paginated(items, has_more or stuck, total, request.url.path))

    async def interview_data(self, request: Request) -> Response:
        interview_id = request.path_params["interview_id"]
        try:
            data = self.tenant.interview_data(interview_id)
        except UnknownInterview:
            raise invalid_request(
                "resource_missing", f"No such interview: {interview_id!r}", "interview_id", status=404
            ) from None
        return json_response({"data": data, "meta": None})


async def _http_exception(request: Request, exc: Exception) -> Response:
    # FastAPI's shape for routing errors (unknown path, wrong method).
    assert isinstance(exc, HTTPException)
    return json_response({"detail": exc.detail}, exc.status_code, exc.headers)


def create_app(tenant: Tenant, api_key: str, faults: Faults | None = None) -> Starlette:
    """The simulator app. ``app.state`` exposes tenant, faults, stats and limiter to tests."""
    faults = faults or Faults()
    limiter = SlidingWindowLog(faults.rate_limit, faults.rate_window_s)
    stats = SimStats(limiter)
    injector = FaultInjector(faults)
    routes = ApiRoutes(tenant, faults, stats).routes() + AdminRoutes(tenant, stats, injector).routes()
    gateway = Middleware(Gateway, api_key=api_key, injector=injector, limiter=limiter, stats=stats, routes=routes)
    app = Starlette(routes=routes, middleware=[gateway], exception_handlers={HTTPException: _http_exception})
    app.state.api_key = api_key  # for tests calling the admin routes; never rendered anywhere
    app.state.tenant = tenant
    app.state.faults = faults
    app.state.stats = stats
    app.state.limiter = limiter
    return app
