"""The core recovery paths through a real broker and a real worker process."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from confluent_kafka import Message, Producer

from app.client import FailureReporter, RecoveringConsumer
from app.contracts import headers as h
from app.pipeline.retry.tiers import DUE_TOLERANCE_MS
from app.settings import Settings
from tests.kafka_helpers import (
    WORKER_INPUTS,
    TopicReader,
    assigned_inputs,
    lifecycle,
    locked_codec,
    processed_behind,
    wait_processed,
)

pytestmark = pytest.mark.integration

FAST_HEALTH = {
    "RECOVERY_HEALTH_CHECK_INTERVAL_MS": "1000",
    "RECOVERY_HEARTBEAT_STALE_MS": "3000",
    "RECOVERY_HOLD_RETRY_MS": "2000",
    "RECOVERY_RECOVERY_WATCH_MS": "60000",
}


# A failure type that goes straight to the dead-letter topic, so a test has a dead letter
# to replay without waiting out a retry schedule.
STRAIGHT_TO_DLQ = """
[[classification]]
error_types = ["unprocessable_now"]
severity = "ERROR"
category = "test"
type = "straight_to_dlq"
recoverability = "recoverable"

[retry.straight_to_dlq]
attempts = 0
on_exhausted = "dead_letter"
"""


@pytest.fixture
def fast_env(applied_topics: dict[str, str], tmp_path) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    policy.write_text(STRAIGHT_TO_DLQ)
    applied_topics.update(FAST_HEALTH, RECOVERY_POLICY_FILE=str(policy))
    return applied_topics


# Original headers a record may carry, all to be kept as they are through every hop.
UNUSUAL_HEADERS = [("trace", b"t1"), ("blob", bytes(range(256))), ("empty", None),
                   ("trace", b"t2"), ("recovery.user.note", b"mine")]


# The context headers of a dead letter after exhausted retries, in the order they are added.
DEAD_LETTER_CONTEXT = [
    h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET, h.ORIGINAL_TIMESTAMP,
    h.CONSUMER_GROUP, h.ERROR_TYPE, h.ERROR_MESSAGE, h.ERROR_STACKTRACE, h.CLASSIFICATION,
    h.ATTEMPT, h.FIRST_FAILURE, h.LAST_FAILURE, h.INCIDENT_ID, h.FAILURE_EVENT_ID, h.REASON,
]


def client_settings(env: dict[str, str]) -> Settings:
    return Settings(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                    topic_prefix=env["RECOVERY_TOPIC_PREFIX"])


def types_for(events: list[dict], incident: str) -> list[str]:
    return [e["event_type"] for e in events if e["incident_id"] == incident]


def caught_up(env: dict[str, str], reader: TopicReader, outputs: list[str],
              timeout: float = 60) -> bool:
    """The worker has processed its inputs up to their ends now, and `reader` has read
    `outputs` up to their ends after that: an extra output would be in hand."""
    return why_not_caught_up(env, reader, outputs, timeout) is None


def why_not_caught_up(env: dict[str, str], reader: TopicReader, outputs: list[str],
                      timeout: float = 60) -> str | None:
    """caught_up's wait; None once caught up, else which half of it did not happen."""
    bootstrap, group = env["KAFKA_BOOTSTRAP_SERVERS"], env["RECOVERY_APP_ID"]
    inputs = {env["RECOVERY_TOPIC_PREFIX"] + t for t in WORKER_INPUTS}
    inputs.update(assigned_inputs(bootstrap, group))
    behind = processed_behind(bootstrap, group, sorted(inputs), timeout)
    if behind:
        return f"the group's commits stayed behind (committed, end): {behind}"
    if not reader.read_to_end(outputs, timeout):
        return f"the outputs {outputs} were not read to their ends in {timeout:.0f} s"
    return None


def health_checks_processed(env: dict[str, str], group: str, count: int,
                            timeout: float = 60) -> bool:
    """`count` more health checks of `group` (they travel through the heartbeat topic) are
    on the broker and the worker has processed its inputs up to them."""
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    beats = env["RECOVERY_TOPIC_PREFIX"] + "recovery.heartbeats"
    reader = TopicReader(bootstrap, [beats])
    try:
        assert reader.read_to_end([beats], timeout)
        def checks(ms: list[Message]) -> int:
            return sum(1 for m in ms if m.key() == group.encode()
                       and orjson.loads(m.value()).get("check"))
        before = checks(reader.messages)
        if not reader.wait_for(lambda ms: checks(ms) >= before + count, timeout):
            return False
    finally:
        reader.close()
    return wait_processed(bootstrap, env["RECOVERY_APP_ID"],
                          [env["RECOVERY_TOPIC_PREFIX"] + t for t in WORKER_INPUTS], timeout)


