"""Query-parameter validation with the same outcomes as the FastAPI service behind the real API."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError
from starlette.datastructures import QueryParams

from .responses import ApiError, invalid_request
from .timeparse import parse_timestamp

# Validating with pydantic itself yields FastAPI's exact 422 types, messages and ctx.
_LIMIT = TypeAdapter(Annotated[int, Field(ge=1, le=100)])
DEFAULT_LIMIT = 20


def limit_param(query: QueryParams) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        return _LIMIT.validate_python(raw)
    except ValidationError as exc:
        detail = []
        for err in exc.errors(include_url=False):
            item = {"type": err["type"], "loc": ["query", "limit"], "msg": err["msg"], "input": err["input"]}
            if "ctx" in err:
                item["ctx"] = err["ctx"]
            detail.append(item)
        raise ApiError(422, {"detail": detail}) from None


def optional_str(query: QueryParams, name: str) -> str | None:
    # An empty value means "not given", as the Python services behind the API treat falsy cursors.
    value = query.get(name)
    return value or None


def bound_param(query: QueryParams, name: str) -> float | None:
    raw = optional_str(query, name)
    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except (ValueError, OverflowError):
        raise invalid_request(
            "invalid_param",
            f"Invalid {name}: {raw!r}. Use an ISO-8601 datetime such as 2026-03-13T00:00:00Z or Unix epoch seconds.",
            name,
        ) from None


def date_range(query: QueryParams) -> tuple[float | None, float | None]:
    after = bound_param(query, "created_after")
    before = bound_param(query, "created_before")
    if after is not None and before is not None and before < after:
        raise invalid_request(
            "invalid_date_range", "created_before must be greater than or equal to created_after.", "created_before"
        )
    return after, before
