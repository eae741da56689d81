"""The Faust application: topics, tables, agents and timers, each calling a pipeline stage
(app/pipeline/stages.py). Nothing here decides anything; it moves records in and out."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP, EventT

from app.avro.catalog import SchemaCatalog
from app.avro.codec import codec_from_settings, wait_until_registered
from app.contracts import headers as h
from app.contracts.clock import SYSTEM
from app.contracts.lifecycle import SUBJECT as LIFECYCLE_SUBJECT
from app.contracts.records import OutRecord, RawRecord
from app.kafka.config import admin_config, consumer_config, producer_config
from app.kafka.dead_letters import scan_dead_letters
from app.kafka.outputs import OUTPUT_TUNING, OutputProducer
from app.kafka.presence import TopicPresence
from app.kafka.redaction import install as install_redaction
from app.kafka.security import faust_credentials, security_of
from app.kafka.topics import TopicSpec, copartitioned_names, load_topic_specs
from app.pipeline import health, intake
from app.pipeline.commands import watchdog_command
from app.pipeline.decide import Incident
from app.pipeline.heartbeats import check_record
from app.pipeline.intake import FAILURE_SUBJECT
from app.pipeline.outbox import Outbox
from app.pipeline.services import Services, watch_settings
from app.pipeline.stages import Pipeline
from app.pipeline.strategy import install_all
from app.pipeline.topology import TopicNames
from app.pipeline.watchdog import Wait
from app.policy.loaded import load_policy_set
from app.settings import Settings
from app.worker import (
    commit_fence,
    consumer_state,
    lifecycle_counts,
    metrics,
    offset_gaps,
    stall,
    web,
)
from app.worker.assignor import MetadataTolerantAssignor
from app.worker.batches import BatchRunner
from app.worker.faust_app import RecoveryFaustApp
from app.worker.lag_monitor import LagMonitor
from app.worker.open_incidents import IndexedIncidents
from app.worker.web import access as web_access
from app.worker.web import incidents as web_incidents

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def max_message_bytes(specs: Any, default: int = 1_000_000) -> int:
    """The largest max.message.bytes among the topic definitions (at least the default)."""
    return max([default, *(int(spec.config["max.message.bytes"]) for spec in specs
                           if "max.message.bytes" in spec.config)])


@dataclass
class Recovery:
    """The assembled worker: the Faust app, the pipeline its agents call, the lag monitor."""

    app: faust.App
    pipeline: Pipeline
    lag_monitor: LagMonitor


def create_app(settings: Settings, *, replication_factor: int = 1) -> faust.App:
    return build(settings, replication_factor=replication_factor).app


def faust_app(settings: Settings, specs: dict[str, TopicSpec], replication_factor: int
              ) -> RecoveryFaustApp:
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    # TLS/SASL for Faust's aiokafka clients; secrets masked in every log line.
    install_redaction(settings)
    credentials = faust_credentials(security_of(settings))
    return RecoveryFaustApp(
        settings.app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers),
        broker_credentials=credentials,
        store="rocksdb://",
        datadir=str(settings.data_dir / "faust"),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        # Tables are co-partitioned with the intake topic, so they share its partition count.
        topic_partitions=specs["recovery.failures"].partitions,
        topic_replication_factor=replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee=settings.processing_guarantee,
        # A killed worker's partitions go to its replacement after 10 s, not a minute.
        broker_session_timeout=10.0,
        # Frequent commits keep the work redone after a crash (and its repeated outputs) small.
        broker_commit_every=1000,
        broker_commit_interval=settings.commit_interval_s,
        broker_heartbeat_interval=3.0,
        # A topic the worker subscribes to right after creating it (its changelogs) may not be
        # in the first metadata answer; the default 5-minute refresh left the worker waiting
        # that long. 10 s bounds the wait at a negligible metadata cost.
        consumer_metadata_max_age_ms=10_000,
        # Up to the largest topic limit in topics/ (the poison and dead-letter topics' 8 MB):
        # quarantining an intake record near its topic's 1 MB limit adds context headers, and
        # with Faust's default (1,000,000) the poison send failed, the agent crashed and the
        # record was dropped (tests/integration/test_fuzz_large_input.py).
        producer_max_request_size=max_message_bytes(specs.values()),
        autodiscover=False,
        PartitionAssignor=MetadataTolerantAssignor,
    )


def output_producer(settings: Settings, specs: list[TopicSpec]) -> OutputProducer:
    """The worker's producer for every output (app/kafka/outputs.py), its refusals counted
    in the metrics."""

    def refused(record: OutRecord, error: str) -> None:
        metrics.OUTPUT_DELIVERY_FAILURES.labels(topic=record.topic).inc()

    config = producer_config(settings, **OUTPUT_TUNING,
                             **{"message.max.bytes": max_message_bytes(specs)})
    outputs = OutputProducer(config, on_failure=refused)
    metrics.register_undelivered(lambda: outputs.undelivered)
    return outputs


def services_for(app: faust.App, settings: Settings, specs: list[TopicSpec],
                 consumer_health: Any, outputs: OutputProducer) -> Services:
    codec = codec_from_settings(SchemaCatalog.load(settings.schemas_dir),
                                settings.schema_registry_url,
                                subject_strategy=settings.schema_subject_strategy,
                                topic_prefix=settings.topic_prefix)
    # With a registry: its subjects registered before the group join, waiting while it is down.
    wait_until_registered(codec, [FAILURE_SUBJECT, LIFECYCLE_SUBJECT], log)
    topics = TopicNames.of(settings, specs)
    presence = TopicPresence(admin_config(settings))
    reader_config = consumer_config(settings, settings.app_id)
    watch = watch_settings(settings)

    async def dead_letters_of(group: str) -> list[RawRecord]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, scan_dead_letters, settings, topics.dlq, group)

    reader = offset_gaps.RecordReader(reader_config)

    async def read_record(topic: str, partition: int, offset: int) -> RawRecord | None:
        return await reader.read(topic, partition, offset)

    def consumer_healthy(group: str | None, now_ms: int) -> bool:
        if not group:
            return True
        # The one reading of consumer health for the pipeline (retry tiers, the watchdog).
        state = health.ConsumerHealth.from_json(consumer_health.get(group), group)
        return health.is_healthy(state, now_ms, watch)

    policy = load_policy_set(settings.policy_file)
    return Services(settings=settings, codec=codec, policies=policy.recovery,
                    scenario_policies=policy.scenarios, state_policies=policy.state,
                    topics=topics, watch=watch, clock=SYSTEM,
                    outbox=Outbox(outputs, codec, topics.events, SYSTEM),
                    topic_exists=presence.exists, scan_dead_letters=dead_letters_of,
                    read_record=read_record, consumer_healthy=consumer_healthy,
                    watchdog=policy.watchdog)


def build(settings: Settings, *, replication_factor: int = 1) -> Recovery:
    spec_list = load_topic_specs(settings.topics_dir)
    specs = {spec.name: spec for spec in spec_list}
    app = faust_app(settings, specs, replication_factor)
    # Values are plain JSON documents (Incident.to_json, ConsumerHealth.to_json).
    json_values = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    consumer_health = app.GlobalTable("consumer-health", default=None, schema=json_values)
    outputs = output_producer(settings, spec_list)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    events_topic = settings.topic("recovery.events")

    def stamp(topic: str) -> list[tuple[str, bytes | None]]:
        if topic != events_topic:
            return []
        return [(h.EMITTED_BY, f"{worker}/g{app.consumer_generation_id}".encode())]

    outputs.stamp = stamp
    services = services_for(app, settings, spec_list, consumer_health, outputs)

    async def count_event(event: dict[str, Any]) -> None:
        metrics.observe_lifecycle_event(event)

    services.outbox.observe(count_event)
    strategies = install_all(app, services)

    async def tell_strategies(event: dict[str, Any]) -> None:
        await strategies.on_event(services, event)

    services.outbox.observe(tell_strategies)
    pipeline = Pipeline(services, strategies)
    topics = services.topics
    # The pipeline writes through the index, so the watchdog scans only the open incidents
    # (app/worker/open_incidents.py).
    incidents = IndexedIncidents(
        app.Table("incidents", default=None, schema=json_values),
        generation=lambda: app.consumer_generation_id,
        settled=lambda: not (app.rebalancing or app.in_recovery))
    # Lifecycle-event counts for the metrics, by the input partition that caused them
    # (app/worker/lifecycle_counts.py); only the agents below write them, after each record.
    copartitioned = {settings.topic(name) for name in copartitioned_names(spec_list)}
    counted_topics = {topics.failures, topics.commands, topics.heartbeats,
                      *topics.tiers.values()}
    counts = lifecycle_counts.install(
        app, app.Table("lifecycle-counts", default=None, schema=json_values),
        counted_topics & copartitioned)
    incident_inputs = app.topic(topics.failures, topics.commands, allow_empty=True, **RAW)
    heartbeats = app.topic(topics.heartbeats, allow_empty=True, **RAW)

    # Input records Faust let pass without handing them over are read again (offset_gaps);
    # the group is the worker's own, for its committed offsets (the readers never commit).
    gap_reader_config = consumer_config(settings, settings.app_id)
    committed = offset_gaps.CommittedOffsets(gap_reader_config)

    def generation() -> int:
        return app.consumer_generation_id

    def assignment() -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in app.consumer.assignment()}

    async def mark_done(topic: str, partition: int, start: int, end: int) -> None:
        # Faust's own record of offsets to count as done (it keeps compaction gaps there).
        offset_gaps.merge_gaps_once(app.consumer)
        await app.consumer._add_gap(TP(topic, partition), start, end - 1)

    def earliest(topic: str, partition: int) -> int | None:
        marks = committed.watermarks(topic, partition)
        return marks[0] if marks is not None else None

    def skipped_records() -> offset_gaps.SkippedRecords:
        return offset_gaps.SkippedRecords(gap_reader_config, generation, assignment,
                                          mark_done, committed, earliest)

    incident_skipped = skipped_records()

    async def quarantine(record: RawRecord, reason: str) -> None:
        poisoned = intake.quarantine(record, reason, now_ms=SYSTEM.now_ms())
        await services.send(OutRecord(topics.poison, poisoned.key, poisoned.value,
                                      poisoned.headers))

    # The agents' inputs: Faust commits them for the worker (never the changelogs), and no
    # commit passes a record of theirs the worker has not handled (app/worker/commit_fence.py).
    inputs = {topics.failures, topics.commands, topics.heartbeats, *topics.tiers.values()}
    fence = commit_fence.CommitFence(
        inputs, committed.many, committed.watermarks,
        read_range=lambda topic, partition, start, end: offset_gaps.read_range(
            gap_reader_config, topic, partition, start, end),
        seek=lambda tp, offset: seek_on_consumer_thread(app, tp, offset),
        generation=generation)

    def on_handled(records: list[tuple[str, int, int]]) -> None:
        commit_fence.install(app.consumer, fence)  # before the first ack: once
        fence.handled(records)

    runner = BatchRunner(outputs, quarantine, size=settings.batch_size,
                         wait_s=settings.batch_wait_ms / 1000,
                         finish_bound_s=min(10.0, settings.shutdown_timeout_s / 2),
                         held=[incidents], on_handled=on_handled)

    async def on_incident_input(record: RawRecord) -> None:
        await pipeline.on_incident_input(record, incidents)

    guarded_incident_input = runner.guard(on_incident_input)

    async def incident_record(record: RawRecord) -> None:
        await incident_skipped.handle(record, guarded_incident_input)

    async def incident_batch(events: Sequence[EventT]) -> None:
        await runner.each(events, incident_record, counts.flush)

    @app.agent(incident_inputs, name="incidents")
    async def incident_agent(stream: faust.StreamT) -> None:
        await runner.run(stream, incident_batch)

    if settings.input_stall_s > 0:
        guard = stall_guard(app, incident_skipped, committed, {topics.failures, topics.commands},
                            settings.input_stall_s, outputs)

        @app.timer(max(1.0, settings.input_stall_s / 5))
        async def intake_stall_check() -> None:
            await guard.check()

    if settings.rebalance_bound_s > 0:
        rebalance = rebalance_guard(app, settings.rebalance_bound_s)

        @app.early_timer(max(1.0, settings.rebalance_bound_s / 10))
        async def rebalance_check() -> None:
            await rebalance.check()

    # Faust's view of each input partition's commit against the group's (offset_gaps).
    reconciler = offset_gaps.CommitReconciler(
        lambda: app.consumer, committed.many, inputs=inputs,
        read_again={topics.failures, topics.commands, topics.heartbeats},
        seek=lambda tp, offset: seek_on_consumer_thread(app, tp, offset),
        busy=lambda: incident_skipped.busy, flush=lambda: app.producer.flush(),
        limit=fence.limit)
    metrics.register_commit_repairs(reconciler.repairs)
    metrics.register_commit_repairs(fence.repairs)

    @app.timer(5.0)
    async def commit_check() -> None:
        if app.rebalancing or app.in_recovery:
            return
        await reconciler.check()

    for tier_ms, tier_topic in topics.tiers.items():
        register_tier_agent(app, pipeline, runner, tier_ms, tier_topic, counts,
                            skipped_records())

    async def on_heartbeat(record: RawRecord) -> None:
        await pipeline.heartbeats.on_heartbeat(record, consumer_health)

    heartbeat_record = runner.guard(on_heartbeat)

    async def heartbeat_batch(events: Sequence[EventT]) -> None:
        await runner.each(events, heartbeat_record, counts.flush)

    @app.agent(heartbeats, name="consumer-health")
    async def health_agent(stream: faust.StreamT) -> None:
        await runner.run(stream, heartbeat_batch)

    @app.timer(settings.health_check_interval_ms / 1000, on_leader=True)
    async def health_checks() -> None:
        # Table writes need a stream event, so the check travels through the heartbeat
        # topic and the health agent makes it in the group's own partition.
        for group in list(consumer_health.keys()):
            await heartbeats.send(key=group.encode(), value=check_record(group))

    commands = app.topic(topics.commands, allow_empty=True, **RAW)
    checked = CheckedRecently(max(settings.ack_timeout_ms, 10 * settings.watchdog_interval_ms))
    if settings.watchdog_interval_ms > 0:
        @app.timer(settings.watchdog_interval_ms / 1000)
        async def incident_watchdog() -> None:
            # Table writes need a stream event: an overdue incident gets a watchdog command,
            # which the incident agent decides on in the incident's own partition.
            await watchdog_scan(incidents, pipeline, commands, checked)

    # Consumer lag, Prometheus metrics and the overview page (app/lag, metrics, web).
    lag_monitor = LagMonitor(settings)
    metrics.register_lag(lambda: lag_monitor.view)
    web.install(app, lag_monitor)
    # Who may use the pages (tokens, roles, CSRF) and the incidents pages (docs/console.md).
    web_access.install(app, settings)
    web_incidents.install(app, settings, pipeline, incidents)
    if settings.lag_interval_s > 0:
        @app.timer(settings.lag_interval_s)
        async def collect_lag() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, lag_monitor.refresh)
            except Exception as exc:  # the next tick tries again; the page shows the last view
                log.warning("lag snapshot failed: %s", exc)

    return Recovery(app, pipeline, lag_monitor)


async def seek_on_consumer_thread(app: faust.App, tp: tuple[str, int], offset: int) -> None:
    """Seeks one input partition back so Faust hands the records from `offset` on over again.

    On the consumer's own thread: Faust's Consumer.seek changes aiokafka's fetcher from the
    event loop while the thread's fetch runs, and a fault run's fetcher crashed on that
    (KeyError in Fetcher._records, the worker exited). Then Faust's read offset, as
    Consumer.seek sets it, or Faust would drop the records as read already."""
    thread, partition = app.consumer._thread, TP(*tp)

    async def request() -> None:
        thread._ensure_consumer().seek(partition, offset)

    await asyncio.wait_for(thread.call_thread(request), 15)
    app.consumer._read_offset[partition] = offset


def stall_guard(app: faust.App, skipped: offset_gaps.SkippedRecords,
                committed: offset_gaps.CommittedOffsets, intake: set[str],
                bound_s: float, outputs: OutputProducer) -> stall.StallGuard:
    """The intake agent's stall guard (app/worker/stall.py) over Faust's consumer."""

    def partitions() -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in app.consumer.assignment()
                if tp.topic in intake}

    def counting() -> bool:
        # Not while outputs wait for a resend: the intake is held back on purpose then.
        return not (app.rebalancing or app.in_recovery or skipped.busy
                    or outputs.undelivered)

    async def seek(tp: tuple[str, int], offset: int) -> None:
        await seek_on_consumer_thread(app, tp, offset)

    return stall.StallGuard(
        clock=stall.StallClock(int(bound_s * 1000)), partitions=partitions,
        expected=skipped.expected, committed=committed, watermarks=committed.watermarks,
        counting=counting, handled=lambda: skipped.handled,
        forwarded=lambda tp: app.consumer._read_offset.get(TP(*tp)), seek=seek,
        rejoin=lambda: rejoin_group(app), exit=leave_now,
        state=lambda: consumer_state.consumer_state(app), now_ms=SYSTEM.now_ms)


def rebalance_guard(app: faust.App, bound_s: float) -> stall.RebalanceGuard:
    """The bound on a rebalance of the worker's group (app/worker/stall.py)."""
    return stall.RebalanceGuard(
        clock=stall.RebalanceClock(int(bound_s * 1000)),
        rebalancing=lambda: bool(app.rebalancing and not app.in_recovery),
        rejoin=lambda: rejoin_group(app), exit=leave_now,
        state=lambda: consumer_state.consumer_state(app), now_ms=SYSTEM.now_ms)


