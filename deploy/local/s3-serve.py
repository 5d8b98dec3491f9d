"""An S3 stand-in that keeps its objects across restarts: moto's server, loaded from /data at start and
saved there when the container stops (SIGTERM, as `docker-compose down` sends). moto alone keeps
everything in memory; MinIO, which this replaces on machines that cannot pull it, keeps it on disk."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

ROOT = Path(os.environ.get("S3_DATA_DIR", "/data")) / "objects"
PORT = 9000


def client():
    return boto3.client(
        "s3", endpoint_url=f"http://localhost:{PORT}", aws_access_key_id="local", aws_secret_access_key="local",
        region_name="us-east-1",
    )  # fmt: skip


def load(s3) -> int:
    count = 0
    for bucket in sorted(p for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []:
        s3.create_bucket(Bucket=bucket.name)
        for path in sorted(p for p in bucket.rglob("*") if p.is_file()):
            s3.put_object(Bucket=bucket.name, Key=path.relative_to(bucket).as_posix(), Body=path.read_bytes())
            count += 1
    return count


def save(s3) -> int:
    staging = ROOT.with_name("objects.saving")
    shutil.rmtree(staging, ignore_errors=True)
    count = 0
    for bucket in s3.list_buckets()["Buckets"]:
        (staging / bucket["Name"]).mkdir(parents=True, exist_ok=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for item in page.get("Contents", []):
                target = staging / bucket["Name"] / item["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=bucket["Name"], Key=item["Key"])["Body"].read())
                count += 1
    shutil.rmtree(ROOT, ignore_errors=True)
    staging.rename(ROOT)
    return count


def main() -> None:
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT)
    server.start()
    s3 = client()
    print(f"s3: loaded {load(s3)} object(s) from {ROOT}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    print(f"s3: saved {save(s3)} object(s) to {ROOT}", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
