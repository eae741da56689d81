"""The retry-and-acknowledge path under back-to-back kills: a service whose handler fails
each order once and succeeds on the redelivery, while the worker is SIGKILLed again and
again (some replacements within two seconds of starting). Every order's incident must end
in exactly one terminal outcome (completed, or dead-lettered by the watchdog) within the
watchdog's bound; none may stay open. Raw repeats are counted beside distinct ids."""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time

import pytest
from confluent_kafka import Producer

from app.client import RecoveringConsumer
from app.client.consumer import ensure_topic
from app.contracts import lifecycle
from app.kafka.config import producer_config
from app.settings import Settings
from tests.kafka_helpers import TopicReader, locked_codec

# One xdist process runs the kill-and-restart tests one after another (scripts/test, -n 2).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kills")]

ORDERS = int(os.environ.get("RECOVERY_RETRY_KILL_ORDERS", "300"))
KILLS = int(os.environ.get("RECOVERY_RETRY_KILLS", "6"))
TERMINAL = lifecycle.TERMINAL_OUTCOMES
ACK_TIMEOUT_MS = 8000


class Outcomes:
    """Terminal outcomes per incident (by distinct lifecycle event id) and raw repeats."""

    def __init__(self, codec) -> None:
        self.codec = codec
        self.per_incident: dict[str, set[str]] = collections.defaultdict(set)
        self.reported: set[str] = set()  # incidents with a failure_received
        # Each incident's lifecycle steps in arrival order: a lost one's history is the
        # first thing to read when this test fails.
        self.history: dict[str, list[str]] = collections.defaultdict(list)
        self.ids: set[str] = set()
        # Each incident's distinct lifecycle events in the order of recovery.events: two
        # outcomes in one cycle conflict (lifecycle.conflicting); a dead letter replayed and
        # then completed is two cycles.
        self.events: dict[str, list[dict]] = collections.defaultdict(list)
        self.event_ids: set[str] = set()
        self.raw = 0
        self.read = 0

    def update(self, messages) -> None:
        for message in messages[self.read:]:
            event = self.codec.decode(message.value(), "lifecycle-event")
            if event["event_type"] == "recovery/failure_received":
                self.reported.add(event["incident_id"])
            self.history[event["incident_id"]].append(event["event_id"].rsplit(":", 1)[-1])
            if event["event_id"] not in self.event_ids:
                self.event_ids.add(event["event_id"])
                self.events[event["incident_id"]].append(event)
            if event["outcome"] not in TERMINAL:
                continue
            self.raw += 1
            if event["event_id"] in self.ids:
                continue
            self.ids.add(event["event_id"])
            self.per_incident[event["incident_id"]].add(event["event_id"])
        self.read = len(messages)