async def rejoin_group(app: faust.App) -> None:
    """Asks the group for a rejoin, on Faust's consumer thread (it owns the aiokafka
    client). An error aiokafka's coordinator waits for the consumer to poll is consumed and
    logged first: the coordinator does nothing else until then, and Faust never polls
    without an assignment."""
    thread = app.consumer._thread

    async def request() -> None:
        coordinator = thread._consumer._coordinator
        try:
            coordinator.check_errors()
        except Exception as exc:
            log.error("the group coordinator was waiting for its error to be read: %r", exc)
        coordinator.request_rejoin()

    try:
        await asyncio.wait_for(thread.call_thread(request), 15)
    except Exception as exc:  # the next bound exits instead
        log.error("could not ask the group for a rejoin: %r", exc)


def leave_now(code: int) -> None:
    logging.shutdown()
    os._exit(code)


class CheckedRecently:
    """Incidents a watchdog command was sent for, and when: one is not sent again while the
    last may still be on its way (the incident agent may be behind), so a slow partition is
    not flooded with checks."""

    def __init__(self, quiet_ms: int):
        self.quiet_ms = quiet_ms
        self.sent: dict[str, int] = {}

    def may_send(self, incident_id: str, now_ms: int) -> bool:
        last = self.sent.get(incident_id)
        if last is not None and now_ms - last < self.quiet_ms:
            return False
        self.sent[incident_id] = now_ms
        return True

    def forget_before(self, now_ms: int) -> None:
        self.sent = {k: v for k, v in self.sent.items() if now_ms - v < self.quiet_ms}


