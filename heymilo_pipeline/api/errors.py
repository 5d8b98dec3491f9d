"""Errors of the HeyMilo client, as a hierarchy a caller can catch precisely.

Every message names what was asked (posting, days) and says what to do. None of them ever
contains the API key: messages are built from our own words and the API's error body, and the
request is described by method, path and query parameters only (the key travels in a header).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from heymilo_pipeline.api.models import APIErrorResponse, HTTPValidationError


@dataclass(frozen=True)
class RequestContext:
    """What a request was for, in the words a user understands (posting, days)."""

    operation: str
    posting_id: str | None = None
    window: str | None = None  # e.g. "2026-03-01..2026-03-31 (UTC days)"

    def describe(self) -> str:
        parts = [self.operation]
        if self.posting_id is not None:
            parts.append(f"posting {self.posting_id}")
        if self.window is not None:
            parts.append(f"days {self.window}")
        return ", ".join(parts)


class HeyMiloError(Exception):
    """Base class of everything the client raises."""

    retryable: bool = False

    def __init__(self, message: str, *, context: RequestContext | None = None) -> None:
        self.context = context
        self.detail = message
        prefix = f"{context.describe()}: " if context else ""
        super().__init__(prefix + message)


class ConfigurationError(HeyMiloError):
    """The client cannot be built as configured (missing key, bad URL, bad option)."""


class APIError(HeyMiloError):
    """The API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        context: RequestContext | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_type = error_type
        self.code = code
        self.param = param
        super().__init__(message, context=context)


class AuthenticationError(APIError):
    """401: the key is missing, wrong or revoked. Never retried: a bad key must not cause a storm."""


class NotFoundError(APIError):
    """404: usually a posting that does not exist (or not in this key's workspace)."""


class BadRequestError(APIError):
    """400: the API rejected a parameter (date range, cursor)."""


class RequestValidationError(APIError):
    """422: a query parameter failed the API's validation."""


class RateLimitedError(APIError):
    """429: over the per-key rate limit. Retried after ``Retry-After``."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None, **kwargs) -> None:
        self.retry_after = retry_after
        super().__init__(message, status_code=429, **kwargs)


class ServerError(APIError):
    """5xx: the API failed; retried with backoff."""

    retryable = True


class TransportError(HeyMiloError):
    """Timeouts, refused or dropped connections: retried with backoff."""

    retryable = True


class ResponseFormatError(HeyMiloError):
    """A 2xx whose body is not JSON (truncated, garbled): retried, a resend usually heals it."""

    retryable = True


class SchemaError(HeyMiloError):
    """A well-formed JSON body that does not match the API's documented schema.

    Not retried: the same request returns the same body, so retrying only spends rate budget.
    """


class PagingError(HeyMiloError):
    """The cursor repeated or did not advance; we stop instead of looping forever."""


class RetriesExhaustedError(HeyMiloError):
    """A retryable failure persisted through every attempt."""

    def __init__(
        self, message: str, *, last_error: HeyMiloError, attempts: int, context: RequestContext | None = None
    ) -> None:
        self.last_error = last_error
        self.attempts = attempts
        super().__init__(message, context=context)


def from_response(
    status: int,
    body: Any,
    reason: str,
    *,
    context: RequestContext,
    subject: str,
    redact: Callable[[str], str],
    pause: float | None = None,
    retry_after: float | None = None,
) -> HeyMiloError:
    """The error for an HTTP error answer, with the API's own message (APIErrorResponse, or 422's detail)."""
    error_type = code = param = None
    message = reason
    if status == 422 and isinstance(body, dict) and "detail" in body:
        try:
            detail = HTTPValidationError.model_validate(body).detail
            message = "; ".join(f"{'.'.join(str(part) for part in d.loc)}: {d.msg}" for d in detail) or message
            param = next((str(d.loc[-1]) for d in detail if d.loc), None)
        except pydantic.ValidationError:
            pass
    elif isinstance(body, dict) and "error" in body:
        try:
            api_error = APIErrorResponse.model_validate(body).error
            error_type, code, param = api_error.type, api_error.code, api_error.param
            message = api_error.message
            if api_error.errors:
                message += " (" + "; ".join(f"{e.param or '?'}: {e.message}" for e in api_error.errors) + ")"
        except pydantic.ValidationError:
            pass
    message = redact(message)  # an API that echoes what it was sent must not leak the key through us
    what = f"HTTP {status}" + (f" {code}" if code else "")
    kwargs: dict[str, Any] = dict(error_type=error_type, code=code, param=param, context=context)
    if status == 401:
        return AuthenticationError(
            f"the API rejected the API key ({what}: {message}). Set HEYMILO_API_KEY to a valid key "
            "for this workspace; nothing is retried with a rejected key.",
            status_code=status,
            **kwargs,
        )
    if status == 404:
        return NotFoundError(
            f"{subject} was not found ({what}: {message}). Check the id, or remove it from the "
            "posting filters; postings outside this key's workspace also answer 404.",
            status_code=status,
            **kwargs,
        )
    if status == 429:
        return RateLimitedError(
            f"rate limited ({what}: {message}); retrying after {pause or 0:g}s. If this repeats, "
            "lower HEYMILO_RATE_LIMIT to what your key allows.",
            retry_after=retry_after,
            **kwargs,
        )
    if status == 400:
        return BadRequestError(
            f"the API rejected parameter {param or '?'} ({what}: {message})", status_code=status, **kwargs
        )
    if status == 422:
        return RequestValidationError(f"the API rejected the query ({what}: {message})", status_code=status, **kwargs)
    if status >= 500:
        return ServerError(f"the API failed ({what}: {message})", status_code=status, **kwargs)
    return APIError(f"unexpected answer ({what}: {message})", status_code=status, **kwargs)
