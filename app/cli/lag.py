"""`recovery lag`: committed offset, end offset, lag, estimated time lag and status of every
consumer group and partition, printed once or again every --interval seconds (--watch)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from app.settings import get_settings

if TYPE_CHECKING:
    from app.lag import LagView


class LagUsageError(click.ClickException):
    """An error the user can fix; printed as one plain line, exit code 2."""

    exit_code = 2


def fmt(value: object, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is not None and isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_lines(view: LagView, *, partitions: bool = True) -> list[str]:
    """The view as aligned text: a line per partition, then a line per group."""
    header = ("GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "TIME-LAG-S", "STATUS")
    rows: list[tuple[str, ...]] = []
    for group in view.groups:
        if partitions:
            rows += [(p.group, p.topic, str(p.partition), str(p.committed), fmt(p.end),
                      fmt(p.lag), fmt(p.time_lag_s, 1), p.status.value)
                     for p in group.partitions]
        rows.append((group.group, "*", f"({group.state})", "", "", str(group.total_lag),
                     fmt(group.max_time_lag_s, 1), group.status.value))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {2, 3, 4, 5, 6}
    return ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in [header, *rows]]


@click.command("lag")
@click.option("--group", "groups", multiple=True, metavar="PATTERN",
              help="Only groups matching this glob (repeatable); default RECOVERY_LAG_GROUPS.")
@click.option("--watch", is_flag=True, help="Print again every --interval seconds.")
@click.option("--interval", default=5.0, show_default=True, type=float,
              help="Seconds between snapshots with --watch.")
@click.option("--count", default=0, type=int,
              help="With --watch: stop after this many snapshots (0 = until Ctrl-C).")
@click.option("--groups-only", is_flag=True, help="One line per group, no partitions.")
@click.option("--timeout", default=10.0, show_default=True, type=float,
              help="Seconds to wait for the cluster.")
def lag(groups: tuple[str, ...], watch: bool, interval: float, count: int, groups_only: bool,
        timeout: float) -> None:
    """Consumer lag per group and partition, with a status per group (OK, WARN, ERR, STOP,
    STALL, REWIND; see docs/lag.md). Time lag and trends need several snapshots: they show
    from the second snapshot of --watch on."""
    if interval <= 0 or timeout <= 0:
        raise LagUsageError("--interval and --timeout must be positive")
    if count < 0:
        raise LagUsageError("--count must not be negative")
    from app.lag import LagCollector, LagError, LagTracker, parse_patterns

    settings = get_settings()
    patterns = list(groups) or parse_patterns(settings.lag_groups)
    collector = LagCollector(settings, timeout=timeout, quiet=True)
    tracker = LagTracker(window=settings.lag_window)
    taken = 0
    try:
        while True:
            started = time.monotonic()
            try:
                view = tracker.observe(collector.snapshot(patterns))
            except LagError as exc:
                raise click.ClickException(str(exc)) from exc
            taken += 1
            if not view.groups:
                if patterns:
                    raise click.ClickException(
                        f"no consumer group matches {', '.join(patterns)}")
                raise click.ClickException("no consumer group on the cluster")
            if watch:
                stamp = time.strftime("%H:%M:%S", time.localtime(view.taken_at_ms / 1000))
                click.echo(f"-- {stamp} (snapshot {taken})")
            for line in table_lines(view, partitions=not groups_only):
                click.echo(line)
            for error in view.errors:
                click.echo(f"warning: {error}", err=True)
            if not watch or (count and taken >= count):
                return
            time.sleep(max(interval - (time.monotonic() - started), 0))
    except KeyboardInterrupt:
        return