class ConsumerThread:
    """A service's consumer loop in a thread, as the client API would run it."""

    def __init__(self, consumer: RecoveringConsumer, handler):
        self.consumer = consumer
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=consumer.run, args=(handler,), kwargs={"until": self.stop.is_set}, daemon=True)

    def __enter__(self) -> ConsumerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_retry_then_success_ends_in_recovery_completed(fast_env, worker_factory, topic_prefix):
    settings = client_settings(fast_env)
    bootstrap = settings.kafka_bootstrap_servers
    orders = f"{topic_prefix}orders"
    group = f"{topic_prefix}billing"
    from app.client.consumer import ensure_topic

    ensure_topic(bootstrap, orders, partitions=1)
    worker_factory()
    calls: dict[bytes, int] = {}
    handled: list[tuple[bytes, int]] = []
    seen: list[Message] = []

    def flaky(message: Message) -> None:
        seen.append(message)
        calls[message.value()] = calls.get(message.value(), 0) + 1
        if message.value() == b"\x01payload" and calls[message.value()] <= 2:
            raise RuntimeError("downstream timeout")
        handled.append((message.value(), calls[message.value()]))

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(orders, key=b"order-1", value=b"\x01payload", headers=UNUSUAL_HEADERS)
    # A later record of the same key, handled while the first one waits for its retry.
    producer.produce(orders, key=b"order-1", value=b"second")
    producer.produce(orders, key=b"order-2", value=b"fine")
    producer.flush(10)

    codec = locked_codec()
    reader = TopicReader(bootstrap, [f"{topic_prefix}recovery.events"])
    consumer = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                                  heartbeat_interval=1)
    with ConsumerThread(consumer, flaky):
        done = reader.wait_for(
            lambda ms: any(e["event_type"] == "recovery/recovery_completed"
                           for e in lifecycle(codec, ms)), timeout=90)
    events = lifecycle(codec, reader.messages)
    reader.close()
    assert done, events
    assert (b"\x01payload", 3) in handled and (b"fine", 1) in handled
    # Order per key is not kept through a retry (docs/how-it-works.md, "Order per key"):
    # the later record of order-1 was handled before the retried one.
    assert [v for v, _ in handled if v in (b"\x01payload", b"second")] == [
        b"second", b"\x01payload"]
    # Each redelivery is the original record byte for byte: key, value, and every original
    # header in order (binary, None, duplicate keys, a recovery.* header of the service's
    # own) before the context headers.
    redelivered = [m for m in seen if m.topic() == f"{group}.redelivery"]
    assert len(redelivered) == 2
    for message in redelivered:
        assert message.key() == b"order-1" and message.value() == b"\x01payload"
        headers = message.headers()
        assert headers[:len(UNUSUAL_HEADERS)] == UNUSUAL_HEADERS
        assert all(k in h.OWN for k, _ in headers[len(UNUSUAL_HEADERS):])
    assert [h.header_int(m.headers(), h.ATTEMPT) for m in redelivered] == [1, 2]
    [incident] = {e["incident_id"] for e in events
                  if e["event_type"] == "recovery/recovery_completed"}
    steps = types_for(events, incident)
    assert steps.count("recovery/retry_scheduled") == 2
    assert steps.count("recovery/redelivered") == 2
    assert steps[-1] == "recovery/recovery_completed"
    completed = [e for e in events if e["event_type"] == "recovery/recovery_completed"][0]
    assert completed["attempt"] == 2 and completed["duration_ms"] >= 1000 + 2000 - 200
    # Retry lateness: never redelivered before its due time (beyond the due tolerance).
    scheduled = [orjson.loads(e["payload_json"]) for e in events
                 if e["incident_id"] == incident and e["event_type"] == "recovery/retry_scheduled"]
    late = [orjson.loads(e["payload_json"])["lateMs"] for e in events
            if e["incident_id"] == incident and e["event_type"] == "recovery/redelivered"]
    assert len(late) == 2 and all(ms >= -DUE_TOLERANCE_MS for ms in late), late
    for message, plan in zip(redelivered, scheduled, strict=True):
        assert h.header_int(message.headers(), h.RETRY_DUE) == plan["dueAt"]
        assert message.timestamp()[1] >= plan["dueAt"] - DUE_TOLERANCE_MS


