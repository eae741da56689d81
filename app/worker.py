"""The Faust application: topics, tables and agents, kept thin around the pure functions."""

from __future__ import annotations

import logging
from typing import Any

import faust

from app import intake, lifecycle
from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, codec_from_settings
from app.settings import Settings
from app.topics import load_topic_specs

log = logging.getLogger(__name__)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def create_app(settings: Settings, *, replication_factor: int = 1) -> faust.App:
    specs = {spec.name: spec for spec in load_topic_specs(settings.topics_dir)}
    catalog = SchemaCatalog.load(settings.schemas_dir)
    codec = codec_from_settings(catalog, settings.schema_registry_url)
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers),
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
        autodiscover=False,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    failures = app.topic(settings.topic("recovery.failures"), allow_empty=True, **raw)
    events = app.topic(settings.topic("recovery.events"), **raw)
    poison = app.topic(settings.topic("recovery.poison"), allow_empty=True, **raw)
    # Failure reports seen per incident (keyed like the intake topic: by work item).
    reports = app.Table("incident-reports", default=int, key_type=str, value_type=int)

    async def emit(event: dict[str, Any]) -> None:
        await events.send(
            key=event["incident_id"].encode(),
            value=codec.encode(lifecycle.SUBJECT, event),
        )

    @app.agent(failures, name="intake")
    async def intake_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            record = intake.RawRecord(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
                key=message.key,
                value=message.value,
                headers=list(message.headers or []),
            )
            await handle_failure(record, codec, reports, emit, poison)

    app.recovery_codec = codec  # type: ignore[attr-defined]
    return app


async def handle_failure(
    record: intake.RawRecord,
    codec: AvroCodec,
    reports: Any,
    emit: Any,
    poison: faust.TopicT,
) -> None:
    outcome = intake.receive(record, codec)
    if isinstance(outcome, intake.Quarantined):
        log.warning("poison %s[%d]@%d: %s", record.topic, record.partition, record.offset,
                    outcome.reason)
        await poison.send(key=outcome.key, value=outcome.value, headers=outcome.headers)
        return
    reports[outcome.incident_id] += 1
    await emit(
        lifecycle.lifecycle_event(
            lifecycle.FAILURE_RECEIVED,
            outcome.incident_id,
            failure_event_id=outcome.event["event_id"],
            attempt=reports[outcome.incident_id],
            payload={
                "kind": outcome.event["kind"],
                "errorType": outcome.event["error"]["type"],
                "service": outcome.event["source"]["service"],
            },
            event_id=f"{outcome.event['event_id']}:received",
        )
    )
