"""`recovery replay`: send dead letters back, selected by original topic, consumer group,
error type, time range, key or header, to their original topic, their consumer's redelivery
topic or a named topic. Dry run, rate limit, progress bar, resumable by name."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import click

from app.cli.common import UsageFailure
from app.settings import get_settings


def _usage(message: str) -> click.ClickException:
    """One plain line, exit 2."""
    return UsageFailure(message)


class OneLineCommand(click.Command):
    """Bad flags and values end in one plain line (exit 2), not click's usage block."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _usage(exc.format_message()) from exc


@click.command(cls=OneLineCommand)
@click.option("--topic", "topics", multiple=True, metavar="TOPIC",
              help="Only dead letters first consumed from this topic (repeatable).")
@click.option("--group", "groups", multiple=True, metavar="GROUP",
              help="Only dead letters of this consumer group (repeatable).")
@click.option("--error-type", "error_types", multiple=True, metavar="TYPE",
              help="Only dead letters with this error type (repeatable).")
@click.option("--since", metavar="TIME",
              help="Dead-lettered at or after TIME: ISO-8601 (UTC if no zone) or -2h, -30m, -1d.")
@click.option("--until", metavar="TIME", help="Dead-lettered before TIME (same forms).")
@click.option("--key", "keys", multiple=True, metavar="KEY",
              help="Only records with this key (UTF-8; repeatable).")
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE",
              help="Only records whose header NAME has VALUE (repeatable; all must hold).")
@click.option("--to", "to", type=click.Choice(["original", "redelivery", "incident"]),
              default=None,
              help="Send to each record's original topic, to its consumer's redelivery topic "
                   "(the default), or through the worker as its incident's replay command "
                   "(the consumer's acknowledgement then completes the incident).")
@click.option("--to-topic", metavar="TOPIC", help="Send everything to this topic instead.")
@click.option("--dlq", metavar="TOPIC",
              help="The dead-letter topic to read (default: the service's recovery.dlq).")
@click.option("--dry-run", is_flag=True, help="Print what would be sent, per original topic, "
              "group and error type; send nothing.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="N",
              help="At most N records per second.")
@click.option("--name", metavar="NAME", help="Replay name under which progress is kept "
              "(default: derived from the options, so the same command resumes).")
@click.option("--restart", is_flag=True,
              help="Ignore stored progress and replay the selection again from the start.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: only when stderr is a terminal).")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Processes sharing the dead-letter partitions (default: one per partition "
                   "with records left, up to 4, for 100,000 records or more; else one).")
def replay(topics: tuple[str, ...], groups: tuple[str, ...], error_types: tuple[str, ...],
           since: str | None, until: str | None, keys: tuple[str, ...],
           headers: tuple[str, ...], to: str | None, to_topic: str | None, dlq: str | None,
           dry_run: bool, rate: float | None, name: str | None, restart: bool,
           show_progress: bool | None, workers: int | None) -> None:
    """Replay dead letters. Never writes to, deletes from or alters the dead-letter topic.

    Each replayed record carries a replay id derived from its place in the dead-letter topic,
    so the client API delivers a dead letter replayed twice once. Progress is kept in Kafka
    under the replay's name: after Ctrl-C or a crash, the same command goes on where it
    stopped; once complete, it sends nothing more."""
    from app.replay import progress as pg
    from app.replay.selection import SelectionError, build_selection, describe
    from app.replay.targets import INCIDENT, ORIGINAL, REDELIVERY, TOPIC, Target

    if to and to_topic:
        raise _usage("use either --to or --to-topic, not both")
    if to_topic:
        target = Target(TOPIC, to_topic)
    elif to == "incident":
        target = Target(INCIDENT, get_settings().topic("recovery.incident-commands"))
    else:
        target = Target(ORIGINAL if to == "original" else REDELIVERY)
    try:
        selection = build_selection(topics=topics, groups=groups, error_types=error_types,
                                    keys=keys, headers=headers, since=since, until=until,
                                    now_ms=int(time.time() * 1000))
    except SelectionError as exc:
        raise _usage(str(exc)) from exc
    settings = get_settings()
    dlq_topic = dlq or settings.topic("recovery.dlq")
    options = {"dlq": dlq_topic, "topic": list(topics), "group": list(groups),
               "error_type": list(error_types), "key": list(keys), "header": list(headers),
               "since": since, "until": until,
               "to": f"topic:{to_topic}" if to_topic else target.kind}
    fingerprint = pg.fingerprint(options)
    name = name or pg.default_name(fingerprint)
    run = _Run(settings, dry_run=dry_run)
    try:
        run.check_topics(dlq_topic, topics, to_topic)
        stored = None if restart else run.load(name)
        progress = pg.resumable(stored, name, fingerprint)
    except pg.ProgressMismatch as exc:
        raise _usage(str(exc)) from exc
    if progress is not None and progress.state == pg.DONE:
        run.close()
        if progress.matched == 0:
            raise _usage(_no_match(progress))
        click.echo(f"replay {name} is already complete: {progress.sent} sent "
                   f"(--restart replays the selection again)")
        return
    if progress is None:
        progress = run.start(name, fingerprint, options, dlq_topic, selection)
        if progress.total == 0:
            run.close()
            raise _usage(f"no dead letters match: {dlq_topic} has no records "
                               f"in the selected range")
    else:
        # a resumed replay keeps the times resolved when it started (-2h then, not now)
        selection = replace(selection, since_ms=progress.since_ms, until_ms=progress.until_ms)
    show = _show_progress(show_progress)
    if show:
        verb = "dry run of" if dry_run else ("resuming" if progress.scanned else "replay")
        click.echo(f"{verb} {name}: {describe(selection)} -> {target.describe()}; "
                   f"{progress.remaining} of {progress.total} dead letters to read"
                   + (f", {progress.sent} sent before" if progress.sent else ""), err=True)
    outcome = run.replay(progress, target, selection, rate, show, workers)
    run.report(outcome, target, name)


