"""Scenario 3 (message delivery failures: consumer_unavailable, topic_not_found) through a
real broker and a real worker."""

from __future__ import annotations

import shutil
import threading

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from app.client import FailureReporter
from app.client.consumer import ensure_topic, redelivery_topic
from app.contracts import headers as h
from app.kafka.config import consumer_config
from app.scenarios import event_delivery as ev
from app.settings import REPO_ROOT
from tests.conftest import wait_until
from tests.integration.test_pipeline import (
    FAST_HEALTH,
    client_settings,
    health_checks_processed,
    types_for,
)
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration


@pytest.fixture
def delivery_env(applied_topics: dict[str, str], tmp_path) -> dict[str, str]:
    prefix = applied_topics["RECOVERY_TOPIC_PREFIX"]
    policy = tmp_path / "policy.toml"
    # Kept for each consumer at once (not retried first), so the replay on recovery shows.
    policy.write_text(f"""
[retry.consumer_unavailable]
attempts = 0
on_exhausted = "dead_letter"

[scenario.delivery.alternative_delivery]
"{prefix}mailer" = "{prefix}mailer.webhook"
[scenario.delivery.fallback_topics]
"{prefix}invoices" = "{prefix}parking"
""")
    # The service's own topic definitions (topics/ plus one: orders.v2, two partitions).
    topics = tmp_path / "topics"
    topics.mkdir()
    for spec in (REPO_ROOT / "topics").glob("*.toml"):
        shutil.copy(spec, topics / spec.name)
    (topics / "service.toml").write_text(
        '[[topic]]\nname = "orders.v2"\npartitions = 2\nreplication_factor = 1\n'
        '[topic.config]\n"retention.ms" = "3600000"\n')
    applied_topics.update(FAST_HEALTH, RECOVERY_POLICY_FILE=str(policy),
                          RECOVERY_TOPICS_DIR=str(topics), RECOVERY_CREATE_MISSING_TOPICS="1")
    return applied_topics


def test_consumer_unavailable_per_consumer_dead_letters_replayed_on_recovery(
        delivery_env, worker_factory, topic_prefix):
    settings = client_settings(delivery_env)
    bootstrap = settings.kafka_bootstrap_servers
    billing, mailer = f"{topic_prefix}billing", f"{topic_prefix}mailer"
    webhook = f"{topic_prefix}mailer.webhook"
    for topic in (redelivery_topic(billing), redelivery_topic(mailer), webhook):
        ensure_topic(bootstrap, topic, partitions=1)
    worker_factory()
    reporter = FailureReporter(settings)
    # billing was alive, then went down.
    reporter.heartbeat(billing, status="healthy", events_processed=10)
    reporter.heartbeat(billing, status="failed", events_processed=10)
    event = {"topic": f"{topic_prefix}orders", "partition": 0, "offset": 3, "key": b"o-3",
             "value": b'{"order": 3}', "headers": [{"key": "trace", "value": b"t3"}]}
    reporter.report(kind=ev.KIND, error_type="consumer_unavailable", service="bus",
                    work_item_id="evt-1", failed_record=event,
                    detail=("EventDeliveryFailed", {"cause": "CONSUMER_UNAVAILABLE",
                                                    "event_type": "order/created",
                                                    "failed_consumers": [billing, mailer]}))
    reporter.flush()
    codec = locked_codec()
    events_topic = f"{topic_prefix}recovery.events"
    dlq = f"{topic_prefix}recovery.dlq"
    reader = TopicReader(bootstrap, [events_topic, dlq, webhook])

    def events() -> list[dict]:
        return lifecycle(codec, reader.on(events_topic))

    billing_incident, mailer_incident = f"evt-1/{billing}", f"evt-1/{mailer}"
    # The dead letters too: they are sent with the lifecycle events, but the reader may
    # read recovery.events ahead of recovery.dlq (a gate's run read none of them yet).
    parked = reader.wait_for(lambda ms: {billing_incident, mailer_incident} <= {
        e["incident_id"] for e in events() if e["outcome"] == "dead_lettered"}
        and "communication/consumer_unhealthy" in types_for(events(), f"consumer:{billing}")
        and len(reader.on(dlq)) >= 2, timeout=60)
    assert parked, [(e["incident_id"], e["event_type"]) for e in events()]
    # One dead letter per consumer, each naming its consumer, the event byte for byte.
    letters = {h.header_value(m.headers(), h.CONSUMER_GROUP): m for m in reader.on(dlq)}
    assert set(letters) == {billing, mailer}
    assert all(m.value() == b'{"order": 3}' and m.key() == b"o-3" for m in letters.values())
    dead = [orjson.loads(e["payload_json"]) for e in events()
            if e["event_type"] == "recovery/dead_lettered"]
    assert {d["nextRetryMs"] for d in dead} == {30_000}
    # The split, and the source's payload on the report.
    [split] = [e for e in events() if e["event_type"] == ev.SPLIT]
    assert split["incident_id"] == "evt-1" and split["outcome"] == "split"
    [reported] = [orjson.loads(e["payload_json"]) for e in events()
                  if e["incident_id"] == "evt-1" and e["event_type"] == ev.EVENT_DELIVERY_FAILED]
    assert reported["affectedConsumers"] == [billing, mailer]
    # Alternative delivery for mailer only, as configured.
    [alternative] = reader.on(webhook)
    assert alternative.value() == b'{"order": 3}'
    assert h.header_value(alternative.headers(), h.CONSUMER_GROUP) == mailer
    assert ev.ALTERNATIVE_DELIVERY in types_for(events(), mailer_incident)
    assert ev.ALTERNATIVE_DELIVERY not in types_for(events(), billing_incident)

    # billing comes back: its dead letter is replayed to it (not mailer's), it handles it.
    consumer = Consumer(consumer_config(settings, f"{billing}-probe"))
    consumer.subscribe([redelivery_topic(billing), redelivery_topic(mailer)])
    received: list = []
    stop = threading.Event()

    def billing_service() -> None:
        while not stop.is_set():
            reporter.heartbeat(billing, status="healthy", events_processed=11)
            reporter.flush()
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                received.append(message)
                if message.key() == MARKER:
                    continue
                if message.topic() == redelivery_topic(billing):
                    reporter.acknowledge(h.header_value(message.headers(), h.INCIDENT_ID),
                                         h.header_value(message.headers(), h.REPLAY_ID))

    service = threading.Thread(target=billing_service, daemon=True)
    service.start()
    try:
        done = reader.wait_for(lambda ms: "recovery/recovery_completed" in types_for(
            events(), billing_incident) and "communication/consumer_recovery_confirmed"
            in types_for(events(), f"consumer:{billing}"), timeout=60)
        # Nothing more is replayed: the worker handles two more health checks of billing,
        # then a marker behind them on each redelivery topic reaches the service.
        assert done and health_checks_processed(delivery_env, billing, count=2)
        marker = Producer({"bootstrap.servers": bootstrap})
        for topic in (redelivery_topic(billing), redelivery_topic(mailer)):
            marker.produce(topic, key=MARKER, value=b"m")
        marker.flush(10)
        assert wait_until(lambda: sum(m.key() == MARKER for m in received) == 2, timeout=30)
    finally:
        stop.set()
        service.join(10)
        consumer.close()
    reader.close()
    assert done, [(e["incident_id"], e["event_type"]) for e in events()]
    replays = [m for m in received if m.key() != MARKER]
    assert [(m.topic(), m.value()) for m in replays] == [
        (redelivery_topic(billing), b'{"order": 3}')]
    # The replayed dead letter is the event byte for byte: key, value, and the original
    # header list first and whole, then only the service's context headers.
    [replayed] = replays
    assert replayed.key() == b"o-3"
    assert replayed.headers()[0] == ("trace", b"t3")
    assert [kv for kv in replayed.headers() if kv[0] not in h.OWN] == [("trace", b"t3")]
    assert h.header_value(replayed.headers(), h.REPLAY_ID)
    assert h.header_value(replayed.headers(), h.CONSUMER_GROUP) == billing
    assert "recovery/recovery_completed" not in types_for(events(), mailer_incident)


