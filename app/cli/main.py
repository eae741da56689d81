"""`recovery`: the command group; each verb lives in its own module beside this one."""

from __future__ import annotations

import json
import sys

import click

from app.cli.acls import acls
from app.cli.demo import demo
from app.cli.lag import lag
from app.cli.objects import objects
from app.cli.produce import produce
from app.cli.replay import replay
from app.cli.schemas import schemas
from app.cli.topics import topics
from app.cli.worker import worker


@click.group()
@click.version_option(package_name="kafka-recovery")
def cli() -> None:
    """Kafka-native failure-recovery service."""


for verb in (worker, topics, schemas, produce, demo, lag, replay, objects, acls):
    cli.add_command(verb)


def main() -> None:
    from app.avro.codec import SchemaRegistryRefused, SchemaRegistryUnavailable

    try:
        cli(standalone_mode=True)
    except json.JSONDecodeError as exc:  # pragma: no cover - defensive: one plain line
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (SchemaRegistryUnavailable, SchemaRegistryRefused) as exc:
        # produce, demo: a registry that is down or refuses is one line, not a traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
