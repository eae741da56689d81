"""A newcomer's first look: produce a few failure events and one malformed record, then
print what the worker did with them."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import click
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from app.avro.catalog import SchemaCatalog
from app.avro.codec import DecodeError, codec_from_settings
from app.contracts.failure_event import SUBJECT, new_failure_event
from app.contracts.headers import REASON, header_value
from app.contracts.lifecycle import SUBJECT as LIFECYCLE_SUBJECT
from app.kafka.config import admin_config, consumer_config, producer_config
from app.settings import Settings, get_settings

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
        partitions.append(TopicPartition(topic, p, _high_watermark(consumer, topic, p)))
    return partitions


def _high_watermark(consumer: Consumer, topic: str, partition: int, wait: float = 30) -> int:
    # Right after `topics apply` a partition may have no leader yet: ask again for a while.
    deadline = time.monotonic() + wait
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class DemoService:
    """A service consuming `demo.orders` through the client API's consumer wrapper; its
    handler fails twice on `order-1`, so the worker retries it (1 s, 2 s) and the incident
    ends in recovery_completed."""

    def __init__(self, settings: Settings, echo: Callable[[str], None]):
        from app.client import RecoveringConsumer
        from app.client.consumer import ensure_topic

        self.group = settings.topic("demo.billing")
        self.topic = settings.topic("demo.orders")
        self.echo = echo
        self.calls: dict[bytes, int] = {}
        ensure_topic(settings.kafka_bootstrap_servers, self.topic,
                     admin_settings=admin_config(settings))
        self.consumer = RecoveringConsumer(self.group, [self.topic], service="demo-billing",
                                           settings=settings, heartbeat_interval=2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.handle,),
                                       kwargs={"until": self.stop.is_set}, daemon=True)

    def handle(self, message: Message) -> None:
        key = message.key() or b""
        self.calls[key] = self.calls.get(key, 0) + 1
        if key == b"order-1" and self.calls[key] <= 2:
            self.echo(f"service: {key.decode()} failed (attempt {self.calls[key]})")
            raise RuntimeError("payment gateway timed out")
        self.echo(f"service: {key.decode()} handled (attempt {self.calls[key]})")

    def start(self, producer: Producer) -> None:
        self.thread.start()
        for key in (b"order-1", b"order-2"):
            producer.produce(self.topic, key=key, value=b'{"amount": 42}')
        self.echo(f"produced order-1 and order-2 to {self.topic}; the service fails order-1 "
                  "twice")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


def run_demo(
    settings: Settings, *, count: int, follow: bool, timeout: float, echo: Callable[[str], None]
) -> None:
    codec = codec_from_settings(SchemaCatalog.load(Path(settings.schemas_dir)),
                                settings.schema_registry_url)
    events_topic = settings.topic("recovery.events")
    poison_topic = settings.topic("recovery.poison")
    consumer = Consumer(consumer_config(settings, f"recovery-demo-{uuid.uuid4()}"))
    consumer.assign(_end_offsets(consumer, events_topic) + _end_offsets(consumer, poison_topic))

    producer = Producer(producer_config(settings))
    failures_topic = settings.topic("recovery.failures")
    expected: set[str] = set()
    for i in range(count):
        kind, error_type, detail = SAMPLES[i % len(SAMPLES)]
        event = new_failure_event(kind=kind, error_type=error_type, service="demo",
                                  message=f"demo failure {i + 1}", detail=detail,
                                  work_item_id=f"demo-{uuid.uuid4().hex[:8]}")
        producer.produce(failures_topic, key=event["work_item_id"].encode(),
                         value=codec.encode(SUBJECT, event))
        expected.add(event["work_item_id"])
        echo(f"produced {kind}/{error_type} as {event['work_item_id']}")
    producer.produce(failures_topic, key=b"demo-malformed", value=b"this is not Avro")
    echo("produced one malformed record (it should land in the poison topic)")
    service = DemoService(settings, echo) if follow else None
    if service:
        service.start(producer)
    producer.flush(10)
    if not follow or service is None:
        consumer.close()
        return

    deadline = time.monotonic() + timeout
    seen_poison = False
    outcomes: dict[str, str] = {}
    service_completed = False
    try:
        while time.monotonic() < deadline and not (
                seen_poison and expected <= outcomes.keys() and service_completed):
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            if message.topic() == poison_topic:
                seen_poison = seen_poison or message.key() == b"demo-malformed"
                echo(f"poison: {header_value(message.headers() or [], REASON)}")
                continue
            try:
                event = codec.decode(message.value(), LIFECYCLE_SUBJECT)
            except DecodeError as exc:
                echo(f"unreadable lifecycle event: {exc}")
                continue
            incident = event["incident_id"]
            if event["outcome"]:
                outcomes[incident] = event["outcome"]
                if incident.startswith(service.group) and event["outcome"] == "completed":
                    service_completed = True
            echo(f"{event['event_type']:32} incident={incident} "
                 f"attempt={event['attempt']} {event['payload_json']}")
    finally:
        service.close()
        consumer.close()
    missing = sorted(expected - outcomes.keys())
    echo("")
    echo(f"outcomes: {len(outcomes)} incidents ended ("
         + ", ".join(f"{n} {o}" for o, n in sorted(Counter(outcomes.values()).items()))
         + ")")
    if missing or not seen_poison or not service_completed:
        raise SystemExit(
            f"demo: within {timeout:.0f}s, {len(missing)} of the reported incidents had no "
            f"outcome, {'a' if seen_poison else 'no'} poison record was seen, and the "
            f"service's retried order {'did' if service_completed else 'did not'} complete; "
            "is the worker running?")


@click.command("demo")
@click.option("--count", default=5, show_default=True, help="Failure events to produce.")
@click.option("--follow/--no-follow", default=True, help="Print lifecycle events as they come.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for events.")
def demo(count: int, follow: bool, timeout: float) -> None:
    """Produce sample failure events (and one malformed record) and show the recovery steps."""
    run_demo(get_settings(), count=count, follow=follow, timeout=timeout, echo=click.echo)
