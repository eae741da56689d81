"""`recovery worker`: the Faust worker, until stopped."""

from __future__ import annotations

import click

from app.cli.common import cluster_size
from app.settings import get_settings


@click.command("worker")
@click.option("--loglevel", default=None, help="Worker log level (default RECOVERY_LOG_LEVEL).")
def worker(loglevel: str | None) -> None:
    """Run the recovery worker (Faust) until stopped."""
    import faust

    from app.worker.app import create_app

    settings = get_settings()
    replication = min(3, cluster_size())
    app = create_app(settings, replication_factor=replication)
    worker = faust.Worker(app, loglevel=loglevel or settings.log_level)
    # Faust's terminal spinner puts the root logger at DEBUG (to spin on every record) when
    # the level is WARN or above: every library's debug line is then built and dropped, which
    # cost a third of the worker's time. No spinner, and the level given is the level used.
    worker.spinner = None
    # Before the group join: a changelog the group leader cannot see yet left the worker in
    # its group with no assignment (app/changelogs.py).
    from app.kafka.changelogs import ensure_changelogs

    ensure_changelogs(app, settings)
    worker.execute_from_commandline()
