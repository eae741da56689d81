"""The Faust application: topics, tables and agents, kept thin around the pure functions
in intake, classification, decisions, retry_tiers and health."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import orjson
from faust.types import TP

from app import decisions as d
from app import headers as h
from app import (
    health,
    intake,
    lifecycle,
    lifecycle_counts,
    metrics,
    offset_gaps,
    retry_tiers,
    routing,
    strategies,
    web,
)
from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, codec_from_settings, wait_until_registered
from app.classification import Classification, classify
from app.dead_letters import scan_dead_letters
from app.kafka_config import admin_config, consumer_config
from app.kafka_security import faust_credentials, security_of
from app.lag.monitor import LagMonitor
from app.policy import Policies, load_policies
from app.redaction import install as install_redaction
from app.scenario_events import reported_event
from app.settings import Settings
from app.topic_presence import TopicPresence
from app.topics import load_topic_specs

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}


def now_ms() -> int:
    return int(time.time() * 1000)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def message_record(message: Any) -> intake.RawRecord:
    return intake.RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        key=message.key,
        value=message.value,
        headers=list(message.headers or []),
    )


class Pipeline:
    """Applies decisions: sends the records and lifecycle events they call for."""

    def __init__(self, app: faust.App, settings: Settings, codec: AvroCodec, policies: Policies):
        self.app = app
        self.settings = settings
        self.codec = codec
        self.policies = policies
        self.watch = health.WatchSettings(
            check_interval_ms=settings.health_check_interval_ms,
            window_ms=settings.recovery_watch_ms,
            stale_after_ms=settings.heartbeat_stale_ms,
        )
        topic = settings.topic
        self.events_name = topic("recovery.events")
        self.dlq_name = topic("recovery.dlq")
        self.poison_name = topic("recovery.poison")
        self.commands_name = topic("recovery.incident-commands")
        self.tiers: dict[int, str] = {}
        for spec in load_topic_specs(settings.topics_dir):
            delay = retry_tiers.tier_delay_ms(spec.name)
            if delay is not None:
                self.tiers[delay] = topic(spec.name)
        # Scenario strategies (app/strategies.py), installed by create_app.
        self.strategies: list[strategies.Strategy] = []
        self.topic_presence = TopicPresence(admin_config(settings))

    async def send(self, record: routing.OutRecord) -> None:
        # Straight to the transport producer: the records are bytes already, and Faust's
        # Topic.send layers (channel, serializers, future wrappers) cost more per record
        # than the whole recovery decision. Faust still flushes this producer before it
        # commits offsets, so at-least-once holds.
        await self.app.producer.send(record.topic, record.key, record.value, None, None,
                                     record.headers)

    async def emit(self, event_type: str, incident_id: str, *, step_id: str,
                   **fields: Any) -> None:
        event = lifecycle.lifecycle_event(event_type, incident_id, event_id=step_id, **fields)
        await self.send(routing.OutRecord(self.events_name, incident_id.encode(),
                                          self.codec.encode(lifecycle.SUBJECT, event), None))
        metrics.observe_lifecycle_event(event)
        for strategy in self.strategies:
            await strategy.on_event(self, event)

    # ---- failure reports -----------------------------------------------------------------

    async def on_failure(self, record: intake.RawRecord, incidents: Any) -> None:
        # A registry that cannot answer holds this record (retried, logged), never poisons it.
        await self.codec.wait_for_writer(record.value, log)
        received = intake.receive(record, self.codec)
        if isinstance(received, intake.Quarantined):
            log.warning("poison %s[%d]@%d: %s", record.topic, record.partition, record.offset,
                        received.reason)
            await self.send(routing.OutRecord(self.poison_name, received.key, received.value,
                                              received.headers))
            return
        event, incident_id = received.event, received.incident_id
        error = event["error"]
        classification = classify(self.policies.rules, kind=event["kind"],
                                  error_type=error["type"], reported_severity=error["severity"])
        target = routing.dispatch_target_of(event)
        occurred = event["occurred_at"]
        occurred_ms = int(occurred.timestamp() * 1000) if hasattr(occurred, "timestamp") \
            else int(occurred)
        report = d.Report(event["event_id"], occurred_ms, classification,
                          can_redeliver=bool(event.get("failed_record") and target),
                          consumer_group=event["source"]["consumer_group"],
                          dispatch_target=target)
        before = d.Incident.from_json(incidents.get(incident_id), incident_id)
        owner = strategies.owner_of(self.strategies, event)
        if owner is not None:
            await self.emit_received(event, before, classification.as_record())
            await owner.handle(strategies.StrategyContext(
                self, event, record, before, classification, None, incidents))
            return
        decision = d.decide(before, report, self.policies.retry_for(classification.type))
        if isinstance(decision, d.Duplicate):
            # Processed before a crash: the state was saved, the outputs may not have been.
            # Send them again; their ids are deterministic, so readers see one outcome.
            again = d.replayed(before, report.event_id)
            if again is not None:
                await self.apply(event, record, again[0], classification, again[1], incidents)
            return
        incident = d.record_report(before, report, decision, now_ms())
        incidents[incident_id] = incident.to_json()
        await self.apply(event, record, incident, classification, decision, incidents)

    async def emit_received(self, event: dict[str, Any], incident: d.Incident,
                            cls: dict[str, str]) -> None:
        incident_id, event_id = incident.incident_id, event["event_id"]
        common = {"failure_event_id": event_id, "classification": cls,
                  "attempt": incident.attempts}
        await self.emit(lifecycle.FAILURE_RECEIVED, incident_id, step_id=f"{event_id}:received",
                        payload={"kind": event["kind"], "errorType": event["error"]["type"],
                                 "service": event["source"]["service"]}, **common)
        payload = scenario_payload(event, cls)
        for strategy in self.strategies:
            payload.update(strategy.reported_fields(event))
        await self.emit(reported_event(event["kind"]), incident_id,
                        step_id=f"{event_id}:classified", payload=payload, **common)

    async def apply(self, event: dict[str, Any], record: intake.RawRecord, incident: d.Incident,
                    classification: Classification, decision: d.Decision,
                    incidents: Any = None) -> None:
        """Sends what a decision calls for. Runs again, unchanged, for a report redelivered
        after a crash, so everything here (strategies included) must be idempotent."""
        incident_id, event_id = incident.incident_id, event["event_id"]
        cls = classification.as_record()
        common = {"failure_event_id": event_id, "classification": cls,
                  "attempt": incident.attempts}
        await self.emit_received(event, incident, cls)
        ctx = strategies.StrategyContext(self, event, record, incident, classification,
                                         decision, incidents)
        original = routing.original_of(event, record)
        headers = routing.context(event, original, incident, classification)
        handled = False
        for strategy in self.strategies:
            handled = await strategy.after_decision(ctx) or handled
        match decision:
            case d.Retry(retry_number=n, delay_ms=delay):
                due = now_ms() + delay
                tier = retry_tiers.tier_for(delay, list(self.tiers))
                await self.send(routing.moved(self.tiers[tier], original, {
                    **headers, h.RETRY_DUE: due, h.DISPATCH_TARGET: incident.dispatch_target}))
                await self.emit(lifecycle.RETRY_SCHEDULED, incident_id,
                                step_id=f"{event_id}:retry-{n}",
                                payload={"retry": n, "delayMs": delay, "dueAt": due,
                                         "target": incident.dispatch_target}, **common)
            case d.Poison(reason=reason):
                await self.send(routing.moved(self.poison_name, original,
                                              {**headers, h.REASON: reason}))
                await self.emit(lifecycle.POISONED, incident_id, step_id=f"{event_id}:poisoned",
                                outcome="poisoned", payload={"reason": reason}, **common)
            case d.DeadLetter(reason=reason):
                await self.send(routing.moved(self.dlq_name, original,
                                              {**headers, h.REASON: reason}))
                await self.emit(lifecycle.DEAD_LETTERED, incident_id,
                                step_id=f"{event_id}:dead-lettered", outcome="dead_lettered",
                                payload={"reason": reason, "nextRetryMs": 30_000}, **common)
            case d.Escalate(reason=reason) | d.AlternativeRoute(reason=reason) if not handled:
                await self.emit(lifecycle.ESCALATED, incident_id, step_id=f"{event_id}:escalated",
                                outcome="escalated",
                                payload={"reason": reason,
                                         "recommendedAction": recommended_action(classification)},
                                **common)
        for strategy in self.strategies:
            await strategy.after_apply(ctx)

    # ---- commands: acknowledgements and dead-letter replays ------------------------------

    async def on_command(self, record: intake.RawRecord, incidents: Any) -> None:
        command = h.header_value(record.headers, h.COMMAND)
        incident_id = (record.key or b"").decode(errors="replace")
        incident = d.Incident.from_json(incidents.get(incident_id), incident_id)
        if command == "ack":
            done, duration = d.acknowledge(incident, now_ms())
            if duration is None:
                return
            incidents[incident_id] = done.to_json()
            await self.emit(lifecycle.RECOVERY_COMPLETED, incident_id,
                            step_id=f"{incident_id}:{done.cycle}:completed",
                            attempt=done.attempts, outcome="completed", duration_ms=duration,
                            classification=done.classification,
                            payload={"attemptsRequired": done.attempts,
                                     "replayId": h.header_value(record.headers, h.REPLAY_ID)})
            for strategy in self.strategies:
                await strategy.on_completed(self, done)
        elif command == "replay":
            if incident.state != "dead_lettered":
                return  # already replayed or reopened: a replay is delivered once
            target = h.header_value(record.headers, h.DISPATCH_TARGET) or incident.dispatch_target
            if not target:
                return
            replay_id = h.header_value(record.headers, h.REPLAY_ID)
            incidents[incident_id] = incident.step(now_ms(), "replayed", state="retrying").to_json()
            await self.send(routing.redelivery(
                target, h.header_bytes(record.headers, h.ORIGINAL_KEY), record.value,
                record.headers, **{h.REPLAY_ID: replay_id}))
            await self.emit(lifecycle.REDELIVERED, incident_id,
                            step_id=f"{incident_id}:replay:{replay_id}",
                            attempt=incident.attempts,
                            payload={"target": target, "replayId": replay_id,
                                     "fromDeadLetter": True})
        else:
            log.warning("ignoring unknown command %r for %s", command, incident_id)

    # ---- retry tiers ---------------------------------------------------------------------

    async def on_retry(self, tier_ms: int, record: intake.RawRecord, health_table: Any) -> None:
        due = h.header_int(record.headers, h.RETRY_DUE) or 0
        enqueued = record.timestamp_ms or now_ms()
        wait = retry_tiers.wake_at(enqueued, tier_ms, due) - now_ms()
        if wait > 0:
            await asyncio.sleep(wait / 1000)
        group = h.header_value(record.headers, h.CONSUMER_GROUP)
        state = health.ConsumerHealth.from_json(health_table.get(group), group) if group else None
        step = retry_tiers.plan(due, now_ms(), health.is_healthy(state, now_ms(), self.watch),
                                list(self.tiers), self.settings.hold_retry_ms)
        incident_id = h.header_value(record.headers, h.INCIDENT_ID) or ""
        attempt = h.header_int(record.headers, h.ATTEMPT) or 0
        match step:
            case retry_tiers.Park(tier_ms=tier, due_ms=due_at):
                await self.send(routing.forwarded(self.tiers[tier], record.key, record.value,
                                                  record.headers, **{h.RETRY_DUE: due_at}))
            case retry_tiers.Hold(tier_ms=tier, due_ms=due_at):
                first_hold = h.header_value(record.headers, h.HELD) is None
                await self.send(routing.forwarded(self.tiers[tier], record.key, record.value,
                                                  record.headers,
                                                  **{h.RETRY_DUE: due_at, h.HELD: "1"}))
                if first_hold:
                    await self.emit("recovery/retry_held", incident_id,
                                    step_id=f"{incident_id}:held-{attempt}", attempt=attempt,
                                    payload={"consumerGroup": group, "nextCheckAt": due_at})
            case retry_tiers.Dispatch():
                target = h.header_value(record.headers, h.DISPATCH_TARGET)
                if not target:
                    log.error("retry for %s has no dispatch target; dropped to DLQ", incident_id)
                    await self.send(routing.forwarded(self.dlq_name, record.key, record.value,
                                                      record.headers,
                                                      **{h.REASON: "no dispatch target"}))
                    return
                if not await self.topic_presence.exists(target):
                    reason = f"dispatch target topic {target} does not exist"
                    log.error("retry for %s: %s; sent to the DLQ", incident_id, reason)
                    await self.send(routing.forwarded(self.dlq_name, record.key, record.value,
                                                      record.headers, **{h.REASON: reason}))
                    await self.emit(lifecycle.DEAD_LETTERED, incident_id,
                                    step_id=f"{incident_id}:dead-lettered-{attempt}",
                                    attempt=attempt, outcome="dead_lettered",
                                    payload={"reason": reason, "target": target})
                    return
                await self.send(routing.redelivery(target, record.key, record.value,
                                                   record.headers))
                await self.emit(lifecycle.REDELIVERED, incident_id,
                                step_id=f"{incident_id}:redelivered-{attempt}", attempt=attempt,
                                payload={"target": target, "lateMs": now_ms() - due})

    # ---- consumer health -----------------------------------------------------------------

    async def on_heartbeat(self, record: intake.RawRecord, health_table: Any) -> None:
        try:
            beat = orjson.loads(record.value or b"")
            group = str(beat["group"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.send(routing.OutRecord(self.poison_name, record.key, record.value,
                                              h.with_context(record.headers, {
                                                  h.ORIGINAL_TOPIC: record.topic,
                                                  h.ORIGINAL_PARTITION: record.partition,
                                                  h.ORIGINAL_OFFSET: record.offset,
                                                  h.REASON: "malformed heartbeat"})))
            return
        current = health.ConsumerHealth.from_json(health_table.get(group), group)
        if beat.get("watch"):
            # A watch started on purpose (Scenario 4, after a restart in safe mode).
            health_table[group] = health.start_watch(
                current, group, now_ms(), reason=str(beat["watch"]),
                control_id=beat.get("control_id"), incident_id=beat.get("incident_id")).to_json()
            return
        if beat.get("check"):
            if current is None:
                return
            outcome = health.check(current, now_ms(), self.watch)
            health_table[group] = outcome.health.to_json()
            if outcome.event_type:
                await self.emit(outcome.event_type, f"consumer:{group}",
                                step_id=f"consumer:{group}:{outcome.event_type}:{now_ms()}",
                                outcome="escalated" if outcome.event_type == health.ESCALATED
                                else None,
                                payload={"consumerId": group,
                                         "healthMetrics": outcome.health.to_json()})
                for strategy in self.strategies:
                    await strategy.on_watch_outcome(self, group, current, outcome)
            if outcome.replay_dead_letters:
                await self.replay_dead_letters(group)
            return
        updated = health.on_heartbeat(current, group, str(beat.get("status", health.HEALTHY)),
                                      int(beat.get("events_processed", 0)), now_ms(),
                                      control_id=beat.get("control_id"))
        health_table[group] = updated.to_json()

    async def replay_dead_letters(self, group: str) -> None:
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            None, scan_dead_letters, self.settings, self.dlq_name, group)
        for dead in found:
            incident_id = h.header_value(dead.headers, h.INCIDENT_ID)
            if not incident_id:
                continue
            await self.send(routing.OutRecord(
                self.commands_name, incident_id.encode(), dead.value,
                h.with_context(dead.headers, {
                    h.COMMAND: "replay", h.ORIGINAL_KEY: dead.key,
                    h.REPLAY_ID: f"{dead.partition}:{dead.offset}"})))


def scenario_payload(event: dict[str, Any], classification: dict[str, str]) -> dict[str, Any]:
    detail = event.get("detail")
    fields = dict(detail[1]) if isinstance(detail, tuple) else {}
    return {"errorType": event["error"]["type"], "message": event["error"]["message"],
            "classification": classification, **fields}


def recommended_action(classification: Classification) -> str:
    if classification.category == "security":
        return "check the credentials of the failing connection; retrying cannot help"
    if classification.category == "configuration":
        return "fix the configuration named in the error, then replay the dead letters"
    return "inspect the incident history and the dead-letter topic; replay when fixed"


def max_message_bytes(specs: Any, default: int = 1_000_000) -> int:
    """The largest max.message.bytes among the topic definitions (at least the default)."""
    return max([default, *(int(spec.config["max.message.bytes"]) for spec in specs
                           if "max.message.bytes" in spec.config)])


def create_app(settings: Settings, *, replication_factor: int = 1) -> faust.App:
    specs = {spec.name: spec for spec in load_topic_specs(settings.topics_dir)}
    catalog = SchemaCatalog.load(settings.schemas_dir)
    codec = codec_from_settings(catalog, settings.schema_registry_url,
                                subject_strategy=settings.schema_subject_strategy,
                                topic_prefix=settings.topic_prefix)
    wait_until_registered(codec, [intake.FAILURE_SUBJECT, lifecycle.SUBJECT], log)
    policies = load_policies(settings.policy_file)
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    # TLS/SASL for Faust's aiokafka clients; secrets masked in every log line.
    install_redaction(settings)
    credentials = faust_credentials(security_of(settings))
    app = faust.App(
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
    )
    pipeline = Pipeline(app, settings, codec, policies)
    pipeline.strategies = strategies.install_all(app, pipeline)
    # Values are plain JSON documents (Incident.to_json, ConsumerHealth.to_json).
    json_values = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    incidents = app.Table("incidents", default=None, schema=json_values)
    # Lifecycle-event counts for the metrics, by the input partition that caused them
    # (app/lifecycle_counts.py); only the agents below write them, after each record.
    table_partitions = specs["recovery.failures"].partitions
    copartitioned = {settings.topic(name) for name, spec in specs.items()
                     if spec.partitions == table_partitions}
    counted_topics = {settings.topic("recovery.failures"), pipeline.commands_name,
                      settings.topic("recovery.heartbeats"), *pipeline.tiers.values()}
    counts = lifecycle_counts.install(
        app, app.Table("lifecycle-counts", default=None, schema=json_values),
        counted_topics & copartitioned)
    consumer_health = app.GlobalTable("consumer-health", default=None, schema=json_values)
    incident_inputs = app.topic(settings.topic("recovery.failures"), pipeline.commands_name,
                                allow_empty=True, **RAW)
    heartbeats = app.topic(settings.topic("recovery.heartbeats"), allow_empty=True, **RAW)

    # Input records Faust let pass without handing them over are read again (app/offset_gaps);
    # the group is the worker's own, for its committed offsets (the readers never commit).
    gap_reader_config = consumer_config(settings, settings.app_id)
    committed = offset_gaps.CommittedOffsets(gap_reader_config)

    def generation() -> int:
        return app.consumer_generation_id

    def assignment() -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in app.consumer.assignment()}

    async def mark_done(topic: str, partition: int, start: int, end: int) -> None:
        # Faust's own record of offsets to count as done (it keeps compaction gaps there).
        await app.consumer._add_gap(TP(topic, partition), start, end - 1)

    async def on_incident_input(record: intake.RawRecord) -> None:
        if record.topic == pipeline.commands_name:
            await pipeline.on_command(record, incidents)
        else:
            await pipeline.on_failure(record, incidents)

    def skipped_records() -> offset_gaps.SkippedRecords:
        return offset_gaps.SkippedRecords(gap_reader_config, generation, assignment,
                                          mark_done, committed)

    incident_skipped = skipped_records()

    @app.agent(incident_inputs, name="incidents")
    async def incident_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await incident_skipped.handle(message_record(event.message), on_incident_input)
            counts.flush()

    for tier_ms, tier_topic in sorted(pipeline.tiers.items()):
        register_tier_agent(app, pipeline, tier_ms, tier_topic, consumer_health, counts,
                            skipped_records())

    @app.agent(heartbeats, name="consumer-health")
    async def health_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await pipeline.on_heartbeat(message_record(event.message), consumer_health)
            counts.flush()

    @app.timer(settings.health_check_interval_ms / 1000, on_leader=True)
    async def health_checks() -> None:
        # Table writes need a stream event, so the check travels through the heartbeat
        # topic and the health agent makes it in the group's own partition.
        for group in list(consumer_health.keys()):
            await heartbeats.send(key=group.encode(),
                                  value=orjson.dumps({"group": group, "check": True}))

    # Consumer lag, Prometheus metrics and the overview page (app/lag, app/metrics, app/web).
    lag_monitor = LagMonitor(settings)
    metrics.register_lag(lambda: lag_monitor.view)
    web.install(app, lag_monitor)
    if settings.lag_interval_s > 0:
        @app.timer(settings.lag_interval_s)
        async def collect_lag() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, lag_monitor.refresh)
            except Exception as exc:  # the next tick tries again; the page shows the last view
                log.warning("lag snapshot failed: %s", exc)

    app.lag_monitor = lag_monitor  # type: ignore[attr-defined]
    app.recovery_pipeline = pipeline  # type: ignore[attr-defined]
    return app


def register_tier_agent(app: faust.App, pipeline: Pipeline, tier_ms: int, topic_name: str,
                        consumer_health: Any, counts: lifecycle_counts.TableCounts,
                        skipped: offset_gaps.SkippedRecords) -> None:
    topic = app.topic(topic_name, allow_empty=True, **RAW)

    async def on_retry(record: intake.RawRecord) -> None:
        await pipeline.on_retry(tier_ms, record, consumer_health)

    async def tier_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await skipped.handle(message_record(event.message), on_retry)
            counts.flush()

    app.agent(topic, name=f"retry-{tier_ms}ms")(tier_agent)