MARKER = b"test-marker"


def unique(messages: list) -> list:
    """The reader's group rebalances when the created topic appears and reads from the
    start again: each record once."""
    seen: dict = {}
    for m in messages:
        seen.setdefault((m.topic(), m.partition(), m.offset()), m)
    return list(seen.values())


def test_topic_not_found_created_or_fallback_or_escalated(delivery_env, worker_factory,
                                                         topic_prefix):
    settings = client_settings(delivery_env)
    bootstrap = settings.kafka_bootstrap_servers
    created, invoices, parking, ghost = (f"{topic_prefix}{n}" for n in (
        "orders.v2", "invoices", "parking", "ghost"))
    ensure_topic(bootstrap, parking, partitions=1)
    worker_factory()
    reporter = FailureReporter(settings)
    for incident, topic in (("create-1", created), ("fallback-1", invoices),
                            ("ghost-1", ghost)):
        reporter.report(kind=ev.KIND, error_type="topic_not_found", service="bus",
                        work_item_id=incident, message=f"UNKNOWN_TOPIC_OR_PART: {topic}",
                        failed_record={"topic": topic, "key": incident.encode(),
                                       "value": b"payload", "headers": []},
                        detail=("EventDeliveryFailed", {"cause": "TOPIC_NOT_FOUND",
                                                        "target_topic": topic}))
    reporter.flush()
    codec = locked_codec()
    events_topic = f"{topic_prefix}recovery.events"
    reader = TopicReader(bootstrap, [events_topic, parking, created])

    def events() -> list[dict]:
        return lifecycle(codec, unique(reader.on(events_topic)))

    wanted = {"create-1", "fallback-1", "ghost-1"}
    done = reader.wait_for(lambda ms: wanted <= {e["incident_id"] for e in events()
                                                 if e["outcome"]}
                           and any(m.topic() == created for m in ms), timeout=60)
    reader.close()
    assert done, [(e["incident_id"], e["event_type"]) for e in events()]
    outcome = {e["incident_id"]: e for e in events() if e["outcome"]}
    # created from its definition (two partitions), the event delivered to it
    assert outcome["create-1"]["event_type"] == "recovery/recovery_completed"
    assert ev.TOPIC_CREATED in types_for(events(), "create-1")
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(created, timeout=10)
    assert len(metadata.topics[created].partitions) == 2
    assert [(m.key(), m.value()) for m in unique(reader.on(created))] == [(b"create-1", b"payload")]
    # not defined: the configured fallback topic
    assert outcome["fallback-1"]["event_type"] == "recovery/recovery_completed"
    assert ev.REROUTED_TO_FALLBACK in types_for(events(), "fallback-1")
    [parked] = unique(reader.on(parking))
    assert parked.value() == b"payload"
    assert h.header_value(parked.headers(), h.ORIGINAL_TOPIC) == invoices
    # neither: escalated, and nothing created
    assert outcome["ghost-1"]["event_type"] == "recovery/escalated"
    assert "no definition" in orjson.loads(outcome["ghost-1"]["payload_json"])["reason"]
    assert ghost not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(
        timeout=10).topics
    assert invoices not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(
        timeout=10).topics
