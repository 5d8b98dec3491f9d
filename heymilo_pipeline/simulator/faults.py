"""Transport-level faults the simulator can inject into /api/v2 responses, decided per request."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass


class ConnectionDropped(Exception):
    """Raised by the app after a partial response to make the server cut the connection."""


@dataclass(frozen=True)
class Faults:
    """All off by default. Rates are probabilities in [0, 1] per /api/v2 request.

    ``rate_limit`` is the number of requests accepted per API key in any ``rate_window_s`` window
    (None = unlimited); ``stuck_cursor`` and ``total_count_offset`` corrupt the candidates endpoint.
    """

    latency_ms: float = 0.0
    rate_limit: int | None = None
    rate_window_s: float = 60.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    malformed_rate: float = 0.0
    stall_rate: float = 0.0
    stall_s: float = 30.0
    stuck_cursor: bool = False
    total_count_offset: int = 0
    # Share of /api/v2 requests answered 429 with "Retry-After: 0" (a gateway that says "now" and
    # means "soon"): a client must back off on its own instead of burning its attempts at once.
    zero_retry_after_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "error_rate",
            "drop_rate",
            "truncate_rate",
            "malformed_rate",
            "stall_rate",
            "zero_retry_after_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be >= 1 or None")
        if self.rate_window_s <= 0:
            raise ValueError("rate_window_s must be > 0")
        if self.latency_ms < 0 or self.stall_s < 0:
            raise ValueError("latency_ms and stall_s must be >= 0")


@dataclass(frozen=True, slots=True)
class FaultDecision:
    latency_s: float = 0.0
    stall: bool = False
    stall_s: float = 0.0
    error_status: int | None = None  # 500/502/503 replaces the response
    kind: str | None = None  # drop | truncate | malformed
    garble_variant: int = 0
    zero_retry_after: bool = False


class FaultInjector:
    """Draws the faults of each request from one seeded RNG, so a run is reproducible given the same
    request order. Thread-safe: uvicorn and the in-process transport may call it concurrently."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()

    def decide(self) -> FaultDecision:
        f = self.faults
        with self._lock:
            r = self._rng.random
            latency = f.latency_ms / 1000 * (1 + 0.1 * r()) if f.latency_ms else 0.0
            stall = f.stall_rate > 0 and r() < f.stall_rate
            error_status = None
            kind = None
            if f.error_rate and r() < f.error_rate:
                error_status = (500, 502, 503)[int(r() * 3)]
            elif f.drop_rate and r() < f.drop_rate:
                kind = "drop"
            elif f.truncate_rate and r() < f.truncate_rate:
                kind = "truncate"
            elif f.malformed_rate and r() < f.malformed_rate:
                kind = "malformed"
            variant = int(r() * 3) if kind == "malformed" else 0
            zero = bool(f.zero_retry_after_rate) and r() < f.zero_retry_after_rate
        return FaultDecision(latency, stall, f.stall_s if stall else 0.0, error_status, kind, variant, zero)


def truncated(body: bytes) -> bytes:
    """A prefix that is never valid JSON (an object cut before its closing brace)."""
    return body[: max(1, len(body) // 2)]


def garbled(body: bytes, variant: int) -> tuple[bytes, str]:
    """(body, content type) of a 200 that is not the JSON it claims to be."""
    if variant == 0:
        return b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>", "text/html"
    if variant == 1:
        return b"", "application/json"
    # Valid-looking start, then bytes that are not UTF-8 and not JSON.
    return body[:64] + b"\xff\xfe\x00garbled\x00" + body[-16:], "application/json"
