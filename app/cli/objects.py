"""`recovery objects collect`: delete claim-check objects older than the retention period
that no record still in the scanned topics refers to (app/oversize/retention.py)."""

from __future__ import annotations

import click

from app.settings import get_settings


@click.group()
def objects() -> None:
    """The claim-check object store of oversized messages."""


@objects.command()
@click.option("--topic", "topics", multiple=True,
              help="A topic whose records may reference objects (repeatable); the service's "
                   "own topics (failures, retries, DLQ, poison) are always scanned.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
def collect(topics: tuple[str, ...], dry_run: bool) -> None:
    """Delete stored objects past RECOVERY_OBJECT_STORE_RETENTION_MS that nothing references."""
    from app.oversize.collector import collect as run_collect
    from app.oversize.collector import default_topics
    from app.oversize.configured import store_from_settings
    from app.oversize.store import StoreError

    settings = get_settings()
    try:
        store = store_from_settings(settings)
        report = run_collect(settings, store, [*topics, *default_topics(settings)],
                             dry_run=dry_run)
    except (StoreError, ValueError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    for key in report.deleted:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {key}")
    plan = report.collection
    click.echo(f"{report.objects} objects in {store.location.describe()}, "
               f"{report.records_scanned} records scanned: {len(report.deleted)} "
               f"{'to delete' if dry_run else 'deleted'}, {plan.kept_referenced} kept "
               f"(referenced), {plan.kept_young} kept (younger than the retention)")
