"""Parsing of the ``created_after`` / ``created_before`` bounds the API accepts."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_EPOCH = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(text: str) -> float:
    """ISO-8601 (``Z`` or any ±hh:mm offset, fractional seconds, naive = UTC) or epoch seconds.

    Raises ValueError when the text is neither. A bare digit string is always epoch seconds.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty timestamp")
    if _EPOCH.fullmatch(value):
        return float(value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH_ZERO
    # Integer microseconds divided once: correctly rounded, hence equal to the float the tenant stores
    # for a candidate created at that instant.
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) / 1_000_000
