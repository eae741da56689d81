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

    from app.kafka.config import admin_config

    return AdminClient(admin_config(get_settings()))


def cluster_size(timeout: float = 30) -> int:
    # One plain line when the cluster cannot be reached or refuses the credentials.
    from app.kafka.check import ClusterUnreachable
    from app.kafka.check import cluster_size as reachable_brokers

    try:
        return reachable_brokers(get_settings(), timeout)
    except ClusterUnreachable as exc:
        raise click.ClickException(str(exc)) from None
