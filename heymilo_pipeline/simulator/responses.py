"""Response bodies of the HeyMilo API: JSON success envelopes, APIErrorResponse and FastAPI 422s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from .encoding import dumpb

JSON = "application/json"


class ApiError(Exception):
    """An error response a handler wants to return; raised from deep inside parameter parsing."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumpb(payload), status_code=status, media_type=JSON, headers=headers)


def error_body(type_: str, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "code": code, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def invalid_request(code: str, message: str, param: str | None = None, status: int = 400) -> ApiError:
    return ApiError(status, error_body("invalid_request_error", code, message, param))


def unauthorized_body() -> dict[str, Any]:
    # Deliberately constant: the presented key must never be echoed back.
    return error_body("authentication_error", "invalid_api_key", "Invalid or missing API key.")


def rate_limited_body(limit: int, window_s: float) -> dict[str, Any]:
    window = f"{window_s:g}s"
    return error_body("rate_limit_error", "rate_limit_exceeded", f"Rate limit exceeded: {limit} requests per {window}.")


def server_error_body(status: int) -> dict[str, Any]:
    message = {
        500: "An internal error occurred. Please retry the request.",
        502: "Bad gateway: the upstream service failed to respond.",
        503: "The service is temporarily unavailable. Please retry shortly.",
    }.get(status, "An internal error occurred.")
    return error_body("api_error", "internal_error", message)


def paginated(data: list[dict[str, Any]], has_more: bool, total_count: int, url: str) -> dict[str, Any]:
    return {"data": data, "pagination": {"has_more": has_more, "total_count": total_count, "url": url}}