def test_retries_exhausted_end_in_a_dead_letter_with_full_headers(
    fast_env, worker_factory, topic_prefix
):
    settings = client_settings(fast_env)
    bootstrap = settings.kafka_bootstrap_servers
    orders = f"{topic_prefix}orders"
    group = f"{topic_prefix}ledger"
    from app.client.consumer import ensure_topic

    ensure_topic(bootstrap, orders)
    worker_factory()
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(orders, key=b"k-9", value=b"\x00\x01bytes", headers=[("app", b"x")],
                     timestamp=1_700_000_000_123)
    producer.flush(10)
    original_timestamp = 1_700_000_000_123

    def always_fails(message: Message) -> None:
        raise ValueError("cannot post to ledger")

    dlq = f"{topic_prefix}recovery.dlq"
    reader = TopicReader(bootstrap, [dlq, f"{topic_prefix}recovery.events"])
    consumer = RecoveringConsumer(group, [orders], service="ledger", settings=settings,
                                  heartbeat_interval=1)
    with ConsumerThread(consumer, always_fails):
        assert reader.wait_for(lambda ms: any(m.topic() == dlq for m in ms), timeout=90)
    assert caught_up(fast_env, reader, [dlq, f"{topic_prefix}recovery.events"])
    reader.close()
    [dead] = reader.on(dlq)
    assert dead.key() == b"k-9" and dead.value() == b"\x00\x01bytes"
    headers = dead.headers()
    # Each original header once, then each context header once, in this order: nothing
    # piles up across the three hops and nothing else is added.
    assert [k for k, _ in headers] == ["app", *DEAD_LETTER_CONTEXT]
    assert headers[0] == ("app", b"x")
    assert h.header_value(headers, h.ORIGINAL_TOPIC) == orders
    assert h.header_value(headers, h.ORIGINAL_PARTITION) is not None
    assert h.header_value(headers, h.ORIGINAL_OFFSET) == "0"
    assert h.header_value(headers, h.CONSUMER_GROUP) == group
    assert h.header_value(headers, h.ERROR_TYPE) == "handler_exception"
    assert "cannot post to ledger" in h.header_value(headers, h.ERROR_MESSAGE)
    assert "ValueError" in h.header_value(headers, h.ERROR_STACKTRACE)
    assert (h.header_value(headers, h.CLASSIFICATION)
            == "ERROR/processing/processing_failure/recoverable")
    assert h.header_value(headers, h.ATTEMPT) == "3"
    first = int(h.header_value(headers, h.FIRST_FAILURE))
    assert first < int(h.header_value(headers, h.LAST_FAILURE))
    assert h.header_value(headers, h.INCIDENT_ID)
    events = lifecycle(locked_codec(), reader.on(f"{topic_prefix}recovery.events"))
    assert [e["outcome"] for e in events if e["outcome"]] == ["dead_lettered"]
    [dead_lettered] = [e for e in events if e["outcome"]]
    assert h.header_value(headers, h.INCIDENT_ID) == dead_lettered["incident_id"]
    assert h.header_value(headers, h.FAILURE_EVENT_ID) == dead_lettered["failure_event_id"]
    assert h.header_value(headers, h.ORIGINAL_TIMESTAMP) == str(original_timestamp)
    assert h.header_value(headers, h.REASON)


def test_non_recoverable_input_ends_in_poison(fast_env, worker_factory, topic_prefix):
    settings = client_settings(fast_env)
    worker_factory()
    reporter = FailureReporter(settings)
    event = reporter.report(
        kind="MCP_CONNECTION_LOST", error_type="authentication_failure", service="agent",
        message="401 from tool server", work_item_id="auth-1",
        detail=("McpConnectionLost", {"server_id": "mcp-9", "auth_method": "token"}))
    fatal = reporter.report(
        kind="CONSUMER_CRASHED", error_type="out_of_memory", service="indexer", severity="FATAL",
        work_item_id="fatal-1", consumer_group="indexers",
        failed_record={"topic": "docs", "partition": 0, "offset": 5, "key": b"d",
                       "value": b"huge", "headers": []},
        dispatch_target="indexers.redelivery")
    reporter.flush()
    poison = f"{topic_prefix}recovery.poison"
    events_topic = f"{topic_prefix}recovery.events"
    reader = TopicReader(settings.kafka_bootstrap_servers, [poison, events_topic])
    codec = locked_codec()
    assert reader.wait_for(
        lambda ms: any(m.topic() == poison for m in ms) and len(
            [e for e in lifecycle(codec, [m for m in ms if m.topic() == events_topic])
             if e["outcome"]]) >= 2, timeout=90)
    reader.close()
    outcomes = {e["incident_id"]: e for e in lifecycle(codec, reader.on(events_topic))
                if e["outcome"]}
    # authentication: escalated, never retried (source: non_recoverable security failure)
    assert outcomes["auth-1"]["event_type"] == "recovery/escalated"
    assert outcomes["fatal-1"]["event_type"] == "recovery/poisoned"
    [quarantined] = reader.on(poison)
    assert quarantined.value() == b"huge" and quarantined.key() == b"d"
    assert "FATAL" in h.header_value(quarantined.headers(), h.REASON)
    # Each outcome belongs to its own report.
    assert h.header_value(quarantined.headers(), h.FAILURE_EVENT_ID) == fatal["event_id"]
    assert outcomes["fatal-1"]["failure_event_id"] == fatal["event_id"]
    assert outcomes["auth-1"]["failure_event_id"] == event["event_id"]
    retried = [e for e in lifecycle(codec, reader.on(events_topic))
               if e["event_type"] == "recovery/retry_scheduled"]
    assert retried == []


