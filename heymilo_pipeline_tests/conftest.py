"""Shared fixtures: a small simulated tenant and helpers to call the simulator in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from starlette.applications import Starlette

from heymilo_pipeline.devservers import S3Server, postgres_server, s3_server
from heymilo_pipeline.simulator import Faults, Tenant, TenantSpec, create_app
from heymilo_pipeline_tests.factories import SIM_KEY, SimGet, make_get

# ~5 postings of 3-5k candidates: big enough for bulk ingests larger than a page, fast to build.
SIM_SPEC = TenantSpec(seed=11, postings=5, candidates_per_posting=(3000, 5000))


@pytest.fixture(scope="session")
def sim_tenant() -> Tenant:
    """Shared and read-only: tests that move the clock build their own tenant."""
    return Tenant(SIM_SPEC)


@pytest.fixture
def sim_app(sim_tenant: Tenant) -> Starlette:
    return create_app(sim_tenant, SIM_KEY)


@pytest.fixture
def sim_get(sim_app: Starlette) -> SimGet:
    """``sim_get(path, params, key=...)`` -> httpx.Response from a fresh app over the shared tenant."""
    return make_get(sim_app)


@pytest.fixture
def faulty_get(sim_tenant: Tenant) -> Callable[[Faults], SimGet]:
    return lambda faults: make_get(create_app(sim_tenant, SIM_KEY, faults))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (fails, saying what to install, where there is none)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A throwaway S3 server (moto) with one bucket, for the session."""
    with s3_server() as server:
        yield server
