"""`recovery` command line: worker, topics, schemas, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from app.settings import get_settings


class UsageFailure(click.ClickException):
    """An error the user can fix; printed as one plain line, exit code 2."""

    exit_code = 2


def _admin():
    from confluent_kafka.admin import AdminClient

    from app.kafka_config import admin_config

    return AdminClient(admin_config(get_settings()))


def cluster_size(timeout: float = 30) -> int:
    # One plain line when the cluster cannot be reached or refuses the credentials.
    from app.kafka_check import ClusterUnreachable
    from app.kafka_check import cluster_size as reachable_brokers

    try:
        return reachable_brokers(get_settings(), timeout)
    except ClusterUnreachable as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="kafka-recovery")
def cli() -> None:
    """Kafka-native failure-recovery service."""


@cli.command()
@click.option("--loglevel", default=None, help="Worker log level (default RECOVERY_LOG_LEVEL).")
def worker(loglevel: str | None) -> None:
    """Run the recovery worker (Faust) until stopped."""
    import faust

    from app.worker import create_app

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
    from app.changelogs import ensure_changelogs

    ensure_changelogs(app, settings)
    worker.execute_from_commandline()


@cli.group()
def topics() -> None:
    """Topic definitions in topics/."""


@topics.command("apply")
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
def topics_apply(dry_run: bool) -> None:
    """Create missing topics and align configs; never deletes; reports drift."""
    from app.topics import apply_topics, load_topic_specs

    settings = get_settings()
    specs = [s.prefixed(settings.topic_prefix) for s in load_topic_specs(settings.topics_dir)]
    cluster_size()
    report = apply_topics(_admin(), specs, dry_run=dry_run)
    for line in report.lines():
        click.echo(line, err=line.startswith("warning"))


@topics.command("list")
def topics_list() -> None:
    """Print the topic definitions."""
    from app.topics import load_topic_specs

    settings = get_settings()
    for spec in load_topic_specs(settings.topics_dir):
        configs = ", ".join(f"{k}={v}" for k, v in sorted(spec.config.items()))
        click.echo(f"{settings.topic(spec.name)}\t{spec.partitions}x{spec.replication_factor}\t"
                   f"{configs}")


@cli.group()
def schemas() -> None:
    """Avro schemas in schemas/."""


@schemas.command("lock")
def schemas_lock() -> None:
    """Give new schema versions stable ids in schemas/schemas.lock.json."""
    from app.avro.catalog import CatalogError, write_lock

    try:
        lock = write_lock(get_settings().schemas_dir)
    except CatalogError as exc:
        raise UsageFailure(str(exc)) from exc
    for entry in lock["schemas"]:
        click.echo(f"{entry['subject']} v{entry['version']}: id {entry['id']}")


@schemas.command("push")
def schemas_push() -> None:
    """Register every version in schemas/ with the registry at SCHEMA_REGISTRY_URL, each
    subject with its compatibility mode; exit 1 when the registry refuses one."""
    from app.avro import registry_ops
    from app.avro.catalog import CatalogError, SchemaCatalog
    from app.avro.codec import SchemaRegistryUnavailable

    settings = get_settings()
    if not settings.schema_registry_url:
        raise UsageFailure("SCHEMA_REGISTRY_URL is not set: which registry to push to?")
    try:
        catalog = SchemaCatalog.load(settings.schemas_dir)
        for line in registry_ops.push(catalog, settings.schema_registry_url,
                                      settings.schema_subject_strategy, settings.topic_prefix):
            click.echo(line)
    except registry_ops.RegistryOpsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (CatalogError, SchemaRegistryUnavailable, ValueError) as exc:
        raise UsageFailure(str(exc)) from exc


@schemas.command("check")
@click.argument("schema_file", type=click.Path(path_type=Path))
@click.option("--subject", required=True, help="Subject the proposed schema would join.")
@click.option("--mode", default=None, help="Override the subject's compatibility mode.")
@click.option("--registry", is_flag=True,
              help="Ask the registry at SCHEMA_REGISTRY_URL instead (its mode for the subject).")
def schemas_check(schema_file: Path, subject: str, mode: str | None, registry: bool) -> None:
    """Check a proposed schema against its subject's versions; exit 1 when incompatible."""
    from app.avro.catalog import CatalogError, SchemaCatalog, read_schema_file
    from app.avro.compat import CompatibilityMode, check_compatibility

    try:
        catalog = SchemaCatalog.load(get_settings().schemas_dir)
        existing = catalog.subject(subject)
        proposed = read_schema_file(schema_file)
        chosen = CompatibilityMode(mode or existing.compatibility)
    except (CatalogError, ValueError) as exc:
        raise UsageFailure(str(exc)) from exc
    if registry:
        _check_with_registry(proposed, subject, catalog, mode)
        return
    problems = check_compatibility(proposed, [v.schema for v in existing.versions], chosen)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        sys.exit(1)
    click.echo(f"compatible with {subject} ({chosen.value}, {len(existing.versions)} versions)")


