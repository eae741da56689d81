"""`recovery schemas lock|check|push`: the Avro schemas in schemas/, and a registry
(app/avro/registry_ops.py does the registry calls)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from app.cli.common import UsageFailure
from app.settings import get_settings


@click.group()
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
