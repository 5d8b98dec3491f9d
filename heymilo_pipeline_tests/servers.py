"""Throwaway servers the multi-host tests start themselves: a PostgreSQL cluster in a temporary directory on a
free loopback port, torn down after. Where a binary is missing they fail saying what to install; they never
skip, so a machine without PostgreSQL cannot pass the tests that need it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_MISSING = (
    "PostgreSQL's server programs (initdb, pg_ctl) are not on PATH. These tests start their own throwaway server: "
    "install PostgreSQL 14 or later (Debian/Ubuntu: apt-get install postgresql, then add /usr/lib/postgresql/<v>/bin "
    "to PATH; macOS: brew install postgresql@16) and run them again."
)
# initdb refuses to run as root; a root test run starts the server as this user instead.
SERVER_USER = "postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh PostgreSQL cluster; yields the URL of its ``postgres`` database (user ``heymilo``, no password)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError(POSTGRES_MISSING)
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="heymilo-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise RuntimeError(f"as root, the tests start PostgreSQL as user {SERVER_USER!r}: create it") from None
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", SERVER_USER, "--"]
    data, port = root / "data", free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"

    def run(*command: str | Path) -> None:
        subprocess.run([*as_user, *map(str, command)], check=True, capture_output=True, cwd=root)

    try:
        try:
            run(initdb, "-D", data, "-A", "trust", "-U", "heymilo", "-E", "UTF8", "--no-sync")
            run(pg_ctl, "-D", data, "-l", root / "server.log", "-o", options, "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as exc:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode()[-2000:]}{log[-2000:]}") from None
        try:
            yield f"postgresql://heymilo@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sqlalchemy_url(url: str) -> str:
    """``url`` as Dagster's storage takes it: SQLAlchemy's bare postgresql:// would look for psycopg 3, which
    dagster-postgres does not bring (the rate budget takes this form too)."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def new_database(url: str, name: str) -> str:
    """A new empty database on the server of ``url``; returns its URL."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return url.rsplit("/", 1)[0] + f"/{name}"