def test_down_consumer_has_retries_held_and_dead_letters_replayed(
    fast_env, worker_factory, topic_prefix
):
    settings = client_settings(fast_env)
    bootstrap = settings.kafka_bootstrap_servers
    group = f"{topic_prefix}mailer"
    from app.client.consumer import ensure_topic
    from app.contracts.topics import redelivery_topic

    ensure_topic(bootstrap, redelivery_topic(group))
    worker_factory()
    reporter = FailureReporter(settings)
    # The consumer was alive, then stops beating: it is down.
    reporter.heartbeat(group, status="healthy", events_processed=10)
    reporter.heartbeat(group, status="failed", events_processed=10)
    failed = {"topic": "mail", "partition": 0, "offset": 1, "key": b"m1", "value": b"hello",
              "headers": []}
    reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="handler_exception",
                    service="mailer", consumer_group=group, work_item_id="held-1",
                    failed_record=failed, dispatch_target=redelivery_topic(group))
    # An older dead letter of the same consumer, to be replayed when it is back.
    reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="unprocessable_now",
                    service="mailer", consumer_group=group, work_item_id="old-1",
                    failed_record={**failed, "offset": 0, "key": b"m0", "value": b"older"})
    reporter.flush()
    codec = locked_codec()
    events_topic = f"{topic_prefix}recovery.events"
    reader = TopicReader(bootstrap, [events_topic, redelivery_topic(group)])
    held = reader.wait_for(lambda ms: "recovery/retry_held" in types_for(
        lifecycle(codec, [m for m in ms if m.topic() == events_topic]), "held-1"), timeout=60)
    assert held
    # Several hold periods pass while the consumer is down: the retry is parked again each
    # time (a 2 s hold: the 2 s tier), and never sent on.
    tier = f"{topic_prefix}recovery.retry.2s"
    tier_reader = TopicReader(bootstrap, [tier])
    assert tier_reader.wait_for(lambda ms: len([
        m for m in ms if h.header_value(m.headers(), h.INCIDENT_ID) == "held-1"
        and h.header_value(m.headers(), h.HELD) == "1"]) >= 3, timeout=60)
    tier_reader.close()
    assert reader.read_to_end([events_topic, redelivery_topic(group)], timeout=30)
    assert reader.on(redelivery_topic(group)) == []
    steps = types_for(lifecycle(codec, reader.on(events_topic)), "held-1")
    assert steps.count("recovery/redelivered") == 0
    assert steps.count("recovery/retry_scheduled") == 1  # held, not burned

    # The consumer comes back: the held retry is delivered, its dead letter replayed.
    reporter.heartbeat(group, status="healthy", events_processed=0)
    reporter.flush()
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            reporter.heartbeat(group, status="healthy", events_processed=11)
            reporter.flush()
            time.sleep(0.5)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        redelivered = reader.wait_for(
            lambda ms: {m.value() for m in ms if m.topic() == redelivery_topic(group)}
            >= {b"hello", b"older"}, timeout=60)
    finally:
        stop.set()
        beater.join()
    assert redelivered
    # Later health checks must not replay it again: wait until the worker has handled two
    # more checks of this group and everything before them.
    assert health_checks_processed(fast_env, group, count=2)
    assert reader.read_to_end([events_topic, redelivery_topic(group)], timeout=30)
    reader.close()
    values = [m.value() for m in reader.on(redelivery_topic(group))]
    assert sorted(values) == [b"hello", b"older"]
    replayed = [m for m in reader.on(redelivery_topic(group)) if m.value() == b"older"][0]
    assert h.header_value(replayed.headers(), h.REPLAY_ID)
    assert h.header_value(replayed.headers(), h.INCIDENT_ID) == "old-1"
    assert replayed.key() == b"m0"
