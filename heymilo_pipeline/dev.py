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

from heymilo_pipeline.api.errors import ConfigurationError
from heymilo_pipeline.definitions import CODE_LOCATION_NAME
from heymilo_pipeline.demo import DEMO_DAYS, DEMO_KEY, demo_faults, demo_tenant, prepare_environment
from heymilo_pipeline.settings import Settings


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--port", type=int, default=3000, show_default=True, help="Port of the Dagster UI.")
@click.option("--days", type=int, default=DEMO_DAYS, show_default=True)
def main(data_dir: Path, port: int, days: int) -> None:
    """Start the simulator and `dagster dev`; stop both on Ctrl-C."""
    from heymilo_pipeline.simulator import create_app, serve_in_thread

    tenant, first, _ = demo_tenant(days)
    data_dir = data_dir.resolve()
    with serve_in_thread(create_app(tenant, DEMO_KEY, demo_faults())) as base_url:
        env = {**os.environ, **prepare_environment(data_dir, base_url, first.isoformat())}
        try:  # the code location would fail to load on a bad setting: say so here, in one line, and start nothing
            Settings.from_env(env)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
        home = Path(env["DAGSTER_HOME"])
        workspace = home / "workspace.yaml"
        workspace.write_text(WORKSPACE)
        click.echo(f"Simulator on {base_url}; Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops both)")
        # `dg dev` with a workspace file: Dagster's own dev server, without `dagster dev`'s deprecation notice.
        dg = Path(sys.executable).parent / "dg"
        command = [str(dg), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
        # Started in DAGSTER_HOME, not the project root: Dagster reads .env from its working directory,
        # and a .env meant for the real API must not point this simulator session at it.
        # SIGTERM and SIGHUP (a closed terminal) end this process the way Ctrl-C does: the handler only
        # interrupts the wait below, so the stopping happens here in the main thread, not inside the
        # interrupted process.wait() (which holds its lock: stopping from the handler deadlocked). SIGINT gets
        # the handler too, before the dev server starts: a process started in the background by a shell or a
        # supervisor may have SIGINT ignored, an ignored signal stays ignored in every child, and Dagster's
        # dev server stops on SIGINT; a handled one is reset to the default in the children.
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), _interrupt)
        process = subprocess.Popen(command, env=env, cwd=home, start_new_session=True)
        try:
            process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            _stop(process)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


WORKSPACE = f"""\
load_from:
  - python_module:
      module_name: heymilo_pipeline.definitions
      location_name: {CODE_LOCATION_NAME}
"""


def _stop(process: subprocess.Popen) -> None:
    """Stop the dev server's whole process group (webserver, daemon, code server); a second signal meanwhile
    (an impatient Ctrl-C) kills it."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)  # Dagster's dev server shuts its webserver and daemon down on SIGINT
    try:
        process.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        click.echo("the dev server did not stop on SIGINT: killed it", err=True)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


if __name__ == "__main__":  # pragma: no cover
    main()
