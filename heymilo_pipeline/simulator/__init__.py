"""Deterministic simulator of the HeyMilo Public API for tests, benchmarks and local runs."""

from .app import create_app
from .faults import Faults
from .server import serve_in_thread
from .tenant import Tenant, TenantSpec
from .transport import asgi_transport

__all__ = ["Faults", "Tenant", "TenantSpec", "asgi_transport", "create_app", "serve_in_thread"]
