"""Running the simulator on a real loopback socket with uvicorn."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.types import ASGIApp

from .faults import ConnectionDropped


class _HideSimulatedDrops(logging.Filter):
    """uvicorn logs every exception escaping the app; a simulated drop is intended, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def quiet_uvicorn() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideSimulatedDrops) for f in logger.filters):
        logger.addFilter(_HideSimulatedDrops())


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so the real port is known (port 0) before uvicorn starts serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(app: ASGIApp) -> uvicorn.Server:
    # A bounded graceful shutdown: a stalled response (stall fault) must not hold the server open.
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    quiet_uvicorn()  # after Config: it (re)configures uvicorn's loggers
    return server


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` from a background thread; yields the base URL once /health answers."""
    sock = bind_socket(host, port)
    url = base_url(host, sock.getsockname()[1])
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="heymilo-sim", daemon=True)
    thread.start()
    try:
        wait_healthy(url, thread.is_alive, timeout_s)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


def wait_healthy(url: str, alive: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``url``/health until it answers 200; fail when ``alive()`` turns false or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # trust_env=False: a proxy from the environment must not intercept loopback traffic.
            if httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"simulator did not become healthy at {url}")
        time.sleep(0.02)
