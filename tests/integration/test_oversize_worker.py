"""The worker's message_too_large strategy through a real broker and a real worker process:
a record its 1 MB topic refused is reported with the record attached (as a claim check,
being too large for the failure-event topic too), re-published as fragments, and read back
whole, once, even when the report is delivered again. No strategy left: escalated, with the
source's MessageTooLargeError fields. A forged attached reference: poisoned."""

from __future__ import annotations

import hashlib
import os
import uuid

import orjson
import pytest

from app.client.large_messages import ReassemblingConsumer, report_message_too_large
from app.client.reporter import FailureReporter
from app.oversize import headers as oh
from app.oversize.reference import Reference
from app.settings import Settings
from tests.integration.test_oversize import SIGNING_KEY, consume, create_topic
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration
MB = 1024 * 1024


def test_worker_republishes_too_large_records(applied_topics, worker_factory, tmp_path):
    env = applied_topics
    prefix = env["RECOVERY_TOPIC_PREFIX"]
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    big, strict = f"{prefix}big-events", f"{prefix}strict-events"
    for topic in (big, strict):
        create_topic(bootstrap, topic)
    env.update({"RECOVERY_OBJECT_STORE_URL": f"file://{tmp_path}/objects",
                "RECOVERY_OBJECT_STORE_SIGNING_KEY": SIGNING_KEY,
                "RECOVERY_OVERSIZE_TOPICS": orjson.dumps({strict: {
                    "disable": ["fragmentation", "external_storage"]}}).decode()})
    worker = worker_factory()
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix,
                        data_dir=tmp_path / "client", object_store_url=f"file://{tmp_path}/objects",
                        object_store_signing_key=SIGNING_KEY)
    reporter = FailureReporter(settings)
    payload = os.urandom(3 * MB)
    report = report_message_too_large(
        reporter, topic=big, key=b"evt-1", value=payload, headers=[("type", b"snapshot")],
        size_limit=1_048_576, service="publisher", work_item_id=f"big-{uuid.uuid4().hex[:6]}")
    attached = report["failed_record"]
    assert len(attached["value"]) < 2000  # a claim check, not the 3 MB
    no_room = report_message_too_large(reporter, topic=strict, key=b"evt-2",
                                       value=os.urandom(2 * MB), size_limit=1_048_576,
                                       service="publisher")
    forged = Reference(f"file:///etc/{'a' * 64}", "a" * 64, 10).signed(b"not-the-key")
    poisoned = reporter.report(
        kind="EVENT_DELIVERY_FAILED", error_type="message_too_large", service="publisher",
        failed_record={"topic": big, "key": b"evt-3", "value": forged.to_bytes(),
                       "headers": [{"key": oh.STRATEGY, "value": b"external_storage"}]},
        detail=("EventDeliveryFailed", {"cause": "MESSAGE_TOO_LARGE", "target_topic": big}))
    reporter.flush(10)
    codec = locked_codec()
    events_reader = TopicReader(bootstrap, [f"{prefix}recovery.events"])
    consumer = ReassemblingConsumer(f"readers-{uuid.uuid4().hex[:6]}", [big], settings)
    try:
        def ended(ms) -> bool:
            ends = {(e["failure_event_id"], e["event_type"]) for e in lifecycle(codec, ms)}
            return {(report["event_id"], "recovery/recovery_completed"),
                    (no_room["event_id"], "recovery/escalated"),
                    (poisoned["event_id"], "recovery/poisoned")} <= ends

        assert events_reader.wait_for(ended, 120), worker.log_tail()
        [message] = consume(consumer, 1, timeout=60)
        assert message.key() == b"evt-1" and message.headers() == [("type", b"snapshot")]
        assert hashlib.sha256(message.value()).digest() == hashlib.sha256(payload).digest()
        assert message.strategy == oh.FRAGMENTATION
        # The same report delivered again: the same records, and the same step ids.
        reporter.report_event(report)
        reporter.flush(10)
        assert events_reader.wait_for(lambda ms: sum(
            1 for e in lifecycle(codec, ms) if e["failure_event_id"] == report["event_id"]
            and e["event_type"] == "recovery/recovery_completed") >= 2, 60), worker.log_tail()
        assert consume(consumer, 1, timeout=5) == []  # delivered once
    finally:
        consumer.close()
        events_reader.close()
    events = lifecycle(codec, events_reader.messages)
    mine = [e for e in events if e["failure_event_id"] == report["event_id"]]
    steps = [e["event_type"] for e in mine]
    assert steps[:4] == ["recovery/failure_received", "communication/event_delivery_failed",
                         "recovery/redelivered", "recovery/recovery_completed"]
    assert len({e["event_id"] for e in mine}) == 4  # the redelivered report: same ids
    done = orjson.loads(next(e for e in mine if e["event_type"] == "recovery/recovery_completed")
                        ["payload_json"])
    assert done["strategy"] == "fragmentation" and done["targetTopic"] == big
    assert done["strategiesAttempted"] == ["compression", "fragmentation"]
    escalated = next(e for e in events if e["failure_event_id"] == no_room["event_id"]
                     and e["event_type"] == "recovery/escalated")
    detail = orjson.loads(escalated["payload_json"])
    assert detail["error"] == "MessageTooLargeError"
    assert detail["strategiesAttempted"] == ["compression"]
    assert escalated["outcome"] == "escalated"
    poison = next(e for e in events if e["failure_event_id"] == poisoned["event_id"]
                  and e["event_type"] == "recovery/poisoned")
    assert "signature" in orjson.loads(poison["payload_json"])["reason"]
