"""In-process httpx transport that fails like a socket would."""

from __future__ import annotations

import anyio
import httpx
from starlette.types import ASGIApp

from .faults import ConnectionDropped


class SimASGITransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` plus the two things a real socket adds:

    - a dropped connection surfaces as ``httpx.RemoteProtocolError`` instead of the app's exception;
    - the request's read timeout is enforced (ASGITransport ignores timeouts), so a stalled response
      raises ``httpx.ReadTimeout`` just like over TCP.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            with anyio.fail_after(timeout):
                return await self._inner.handle_async_request(request)
        except ConnectionDropped as exc:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=request
            ) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout("simulated read timeout", request=request) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def asgi_transport(app: ASGIApp) -> httpx.AsyncBaseTransport:
    return SimASGITransport(app)