def incident_trail(bootstrap: str, prefix: str, incident_ids: list[str]) -> dict:
    """For a failure's report: each incident's commands (partition, offset, command) and
    its last values in the incidents changelog, and the consumer-health table, read back
    from the broker."""
    from confluent_kafka import Consumer, TopicPartition

    app_id = f"recovery-{prefix.rstrip('.')}"
    wanted = {i.encode() for i in incident_ids}
    trail: dict = {i: {"commands": [], "table": []} for i in incident_ids}
    health: dict = {}
    topics = {f"{prefix}recovery.incident-commands": "commands",
              f"{app_id}-incidents-changelog": "table",
              f"{app_id}-consumer-health-changelog": "health"}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{app_id}-trail",
                         "enable.auto.commit": False})
    try:
        ends = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=10)
                if high > low:
                    ends[(topic, partition)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error():
                    continue
                tp = (m.topic(), m.partition())
                if m.offset() >= ends.get(tp, 0) - 1:
                    ends.pop(tp, None)
                kind = topics[m.topic()]
                if kind == "health":
                    health[m.key()] = (m.value() or b"")[:300]
                elif m.key() in wanted or (m.key() or b"").strip(b'"') in wanted:
                    key = (m.key() or b"").strip(b'"').decode()
                    if kind == "commands":
                        trail[key]["commands"].append(
                            (m.partition(), m.offset(), dict(m.headers() or []).get(
                                "recovery.command")))
                    else:
                        trail[key]["table"] = (trail[key]["table"]
                                               + [(m.partition(), m.offset(),
                                                   (m.value() or b"")[:400])])[-3:]
    finally:
        consumer.close()
    return {"incidents": trail, "health": health}


def failure_reports(bootstrap: str, prefix: str, codec, order_keys: set[bytes]) -> dict:
    """For a failure's report: where the failure events of these orders sit in
    recovery.failures ((partition, offset, incident)), read back from the broker; an order
    that failed but whose incident never got `failure_received` is found this way."""
    topic = f"{prefix}recovery.failures"
    reader = TopicReader(bootstrap, [topic])
    try:
        reader.read_to_end([topic], timeout=30)
    finally:
        reader.close()
    found: dict = {key.decode(): [] for key in order_keys}
    for m in reader.messages:
        event = codec.decode(m.value(), "failure-event")
        key = (event.get("failed_record") or {}).get("key")
        if key in order_keys:
            found[key.decode()].append((m.partition(), m.offset(), event.get("work_item_id")))
    return found


def test_back_to_back_kills_on_the_retry_path_leave_no_incident_open(
        applied_topics, worker_factory, topic_prefix, tmp_path):
    applied_topics.update(RECOVERY_ACK_TIMEOUT_MS=str(ACK_TIMEOUT_MS),
                          RECOVERY_WATCHDOG_INTERVAL_MS="500", RECOVERY_LAG_INTERVAL_S="0")
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    bootstrap = settings.kafka_bootstrap_servers
    orders, group = f"{topic_prefix}orders", f"{topic_prefix}billing"
    ensure_topic(bootstrap, orders)
    codec = locked_codec()
    reader = TopicReader(bootstrap, [settings.topic("recovery.events")])
    seen: collections.Counter[bytes] = collections.Counter()
    handled: set[bytes] = set()
    lock = threading.Lock()

    def fail_once(message) -> None:
        with lock:
            seen[message.key()] += 1
            first = seen[message.key()] == 1
        if first:
            raise RuntimeError("first try fails")
        with lock:
            handled.add(message.key())

    consumer = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                                  heartbeat_interval=1)
    stop = threading.Event()
    service = threading.Thread(target=consumer.run, args=(fail_once,),
                               kwargs={"until": stop.is_set}, daemon=True)
    service.start()
    producer = Producer(producer_config(settings))
    keys = [f"order-{i}".encode() for i in range(ORDERS)]
    worker = worker_factory()
    rng = random.Random(20261202)
    outcomes = Outcomes(codec)
    kills = []
    def produce_orders() -> None:
        # Spread over the kills, so failures, retries and acks flow while workers die.
        for i, key in enumerate(keys):
            producer.produce(orders, key=key, value=b"order " + key)
            producer.poll(0)
            if i % 10 == 9:
                time.sleep(1.0)  # 10 orders a second: the feed outlasts the kills
        producer.flush(30)

    try:
        assert reader.wait_for(lambda ms: outcomes.update(ms) or True, timeout=5) or True
        feeder = threading.Thread(target=produce_orders, daemon=True)
        feeder.start()
        assert reader.wait_for(lambda ms: outcomes.update(ms) or outcomes.reported,
                               timeout=120), worker.log_tail()
        for k in range(KILLS):
            if k % 2:
                # Back to back: this replacement is killed within 2 s of starting.
                reader.poll_for(rng.uniform(0.2, 1.8))
            else:
                # This one is killed while it works: once outcomes move again.
                before = len(outcomes.ids)

                def moved(messages, before: int = before) -> bool:
                    outcomes.update(messages)
                    return len(outcomes.ids) > before

                reader.wait_for(moved, timeout=60)
                reader.poll_for(rng.uniform(0.3, 2.0))
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()
            outcomes.update(reader.messages)
            kills.append(len(outcomes.ids))
            reader.poll_for(rng.uniform(0, 1.5))
            worker = worker_factory()
        feeder.join(120)
        # The bound: the retry schedule, two ack timeouts and a scan, after the last change;
        # plus a worker start. Generous for a loaded machine.
        bound_s = 120 + 2 * ACK_TIMEOUT_MS / 1000
        def all_ended(messages) -> bool:
            outcomes.update(messages)
            return (len(outcomes.reported) >= ORDERS
                    and outcomes.reported <= set(outcomes.per_incident))

        done = reader.wait_for(all_ended, timeout=bound_s)
        reader.poll_for(3)
        outcomes.update(reader.messages)
    finally:
        stop.set()
        service.join(30)
        reader.close()
    incidents = outcomes.reported
    lost = sorted(incidents - set(outcomes.per_incident))
    conflicting = {i: ids for i, ids in outcomes.per_incident.items()
                   if i in incidents and lifecycle.conflicting(outcomes.events[i])}
    kinds = collections.Counter(event_id.split(":")[-1] for ids in outcomes.per_incident.values()
                                for event_id in ids)
    print(f"\n{ORDERS} orders, {len(kills)} kills (at {kills} outcomes); terminal "
          f"outcomes by step: {dict(kinds)}; {outcomes.raw} raw terminal records for "
          f"{len(outcomes.ids)} distinct ids; handled {len(handled)}")
    odd = lost[:10] + sorted(conflicting)[:10]
    histories = {i: outcomes.history[i] for i in odd}
    reports: object = {}
    if not done or conflicting:
        unhandled = set(keys) - handled
        try:
            # Orders never handled whose incident was never reported: their failure events.
            reports = failure_reports(bootstrap, topic_prefix, codec, unhandled) \
                if unhandled else {}
            unreported = sorted({incident for found in reports.values()  # type: ignore[union-attr]
                                 for _, _, incident in found} - incidents)
            trail: object = incident_trail(bootstrap, topic_prefix, odd + unreported[:10])
        except Exception as exc:  # the report must not hide the failure
            trail = f"no trail: {exc!r}"
        (tmp_path / "lost.txt").write_text(
            f"{histories}\nfailure events of unhandled orders: {reports}\n{trail}\n"
            f"{worker.consumer_state()}\n")
    assert done, (len(incidents), len(lost), histories, reports, worker.log_tail())
    assert len(incidents) == ORDERS  # one incident per order: each failed once
    assert lost == []
    assert conflicting == {}, {i: histories[i] for i in conflicting if i in histories}
    assert handled == set(keys)

