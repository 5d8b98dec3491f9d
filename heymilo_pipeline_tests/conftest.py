"""Shared fixtures: a small simulated tenant and helpers to call the simulator in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, asgi_transport, create_app

SIM_KEY = "sk_test_sim-7c1d2e3f4a5b"
SIM_BASE_URL = "http://heymilo.sim"
# ~5 postings of 3-5k candidates: big enough for bulk ingests larger than a page, fast to build.
SIM_SPEC = TenantSpec(seed=11, postings=5, candidates_per_posting=(3000, 5000))

SimGet = Callable[..., httpx.Response]


@pytest.fixture(scope="session")
def sim_tenant() -> Tenant:
    """Shared and read-only: tests that move the clock build their own tenant."""
    return Tenant(SIM_SPEC)


@pytest.fixture
def sim_app(sim_tenant: Tenant) -> Starlette:
    return create_app(sim_tenant, SIM_KEY)


async def sim_requests(app: Starlette, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Run (method, path, httpx kwargs) calls in order through the in-process transport."""
    async with httpx.AsyncClient(transport=asgi_transport(app), base_url=SIM_BASE_URL) as client:
        return [await client.request(method, path, **kwargs) for method, path, kwargs in calls]


def make_get(app: Starlette) -> SimGet:
    def get(
        path: str, params: dict[str, Any] | None = None, key: str | None = SIM_KEY, **kwargs: Any
    ) -> httpx.Response:
        headers = {"X-API-KEY": key} if key is not None else {}
        headers.update(kwargs.pop("headers", {}))
        return asyncio.run(sim_requests(app, [("GET", path, {"params": params, "headers": headers, **kwargs})]))[0]

    return get


@pytest.fixture
def sim_get(sim_app: Starlette) -> SimGet:
    """``sim_get(path, params, key=...)`` -> httpx.Response from a fresh app over the shared tenant."""
    return make_get(sim_app)


@pytest.fixture
def faulty_get(sim_tenant: Tenant) -> Callable[[Faults], SimGet]:
    return lambda faults: make_get(create_app(sim_tenant, SIM_KEY, faults))
