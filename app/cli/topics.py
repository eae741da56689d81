"""`recovery topics apply|list`: the topic definitions in topics/."""

from __future__ import annotations

import click

from app.cli.common import admin, cluster_size
from app.settings import get_settings


@click.group()
def topics() -> None:
    """Topic definitions in topics/."""


@topics.command("apply")
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
def topics_apply(dry_run: bool) -> None:
    """Create missing topics and align configs; never deletes; reports drift."""
    from app.kafka.topics import apply_topics, load_topic_specs

    settings = get_settings()
    specs = [s.prefixed(settings.topic_prefix) for s in load_topic_specs(settings.topics_dir)]
    cluster_size()
    report = apply_topics(admin(), specs, dry_run=dry_run, prefix=settings.topic_prefix)
    for line in report.lines():
        click.echo(line, err=line.startswith(("warning", "refused", "how to migrate")))
    if report.refused:
        raise SystemExit(1)


@topics.command("list")
def topics_list() -> None:
    """Print the topic definitions."""
    from app.kafka.topics import load_topic_specs

    settings = get_settings()
    for spec in load_topic_specs(settings.topics_dir):
        configs = ", ".join(f"{k}={v}" for k, v in sorted(spec.config.items()))
        click.echo(f"{settings.topic(spec.name)}\t{spec.partitions}x{spec.replication_factor}\t"
                   f"{configs}")
