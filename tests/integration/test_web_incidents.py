"""The incidents pages on a real worker (open on loopback, as by default) against the real
broker: a record a service fails once and handles on its redelivery shows every lifecycle
event of its incident in order, ending in recovery_completed, as JSON and on the page."""

from __future__ import annotations

import http.client
import json
import re
import threading
from urllib.parse import quote, unquote

import pytest
from confluent_kafka import Message, Producer

from app.client import RecoveringConsumer
from app.client.consumer import ensure_topic
from app.settings import Settings
from tests.conftest import wait_until
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration


def call(port: str, path: str) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def test_incident_history_in_order_ending_in_recovery_completed(applied_topics, worker_factory,
                                                                topic_prefix):
    env, port = applied_topics, applied_topics["RECOVERY_WEB_PORT"]
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    orders, group = f"{topic_prefix}orders", f"{topic_prefix}billing"
    ensure_topic(bootstrap, orders, partitions=1)
    worker = worker_factory()
    calls: list[bytes] = []

    def flaky(message: Message) -> None:
        calls.append(message.value())
        if len(calls) == 1:
            raise RuntimeError("downstream timeout")

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(orders, key=b"order-1", value=b"payload")
    producer.flush(10)
    incident = f"{group}:{orders}:0:0"  # the client API's work item for a first failure
    api = f"/api/incidents/{quote(incident, safe='')}"
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    consumer = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                                  heartbeat_interval=1)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(flaky,), kwargs={"until": stop.is_set},
                              daemon=True)
    thread.start()

    def completed() -> dict | None:
        try:
            status, _, body = call(port, api)
        except OSError:
            return None
        data = json.loads(body) if status == 200 else {}
        events = data.get("history", {}).get("events", [])
        if events and events[-1]["event_type"] == "recovery/recovery_completed":
            return data
        return None

    try:
        assert wait_until(lambda: completed() is not None, timeout=120, interval=0.5), \
            worker.log_tail()
    finally:
        stop.set()
        thread.join(30)
    data = completed()
    assert data is not None and calls == [b"payload", b"payload"]
    events = data["history"]["events"]
    types = [ev["event_type"] for ev in events]
    # Every step, in the order it happened: the events topic read on its own holds exactly
    # these for the incident, in this order.
    reader = TopicReader(bootstrap, [f"{topic_prefix}recovery.events"])
    try:
        assert reader.read_to_end([f"{topic_prefix}recovery.events"], timeout=30)
        on_topic = [ev for ev in lifecycle(locked_codec(), reader.messages)
                    if ev["incident_id"] == incident]
    finally:
        reader.close()
    assert [ev["event_id"] for ev in events] == [ev["event_id"] for ev in on_topic]
    for earlier, later in [("recovery/failure_received", "recovery/retry_scheduled"),
                           ("recovery/retry_scheduled", "recovery/redelivered"),
                           ("recovery/redelivered", "recovery/recovery_completed")]:
        assert types.index(earlier) < types.index(later), types
    assert types.count("recovery/recovery_completed") == 1
    positions = [(ev["partition"], ev["offset"]) for ev in events]
    assert positions == sorted(positions) and len({p for p, _ in positions}) == 1
    times = [ev["occurred_at"] for ev in events]
    assert times == sorted(times)
    assert data["history"]["cut"] is None
    assert data["incident"]["state"] == "completed" and data["incident"]["attempts"] == 1
    assert data["incident"]["deadlines"]["watchdog_deadline_ms"] is None  # terminal

    # The page shows the same events in the same order, each incident id escaped.
    status, _, page = call(port, f"/incidents/{quote(incident, safe='')}")
    assert status == 200
    assert re.findall(r'<tr class="event" data-event-type="([^"]+)"', page) == types
    assert 'id="incident-state">completed<' in page and 'id="acknowledge"' not in page

    # The search box: an id (the work item) leads to its page; bad and unknown ids do not.
    status, headers, _ = call(port, f"/incidents?q={quote(incident, safe='')}")
    assert status == 303 and unquote(headers["Location"]) == f"/incidents/{incident}"
    assert call(port, "/incidents?q=%20")[0] == 400
    assert call(port, "/incidents/bad%01id")[0] == 400
    assert call(port, "/api/incidents/no-such-incident-here")[0] == 404
    # Completed: no longer among the open incidents.
    status, _, body = call(port, "/api/incidents")
    listing = json.loads(body)
    assert status == 200 and incident not in {r["incident_id"] for r in listing["incidents"]}
    assert listing["scope"] == "the partitions this worker holds"
