"""A newcomer's first look: produce a few failure events and one malformed record, then
print what the worker did with them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from app.avro.catalog import SchemaCatalog
from app.avro.codec import DecodeError, codec_from_settings
from app.failure_events import SUBJECT, new_failure_event
from app.headers import REASON, header_value
from app.kafka_config import producer_config
from app.lifecycle import SUBJECT as LIFECYCLE_SUBJECT
from app.settings import Settings

SAMPLES = [
    ("MCP_CONNECTION_LOST", "network_timeout", ("McpConnectionLost", {"server_id": "mcp-1"})),
    ("MCP_CONNECTION_LOST", "authentication_failure",
     ("McpConnectionLost", {"server_id": "mcp-2"})),
    ("EVENT_DELIVERY_FAILED", "consumer_unavailable",
     ("EventDeliveryFailed", {"cause": "CONSUMER_UNAVAILABLE", "failed_consumers": ["billing"]})),
    ("CONSUMER_CRASHED", "handler_exception", ("ConsumerCrashed", {"consumer_id": "billing-1"})),
    ("CACHE_CORRUPTED", "data_inconsistency",
     ("CacheCorrupted", {"cache_key": "user:42", "corruption_type": "DATA_INCONSISTENCY"})),
]


def _end_offsets(consumer: Consumer, topic: str) -> list[TopicPartition]:
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = []
    for p in metadata.topics[topic].partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        partitions.append(TopicPartition(topic, p, high))
    return partitions


def run_demo(
    settings: Settings, *, count: int, follow: bool, timeout: float, echo: Callable[[str], None]
) -> None:
    codec = codec_from_settings(SchemaCatalog.load(Path(settings.schemas_dir)),
                                settings.schema_registry_url)
    events_topic = settings.topic("recovery.events")
    poison_topic = settings.topic("recovery.poison")
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"recovery-demo-{uuid.uuid4()}",
        "enable.auto.commit": False,
    })
    consumer.assign(_end_offsets(consumer, events_topic) + _end_offsets(consumer, poison_topic))

    producer = Producer(producer_config(settings))
    failures_topic = settings.topic("recovery.failures")
    for i in range(count):
        kind, error_type, detail = SAMPLES[i % len(SAMPLES)]
        event = new_failure_event(kind=kind, error_type=error_type, service="demo",
                                  message=f"demo failure {i + 1}", detail=detail,
                                  work_item_id=f"demo-{uuid.uuid4().hex[:8]}")
        producer.produce(failures_topic, key=event["work_item_id"].encode(),
                         value=codec.encode(SUBJECT, event))
        echo(f"produced {kind}/{error_type} as {event['work_item_id']}")
    producer.produce(failures_topic, key=b"demo-malformed", value=b"this is not Avro")
    echo("produced one malformed record (it should land in the poison topic)")
    producer.flush(10)
    if not follow:
        consumer.close()
        return

    deadline = time.monotonic() + timeout
    seen_poison = False
    seen_events = 0
    while time.monotonic() < deadline and (seen_events < count or not seen_poison):
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        if message.topic() == poison_topic:
            seen_poison = True
            echo(f"poison: {header_value(message.headers() or [], REASON)}")
            continue
        try:
            event = codec.decode(message.value(), LIFECYCLE_SUBJECT)
        except DecodeError as exc:
            echo(f"unreadable lifecycle event: {exc}")
            continue
        seen_events += 1
        echo(f"{event['event_type']:32} incident={event['incident_id']} "
             f"attempt={event['attempt']} {event['payload_json']}")
    consumer.close()
    if seen_events < count or not seen_poison:
        raise SystemExit(f"demo: saw {seen_events}/{count} lifecycle events and "
                         f"{'a' if seen_poison else 'no'} poison record within {timeout:.0f}s; "
                         "is the worker running?")
