"""What every verb shares: the one-line usage error and the cluster checks."""

from __future__ import annotations

from typing import Any

import click

from app.settings import get_settings


class UsageFailure(click.ClickException):
    """An error the user can fix; printed as one plain line, exit code 2."""

    exit_code = 2


def admin() -> Any:
    from confluent_kafka.admin import AdminClient

    from app.kafka.config import QUIET_LIBRDKAFKA, admin_config

    # Errors reach the user as one plain line from the command; librdkafka's own lines
    # (a purged background queue at exit, a dropped connection) are not for them.
    return AdminClient(admin_config(get_settings(), logger=QUIET_LIBRDKAFKA))


def cluster_size(timeout: float = 30) -> int:
    # One plain line when the cluster cannot be reached or refuses the credentials.
    from app.kafka.check import ClusterUnreachable
    from app.kafka.check import cluster_size as reachable_brokers

    try:
        return reachable_brokers(get_settings(), timeout)
    except ClusterUnreachable as exc:
        raise click.ClickException(str(exc)) from None
