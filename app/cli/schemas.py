"""`recovery schemas lock|check`: the Avro schemas in schemas/."""

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


@schemas.command("check")
@click.argument("schema_file", type=click.Path(path_type=Path))
@click.option("--subject", required=True, help="Subject the proposed schema would join.")
@click.option("--mode", default=None, help="Override the subject's compatibility mode.")
def schemas_check(schema_file: Path, subject: str, mode: str | None) -> None:
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
    problems = check_compatibility(proposed, [v.schema for v in existing.versions], chosen)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        sys.exit(1)
    click.echo(f"compatible with {subject} ({chosen.value}, {len(existing.versions)} versions)")