async def watchdog_scan(incidents: IndexedIncidents, pipeline: Pipeline, commands: Any,
                        checked: CheckedRecently, *, yield_every: int = 500,
                        max_checks: int = 200) -> None:
    """One pass over the incidents of the partitions this worker holds: the open ones by
    state and age for the metrics and the page, and a watchdog command for each overdue
    (at most max_checks a pass, none for an incident checked within the quiet time)."""
    now = SYSTEM.now_ms()
    checked.forget_before(now)
    sent = 0
    by_state: dict[str, tuple[int, float]] = {}
    for seen, (incident_id, value) in enumerate(incidents.open_items()):
        if seen and seen % yield_every == 0:
            await asyncio.sleep(0)  # a long table must not hold the agents up
        incident = Incident.from_json(value, incident_id)
        count, oldest = by_state.get(incident.state, (0, 0.0))
        by_state[incident.state] = (count + 1, max(oldest, (now - incident.updated_ms) / 1000))
        if sent >= max_checks:
            continue
        # The health read here goes with the command, so the agent decides with it however
        # often it handles the command (app/pipeline/commands.py).
        healthy = pipeline.watchdog.consumer_healthy(incident, now)
        if not isinstance(pipeline.watchdog.decide(incident, now, healthy), Wait) \
                and checked.may_send(incident_id, now):
            key, headers = watchdog_command(incident_id, now, healthy)
            await commands.send(key=key, value=b"", headers=headers)
            metrics.WATCHDOG_CHECKS.inc()
            sent += 1
    metrics.set_open_incidents(by_state)


def register_tier_agent(app: faust.App, pipeline: Pipeline, runner: BatchRunner,
                        tier_ms: int, topic_name: str, counts: lifecycle_counts.TableCounts,
                        skipped: offset_gaps.SkippedRecords) -> None:
    topic = app.topic(topic_name, allow_empty=True, **RAW)

    async def on_retry(record: RawRecord) -> None:
        await pipeline.retries.on_retry(tier_ms, record)

    guarded_retry = runner.guard(on_retry)

    async def retry_record(record: RawRecord) -> None:
        await skipped.handle(record, guarded_retry)

    def due_order(records: list[RawRecord]) -> list[int]:
        return pipeline.retries.batch_order(tier_ms, records)

    async def tier_batch(events: Sequence[EventT]) -> None:
        await runner.each(events, retry_record, counts.flush, due_order)

    async def tier_agent(stream: faust.StreamT) -> None:
        await runner.run(stream, tier_batch)

    app.agent(topic, name=f"retry-{tier_ms}ms")(tier_agent)