def _check_with_registry(proposed, subject: str, catalog, mode: str | None) -> None:
    from app.avro import registry_ops
    from app.avro.codec import SchemaRegistryUnavailable

    settings = get_settings()
    if not settings.schema_registry_url:
        raise UsageFailure("--registry needs SCHEMA_REGISTRY_URL")
    if mode:
        raise UsageFailure("--mode cannot be combined with --registry: the registry applies "
                           "the mode it holds for the subject")
    try:
        result = registry_ops.check(proposed, subject, catalog, settings.schema_registry_url,
                                    settings.schema_subject_strategy, settings.topic_prefix)
    except registry_ops.RegistryOpsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (SchemaRegistryUnavailable, ValueError) as exc:
        raise UsageFailure(str(exc)) from exc
    where = f"{result.registry_subject} in the registry ({result.compatibility or 'its mode'})"
    if not result.compatible:
        click.echo(f"incompatible with {where}: {result.reason or 'no reason given'}")
        sys.exit(1)
    click.echo(f"compatible with {where}")


@cli.command()
@click.argument("source", type=click.File("r"), default="-")
def produce(source) -> None:
    """Send failure events from JSON lines (a file or stdin), validating each line first.
    A bad line gets one error naming it and is not sent; the rest are."""
    from confluent_kafka import Producer

    from app.avro.catalog import SchemaCatalog
    from app.avro.codec import codec_from_settings
    from app.kafka_config import producer_config
    from app.produce import encode_lines

    settings = get_settings()
    codec = codec_from_settings(SchemaCatalog.load(settings.schemas_dir),
                                settings.schema_registry_url)
    cluster_size()  # a refused password is one plain line, not a 30 s delivery timeout
    producer = Producer(producer_config(settings))
    topic = settings.topic("recovery.failures")
    sent = bad = 0
    for number, record, error in encode_lines(source, codec):
        if error is not None:
            bad += 1
            click.echo(f"line {number}: {error}", err=True)
            continue
        producer.produce(topic, key=record[0], value=record[1])
        producer.poll(0)
        sent += 1
    if producer.flush(30):
        raise click.ClickException("some events were not delivered within 30 s")
    click.echo(f"sent {sent} failure events to {topic}" + (f", {bad} bad lines" if bad else ""))
    if bad:
        sys.exit(1)


@cli.command()
@click.option("--count", default=5, show_default=True, help="Failure events to produce.")
@click.option("--follow/--no-follow", default=True, help="Print lifecycle events as they come.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for events.")
def demo(count: int, follow: bool, timeout: float) -> None:
    """Produce sample failure events (and one malformed record) and show the recovery steps."""
    from app.demo import run_demo

    run_demo(get_settings(), count=count, follow=follow, timeout=timeout, echo=click.echo)


from app.cli_lag import lag as lag_command  # noqa: E402  (recovery lag)

cli.add_command(lag_command)

from app.cli_replay import replay as replay_command  # noqa: E402  (recovery replay)

cli.add_command(replay_command)


from app.cli_objects import objects as objects_command  # noqa: E402  (recovery objects)

cli.add_command(objects_command)


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
