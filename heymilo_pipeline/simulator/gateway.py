"""ASGI middleware in front of the routes: API-key auth, rate limiting, fault injection and stats.

It is a raw ASGI middleware (not BaseHTTPMiddleware) because the faults need control over the wire:
a dropped connection sends a partial body and then aborts, a truncated body goes out without a
Content-Length so it is a well-formed chunked HTTP response around broken JSON.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

import anyio
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .encoding import dumpb
from .faults import ConnectionDropped, FaultDecision, FaultInjector, garbled, truncated
from .ratelimit import RateDecision, SlidingWindowLog
from .responses import rate_limited_body, server_error_body, unauthorized_body
from .stats import SimStats

Headers = list[tuple[bytes, bytes]]
API_PREFIX = "/api/v2"
ADMIN_PREFIX = "/_sim"


class Gateway:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str,
        injector: FaultInjector,
        limiter: SlidingWindowLog,
        stats: SimStats,
        routes: Sequence[BaseRoute],
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.app = app
        self._key = api_key.encode()
        self._injector = injector
        self._limiter = limiter
        self._stats = stats
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            await self._api(scope, receive, send)
        elif path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            # Admin routes need the key but are never rate limited, fault-injected or counted.
            if self._authenticated(scope) is None:
                await _send_json(send, 401, unauthorized_body(), [])
                return
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _authenticated(self, scope: Scope) -> str | None:
        """The API key if the request presents the right one (X-API-KEY, else Bearer), else None."""
        api_key = authorization = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value
            elif name == b"authorization":
                authorization = value
        presented = api_key
        if presented is None and authorization is not None and authorization[:7].lower() == b"bearer ":
            presented = authorization[7:].strip()
        if presented is None or not hmac.compare_digest(presented, self._key):
            return None
        return self._key.decode()

    def _route_name(self, scope: Scope) -> str:
        for route in self._routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return f"{scope['method']} {getattr(route, 'path', '?')}"
        return f"{scope['method']} <unmatched>"

    def _rate_headers(self, rate: RateDecision) -> Headers:
        if self._limiter.limit is None:
            return []
        return [
            (b"x-ratelimit-limit", str(rate.limit).encode()),
            (b"x-ratelimit-remaining", str(rate.remaining).encode()),
            (b"x-ratelimit-reset", str(rate.reset_s).encode()),
        ]

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self._stats
        stats.request(self._route_name(scope))
        decision = self._injector.decide()
        if decision.latency_s:
            await anyio.sleep(decision.latency_s)
        key = self._authenticated(scope)
        if key is None:
            stats.status(401)
            await _send_json(send, 401, unauthorized_body(), [])
            return
        stats.attempt(key)
        rate = self._limiter.hit(key)
        headers = self._rate_headers(rate)
        if decision.zero_retry_after:
            stats.fault("zero_retry_after")
            stats.status(429)
            body = rate_limited_body(rate.limit or 300, self._limiter.window_s)
            await _send_json(send, 429, body, [*headers, (b"retry-after", b"0")])
            return
        if not rate.allowed:
            stats.status(429)
            body = rate_limited_body(rate.limit, self._limiter.window_s)
            await _send_json(send, 429, body, [*headers, (b"retry-after", str(rate.retry_after_s).encode())])
            return
        if decision.stall:
            stats.fault("stall")
            await anyio.sleep(decision.stall_s)
        if decision.error_status is not None:
            stats.fault("error")
            stats.status(decision.error_status)
            await _send_json(send, decision.error_status, server_error_body(decision.error_status), headers)
            return
        status, inner_headers, body = await capture_response(self.app, scope, receive)
        await self._emit(send, decision, status, [*inner_headers, *headers], body)

    async def _emit(self, send: Send, decision: FaultDecision, status: int, headers: Headers, body: bytes) -> None:
        stats = self._stats
        if decision.kind == "drop":
            stats.fault("drop")
            # Headers promise the full Content-Length, half the body arrives, then the connection dies.
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise ConnectionDropped("simulated connection drop")
        if status == 200 and decision.kind == "truncate":
            stats.fault("truncate")
            body = truncated(body)
            headers = [(k, v) for k, v in headers if k != b"content-length"]
        elif status == 200 and decision.kind == "malformed":
            stats.fault("malformed")
            body, content_type = garbled(body, decision.garble_variant)
            headers = [(k, v) for k, v in headers if k not in (b"content-length", b"content-type")]
            headers += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        stats.status(status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def capture_response(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, Headers, bytes]:
    """Run the inner app and buffer its response (API responses are small JSON documents)."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, collect)
    return start["status"], list(start.get("headers", [])), b"".join(chunks)


async def _send_json(send: Send, status: int, payload: Any, headers: Headers) -> None:
    body = dumpb(payload)
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
