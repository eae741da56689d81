"""`recovery worker`: the Faust worker, until stopped."""

from __future__ import annotations

import click

from app.cli.common import UsageFailure, cluster_size
from app.settings import get_settings


@click.command("worker")
@click.option("--loglevel", default=None, help="Worker log level (default RECOVERY_LOG_LEVEL).")
def worker(loglevel: str | None) -> None:
    """Run the recovery worker (Faust) until stopped."""
    from app.worker.app import create_app
    from app.worker.shutdown import worker_with_deadline
    from app.worker.web.access import AccessMisconfigured, config_of

    settings = get_settings()
    try:
        config_of(settings)  # a bad web token is one plain line, before any broker is asked
    except AccessMisconfigured as exc:
        raise UsageFailure(str(exc)) from None
    replication = min(3, cluster_size())
    app = create_app(settings, replication_factor=replication)
    # SIGTERM/SIGINT: exit within RECOVERY_SHUTDOWN_TIMEOUT_S even with no broker answering;
    # a second signal exits at once (app/worker/shutdown.py).
    worker = worker_with_deadline(app, settings.shutdown_timeout_s,
                                  loglevel or settings.log_level)
    # Faust's terminal spinner puts the root logger at DEBUG (to spin on every record) when
    # the level is WARN or above: every library's debug line is then built and dropped, which
    # cost a third of the worker's time. No spinner, and the level given is the level used.
    worker.spinner = None
    # Before the group join: a changelog the group leader cannot see yet left the worker in
    # its group with no assignment (app/kafka/changelogs.py).
    from app.kafka.changelogs import ChangelogsRefused, ensure_changelogs

    try:
        ensure_changelogs(app, settings)
    except ChangelogsRefused as exc:
        raise click.ClickException(str(exc)) from None
    # Tables a killed worker left ahead of their changelogs are restored from them instead
    # (app/worker/table_state.py).
    from pathlib import Path

    from app.worker.table_state import tables_in_use

    with tables_in_use(Path(app.conf.tabledir)):
        worker.execute_from_commandline()
