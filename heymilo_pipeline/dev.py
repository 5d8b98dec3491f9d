"""`make dev`: the simulator plus `dagster dev` (webserver and daemon) on 127.0.0.1, same DAGSTER_HOME as the demo.

The UI then shows the asset graph, the posting x day partitions, the checks, the schedule and the
sensor; materializing and backfilling from the UI fetch from the simulator. Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from heymilo_pipeline.demo import DEMO_DAYS, DEMO_KEY, demo_faults, demo_tenant, prepare_environment


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--port", type=int, default=3000, show_default=True, help="Port of the Dagster UI.")
@click.option("--days", type=int, default=DEMO_DAYS, show_default=True)
def main(data_dir: Path, port: int, days: int) -> None:
    """Start the simulator and `dagster dev`; stop both on Ctrl-C."""
    from heymilo_pipeline.simulator import create_app, serve_in_thread

    tenant, first, _ = demo_tenant(days)
    with serve_in_thread(create_app(tenant, DEMO_KEY, demo_faults())) as base_url:
        env = {**os.environ, **prepare_environment(data_dir, base_url, first.isoformat())}
        click.echo(f"Simulator on {base_url}; Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops both)")
        command = [sys.executable, "-m", "dagster", "dev", "-m", "heymilo_pipeline.definitions", "-h", "127.0.0.1",
                   "-p", str(port)]  # fmt: skip
        process = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)  # dagster dev stops its webserver and daemon on SIGINT
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":  # pragma: no cover
    main()
