"""Local stand-ins for the production profile's services, for the tests and the benchmarks (bench/run.py): a
throwaway PostgreSQL cluster in a temporary directory on a free loopback port, and moto's S3 server on another,
each torn down after. Where a program is missing they fail saying what to install; they never skip, so a machine
without them cannot pass the tests that need them.

Development only: the pipeline never imports this module. It needs PostgreSQL's server programs (initdb, pg_ctl)
on PATH, psycopg2 (the production extra) for ``new_database`` and moto's server with boto3 (the test extra) for
``s3_server``; each is looked up or imported only when the function that needs it runs."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POSTGRES_MISSING = (
    "PostgreSQL's server programs (initdb, pg_ctl) are not on PATH. The tests and benchmarks that need PostgreSQL "
    "start their own throwaway server: install PostgreSQL 14 or later (Debian/Ubuntu: apt-get install postgresql, "
    "then add /usr/lib/postgresql/<v>/bin to PATH; macOS: brew install postgresql@16) and run them again."
)
S3_MISSING = (
    "moto's S3 server (the moto_server command) is not installed next to this Python. The tests and benchmarks of "
    "the shared tables start their own throwaway S3: pip install 'moto[server]' (the test extra has it) and run "
    "them again."
)
# Credentials moto accepts (any): what clients of the S3 server get as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
S3_KEY_ID, S3_SECRET = "heymilo-test", "heymilo-test-secret"
# initdb refuses to run as root; run as root, the server is started as this user instead.
SERVER_USER = "postgres"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
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
            raise RuntimeError(f"as root, PostgreSQL is started as user {SERVER_USER!r}: create it") from None
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


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str

    def environ(self) -> dict[str, str]:
        """AWS's usual variables for a client of this server."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key of the bucket under ``prefix``."""
        return sorted(o["Key"] for page in self._client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ) for o in page.get("Contents", []))  # fmt: skip

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )


@contextmanager
def s3_server(bucket: str = "heymilo-lake") -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, with one empty bucket."""
    command = Path(sys.executable).parent / "moto_server"
    if not command.is_file():
        raise RuntimeError(S3_MISSING)
    port = free_port()
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen([command, "-H", "127.0.0.1", "-p", str(port)], stdout=output, stderr=subprocess.STDOUT)
        try:
            server = S3Server(f"http://127.0.0.1:{port}", bucket)
            deadline = time.monotonic() + 30
            while True:
                try:
                    server._client().create_bucket(Bucket=bucket)
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        output.seek(0)
                        raise RuntimeError(f"moto's S3 server did not start: {output.read()[-2000:]!r}") from None
                    time.sleep(0.1)
            yield server
        finally:
            proc.terminate()
            proc.wait(timeout=10)
