"""A failure event produced with confluent-kafka goes through a real worker process and
comes back as a lifecycle event; undecodable input lands in poison and the worker goes on."""

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, LockedSchemaIds
from app.contracts.failure_event import new_failure_event
from app.contracts.headers import ORIGINAL_TOPIC, REASON, header_value

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def read_all(bootstrap: str, topics: list[str], want: int, timeout: float) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(topics)
    found = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < want and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                found.append(message)
    finally:
        consumer.close()
    return found


def test_failure_event_through_worker_to_lifecycle_event(
    applied_topics: dict[str, str], worker_factory, topic_prefix: str, kafka_bootstrap: str
) -> None:
    codec = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    failures = f"{topic_prefix}recovery.failures"
    first = new_failure_event(kind="MCP_CONNECTION_LOST", error_type="network_timeout",
                              service="agent", work_item_id="work-1",
                              detail=("McpConnectionLost", {"server_id": "mcp-a"}))
    second = new_failure_event(kind="CACHE_CORRUPTED", error_type="serialization_error",
                               service="cache", work_item_id="work-2")
    producer.produce(failures, key=b"work-1", value=codec.encode("failure-event", first))
    producer.produce(failures, key=b"bad", value=b"\x00\x00\x00\x00\x63 not a record",
                     headers=[("trace", b"t-1")])
    producer.produce(failures, key=b"work-2", value=codec.encode("failure-event", second))
    assert producer.flush(10) == 0

    worker = worker_factory()
    events_topic = f"{topic_prefix}recovery.events"
    poison_topic = f"{topic_prefix}recovery.poison"
    messages = read_all(kafka_bootstrap, [events_topic, poison_topic], want=7, timeout=120)
    assert len(messages) >= 7, worker.log_tail()

    lifecycle = [codec.decode(m.value(), "lifecycle-event")
                 for m in messages if m.topic() == events_topic]
    by_incident: dict[str, list[str]] = {}
    for event in lifecycle:
        by_incident.setdefault(event["incident_id"], []).append(event["event_type"])
    assert by_incident["work-1"][:2] == ["recovery/failure_received",
                                         "communication/mcp_connection_lost"]
    assert by_incident["work-2"][:2] == ["recovery/failure_received",
                                         "communication/cache_corrupted"]
    received = [e for e in lifecycle if e["event_type"] == "recovery/failure_received"]
    assert {e["failure_event_id"] for e in received} == {first["event_id"], second["event_id"]}
    mcp = [e for e in lifecycle if e["event_type"] == "communication/mcp_connection_lost"][0]
    assert mcp["classification"] == {"severity": "ERROR", "category": "transient",
                                     "type": "network_timeout", "recoverability": "recoverable"}

    [poisoned] = [m for m in messages if m.topic() == poison_topic]
    assert poisoned.key() == b"bad"
    assert poisoned.value() == b"\x00\x00\x00\x00\x63 not a record"
    headers = poisoned.headers()
    assert headers[0] == ("trace", b"t-1")
    assert header_value(headers, ORIGINAL_TOPIC) == failures
    assert "unknown schema id 99" in header_value(headers, REASON)
    assert worker.proc.poll() is None, "the worker must go on after poison"