def _show_progress(choice: bool | None) -> bool:
    return sys.stderr.isatty() if choice is None else choice


def _no_match(progress: Any) -> str:
    return f"no dead letters match the selection ({progress.scanned} read from " \
           f"{progress.dlq_topic})"


class _Run:
    """The Kafka side of one command: clients, checks, the engine and the report."""

    def __init__(self, settings: Any, *, dry_run: bool):
        from confluent_kafka import KafkaException

        from app.replay.engine import make_consumer, make_producer
        from app.replay.store import ProgressStore

        self.settings = settings
        self.dry_run = dry_run
        self.errors: list[str] = []
        self.consumer: Any = make_consumer(settings)
        try:
            self.consumer.list_topics(timeout=15)
        except KafkaException as exc:
            raise click.ClickException(
                f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from exc
        # made when sending starts: an idempotent producer starts talking to the cluster at
        # once, and a check failing before then should print nothing but its one line
        self.producer: Any = None
        self.make_producer = make_producer
        self.store = ProgressStore(settings, None)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.producer is not None:
            self.producer.flush(30)

    def _exists(self, topic: str) -> bool:
        from app.replay.store import topic_partitions

        return topic_partitions(self.consumer, topic) is not None

    def check_topics(self, dlq_topic: str, topics: tuple[str, ...], to_topic: str | None) -> None:
        if not self._exists(dlq_topic):
            self.close()
            raise _usage(f"unknown topic {dlq_topic} (the dead-letter topic; "
                               "`recovery topics apply` creates it)")
        for topic in [*topics, *([to_topic] if to_topic else [])]:
            if not self._exists(topic):
                self.close()
                raise _usage(f"unknown topic {topic}")
        if not self.dry_run and not self.store.exists(self.consumer):
            self.close()
            raise _usage(f"unknown topic {self.store.topic} (keeps replay progress; "
                               "`recovery topics apply` creates it)")

    def load(self, name: str) -> Any:
        if not self.store.exists(self.consumer):
            return None
        return self.store.load(name)

    def start(self, name: str, fingerprint: str, options: dict[str, Any], dlq_topic: str,
              selection: Any) -> Any:
        from app.replay import progress as pg
        from app.replay.store import offsets_at, topic_partitions, watermarks

        partitions = topic_partitions(self.consumer, dlq_topic) or []
        low, high = watermarks(self.consumer, dlq_topic, partitions)
        seek = (offsets_at(self.consumer, dlq_topic, partitions, high, selection.since_ms)
                if selection.since_ms is not None else None)
        return pg.start(name, fingerprint, options, dlq_topic, low=low, high=high, seek=seek,
                        since_ms=selection.since_ms, until_ms=selection.until_ms,
                        now_ms=int(time.time() * 1000))

    def replay(self, progress: Any, target: Any, selection: Any, rate: float | None,
               show: bool, workers: int | None) -> Any:
        import os

        from confluent_kafka import KafkaException

        from app.replay.engine import Replay
        from app.replay.parallel import auto_workers, run_parallel
        from app.replay.selection import compile_selection

        remaining = {p: progress.end[p] - n for p, n in progress.to_read().items()}
        if self.dry_run:
            workers = 1
        elif workers is None:
            workers = auto_workers(remaining, os.cpu_count(), rate=rate, dry_run=False)
        parallel = workers > 1 and len(remaining) > 1

        def sending_producer() -> Any:
            self.producer = self.store.producer = self.make_producer(self.settings, self.errors)
            return self.producer

        stop = _StopFlag()
        try:
            with stop.installed(), _progress_bar(show, progress) as on_progress:
                if parallel:
                    # forked workers must not inherit librdkafka's threads: this process's
                    # clients are closed first and its producer made after the fork
                    self.consumer.close()
                    self.consumer = None
                    return run_parallel(self.settings, progress, target, selection, workers,
                                        store=self.store, producer=sending_producer,
                                        rate=rate, stop=stop, on_progress=on_progress)
                if not self.dry_run:
                    sending_producer()
                engine = Replay(consumer=self.consumer, producer=self.producer,
                                store=None if self.dry_run else self.store, progress=progress,
                                target=target, predicate=compile_selection(selection),
                                delivery_errors=self.errors, dry_run=self.dry_run, rate=rate,
                                stop=stop, on_progress=on_progress)
                return engine.run()
        except (KafkaException, RuntimeError) as exc:
            raise click.ClickException(
                f"replay stopped: {exc}; progress is stored up to the last acknowledged "
                "record: run the same command again") from exc
        finally:
            self.close()

    def report(self, outcome: Any, target: Any, name: str) -> None:
        from app.replay.summary import table

        p, run = outcome.progress, outcome.run
        if outcome.delivery_error:
            raise click.ClickException(
                f"delivery failed ({outcome.delivery_error}); progress is stored up to the "
                f"last acknowledged record: run the same command again (--name {name})")
        if self.dry_run:
            if not outcome.interrupted and p.matched == 0:
                raise _usage(_no_match(p))
            missing = self._missing({t for _, _, _, t in outcome.summary} - {"(unroutable)"})
            for line in table(outcome.summary, missing):
                click.echo(line)
            would = p.matched - p.unroutable - sum(
                n for row, n in outcome.summary.items() if row[3] in missing)
            click.echo(f"dry run: {would} of {p.scanned} dead letters read would be sent to "
                       f"{target.describe()}; nothing sent")
            if outcome.interrupted:
                sys.exit(130)
            return
        if not outcome.interrupted and p.matched == 0:
            raise _usage(_no_match(p))
        rate = run.sent / outcome.elapsed_s if outcome.elapsed_s > 0 else 0.0
        click.echo(f"replay {name}: sent {run.sent} to {target.describe()} "
                   f"(read {run.scanned}, matched {run.matched}) in {outcome.elapsed_s:.2f} s, "
                   f"{rate:,.0f} records/s"
                   + (f"; {p.sent} sent in all" if p.sent != run.sent else ""))
        if run.unroutable:
            from app.replay.targets import unroutable_reason

            click.echo(f"warning: {run.unroutable} dead letters not sent: "
                       f"{unroutable_reason(target)}", err=True)
        for topic, count in sorted(outcome.missing.items()):
            click.echo(f"warning: {count} dead letters not sent: topic {topic} does not exist "
                       "(create it, then replay again with --restart)", err=True)
        if outcome.interrupted:
            click.echo(f"interrupted: progress stored; run the same command again to go on "
                       f"(--name {name})", err=True)
            sys.exit(130)
        if run.unroutable or outcome.missing:
            sys.exit(1)

    def _missing(self, topics: set[str]) -> frozenset[str]:
        """Which of these topics the cluster does not have."""
        from app.replay.engine import make_consumer
        from app.replay.store import topic_partitions

        consumer = make_consumer(self.settings)
        try:
            return frozenset(t for t in topics if topic_partitions(consumer, t) is None)
        finally:
            consumer.close()


class _StopFlag:
    """Ctrl-C or SIGTERM asks the replay to stop after the batch in hand; a second Ctrl-C
    stops at once (progress then is the last stored one)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


@contextmanager
def _progress_bar(show: bool, progress: Any) -> Iterator[Any]:
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rec/s" if speed else "- rec/s")

    # no refresh thread (auto_refresh off): redrawn from the replay's own updates, at most
    # ten times a second, and nothing runs beside the loop (or across a fork)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   RateColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=Console(stderr=True, force_terminal=True), auto_refresh=False)
    task = bar.add_task(f"sent {progress.sent}", total=progress.total,
                        completed=progress.scanned)
    drawn = [0.0]

    def update(current: Any) -> None:
        bar.update(task, completed=current.scanned, total=current.total,
                   description=f"sent {current.sent}")
        now = time.monotonic()
        if now - drawn[0] >= 0.1 or current.scanned >= current.total:
            bar.refresh()
            drawn[0] = now

    with bar:
        yield update
