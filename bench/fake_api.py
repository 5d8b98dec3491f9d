"""A fast fake of the HeyMilo API for speed benchmarks: the simulator's data, answered from bytes rendered once.

The simulator renders every candidate on every request, which makes it (not the client) the bottleneck of a
speed comparison. Here each posting's candidates are rendered once, on the first request, and kept as JSON
bytes in (created_at, interview_id) order; a page is a bisect and a join. The rules are the spec's: inclusive
``created_after``/``created_before`` (ISO-8601 or epoch seconds), ``starting_after`` cursors, ``limit`` 1..100,
``has_more`` and ``total_count``, 401 without the key, 404 for an unknown posting.

Workspaces are made of simulator tenants (``--tenant seed:postings:min:max``, repeatable), so a benchmark can
mix one large posting with many small ones. Run: ``python bench/fake_api.py --port 0 --tenant 7:4:100000:100000``;
the first line printed is the URL, the second the JSON of every posting's candidate count.
"""

from __future__ import annotations

import bisect
import json
import socket
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import click
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KEY, YEAR_FIRST, YEAR_LAST

from heymilo_pipeline.simulator import Tenant, TenantSpec
from heymilo_pipeline.simulator.encoding import dumpb
from heymilo_pipeline.simulator.params import date_range, limit_param
from heymilo_pipeline.simulator.responses import ApiError, json_response


@dataclass
class Rendered:
    created_at: list[float]
    ids: list[str]
    position: dict[str, int]
    bodies: list[bytes]


class Workspace:
    def __init__(self, tenants: list[Tenant]) -> None:
        self.owner = {p: t for t in tenants for p in t.posting_ids()}
        self.postings = [p for t in tenants for p in t.postings()]
        self.rendered: dict[str, Rendered] = {}
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def served(self) -> None:
        now = time.time()
        self.requests += 1
        self.first_at = now if self.first_at is None else self.first_at
        self.last_at = now

    def candidates(self, posting_id: str) -> Rendered:
        if posting_id not in self.rendered:
            tenant = self.owner[posting_id]
            items, _, _ = tenant.candidates_page(posting_id, None, None, None, 10**9)
            self.rendered[posting_id] = Rendered(
                [c["created_at"] for c in items],
                [c["interview_id"] for c in items],
                {c["interview_id"]: i for i, c in enumerate(items)},
                [dumpb(c) for c in items],
            )
        return self.rendered[posting_id]

    def counts(self) -> dict[str, int]:
        return {p: len(self.candidates(p).ids) for p in self.owner}


def _error(status: int, kind: str, code: str, message: str) -> Response:
    body = {"error": {"type": kind, "code": code, "message": message}}
    return Response(json.dumps(body), status, media_type="application/json")


def create_app(workspace: Workspace) -> Starlette:
    def authorized(request: Request) -> bool:
        return request.headers.get("x-api-key") == KEY

    async def postings(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "authentication_error", "invalid_api_key", "Invalid API key.")
        limit = limit_param(request.query_params)
        cursor = request.query_params.get("starting_after")
        ids = [p["id"] for p in workspace.postings]
        begin = ids.index(cursor) + 1 if cursor else 0
        page = workspace.postings[begin : begin + limit]
        pagination = {"has_more": begin + limit < len(ids), "total_count": len(ids), "url": request.url.path}
        return Response(dumpb({"data": page, "pagination": pagination}), media_type="application/json")

    async def candidates(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "authentication_error", "invalid_api_key", "Invalid API key.")
        posting_id = request.path_params["posting_id"]
        if posting_id not in workspace.owner:
            return _error(404, "invalid_request_error", "resource_missing", "No such posting.")
        query = request.query_params
        try:  # the simulator's own parsing of the parameters: the spec's rules and error bodies
            limit, (after, before) = limit_param(query), date_range(query)
        except ApiError as exc:
            return json_response(exc.body, exc.status)
        data = workspace.candidates(posting_id)
        workspace.served()
        lo = 0 if after is None else bisect.bisect_left(data.created_at, after)
        hi = len(data.ids) if before is None else bisect.bisect_right(data.created_at, before)
        begin = lo
        if cursor := query.get("starting_after"):
            if cursor not in data.position:
                return _error(400, "invalid_request_error", "invalid_cursor", "No such candidate.")
            begin = max(lo, data.position[cursor] + 1)
        end = min(hi, begin + limit)
        pagination = {"has_more": end < hi, "total_count": max(0, hi - lo), "url": request.url.path}
        body = b'{"data":[' + b",".join(data.bodies[begin:end]) + b'],"pagination":' + dumpb(pagination) + b"}"
        return Response(body, media_type="application/json")

    async def stats(request: Request) -> Response:
        """The simulator's /_sim/stats shape, for what the benchmarks read of it."""
        if request.method == "POST":
            workspace.reset()
        snapshot = {
            "requests_by_route": {"/api/v2/postings/{posting_id}/candidates": workspace.requests},
            "rate_limited": 0,
            "first_request_at": workspace.first_at,
            "last_request_at": workspace.last_at,
        }
        return Response(dumpb(snapshot), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/stats/reset", stats, methods=["POST"]),
            Route("/api/v2/postings", postings),
            Route("/api/v2/postings/{posting_id}/candidates", candidates),
        ]
    )


def tenant_of(text: str, first: date = YEAR_FIRST, last: date = YEAR_LAST) -> Tenant:
    seed, postings, lo, hi = (int(part) for part in text.split(":"))
    return Tenant(TenantSpec(seed=seed, postings=postings, start=first, end=last, candidates_per_posting=(lo, hi)))


@click.command()
@click.option("--port", type=int, default=0)
@click.option("--tenant", "tenants", multiple=True, required=True, help="seed:postings:min:max (repeatable).")
@click.option("--days", type=int, default=365, help="Candidates spread over this many days from 2025-01-01.")
def main(port: int, tenants: tuple[str, ...], days: int) -> None:
    last = YEAR_FIRST + timedelta(days=days - 1)
    workspace = Workspace([tenant_of(t, YEAR_FIRST, last) for t in tenants])
    counts = workspace.counts()  # render everything before the clock starts
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)  # connections wait in the backlog until the server accepts them
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    print(json.dumps(counts), flush=True)
    config = uvicorn.Config(
        create_app(workspace), log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
