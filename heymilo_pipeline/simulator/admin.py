"""Admin routes for tests and benchmarks: stats, the simulated clock, and the ground truth.

They sit under /_sim, need the API key, and are never rate limited or fault-injected (see gateway).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .faults import FaultInjector
from .responses import ApiError, invalid_request, json_response
from .stats import SimStats
from .tenant import Tenant
from .timeparse import parse_timestamp


class AdminRoutes:
    def __init__(self, tenant: Tenant, stats: SimStats, injector: FaultInjector) -> None:
        self.tenant = tenant
        self.stats = stats
        self.injector = injector

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/stats", self.get_stats, methods=["GET"]),
            Route("/_sim/stats/reset", self.reset_stats, methods=["POST"]),
            Route("/_sim/clock", self.clock, methods=["GET", "POST"]),
            Route("/_sim/truth", self.truth, methods=["GET"]),
            Route("/_sim/delete", self.delete, methods=["POST"]),
            Route("/_sim/latency", self.latency, methods=["POST"]),
        ]

    async def get_stats(self, request: Request) -> Response:
        return json_response({**self.stats.snapshot(), "now": self.tenant.now})

    async def reset_stats(self, request: Request) -> Response:
        self.stats.reset()
        return json_response({**self.stats.snapshot(), "now": self.tenant.now})

    async def clock(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return _error(invalid_request("invalid_body", "Body must be JSON."))
            try:
                self._move_clock(body)
            except ApiError as exc:
                return _error(exc)
        return json_response({"now": self.tenant.now})

    def _move_clock(self, body: Any) -> None:
        if not isinstance(body, dict) or len(body.keys() & {"advance", "now"}) != 1:
            raise invalid_request("invalid_body", 'Send exactly one of {"advance": seconds} or {"now": epoch}.')
        if "advance" in body:
            seconds = body["advance"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
                raise invalid_request("invalid_param", "advance must be a number of seconds.", "advance")
            self.tenant.advance(seconds)
            return
        value = body["now"]
        try:
            if isinstance(value, str):
                value = parse_timestamp(value)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(value)
        except ValueError:
            raise invalid_request("invalid_param", "now must be epoch seconds or an ISO-8601 string.", "now") from None
        self.tenant.set_now(value)

    async def delete(self, request: Request) -> Response:
        """Erase data as HeyMilo would: ``{"posting_id": id}`` or ``{"interview_ids": [ids]}``."""
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(invalid_request("invalid_body", "Body must be JSON."))
        if isinstance(body, dict) and isinstance(body.get("posting_id"), str):
            if not self.tenant.has_posting(body["posting_id"]):
                return _error(invalid_request("resource_missing", "No such posting.", "posting_id", status=404))
            self.tenant.delete_posting(body["posting_id"])
            return json_response({"deleted_posting": body["posting_id"]})
        ids = body.get("interview_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _error(invalid_request("invalid_body", 'Send {"posting_id": id} or {"interview_ids": [ids]}.'))
        return json_response({"deleted_candidates": self.tenant.delete_candidates(ids)})

    async def latency(self, request: Request) -> Response:
        """Every request's added latency from now on: ``{"ms": milliseconds}`` (a slow API on demand, so a test can
        act on a run while it fetches)."""
        try:
            ms = (await request.json())["ms"]
            if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms < math.inf:
                raise ValueError(ms)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            return _error(invalid_request("invalid_body", 'Send {"ms": milliseconds >= 0}.', "ms"))
        self.injector.faults = dataclasses.replace(self.injector.faults, latency_ms=float(ms))
        return json_response({"latency_ms": self.injector.faults.latency_ms})

    async def truth(self, request: Request) -> Response:
        raw = request.query_params.get("as_of")
        try:
            as_of = parse_timestamp(raw) if raw else self.tenant.now
        except ValueError:
            return _error(invalid_request("invalid_param", "as_of must be epoch seconds or ISO-8601.", "as_of"))
        return StreamingResponse(
            self.tenant.truth_gzip_chunks(as_of),
            media_type="application/gzip",
            headers={
                "Content-Disposition": 'attachment; filename="truth.jsonl.gz"',
                "X-Sim-As-Of": json.dumps(as_of),
            },
        )


def _error(exc: ApiError) -> Response:
    return json_response(exc.body, exc.status)
