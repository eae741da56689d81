"""A retry whose dispatch target topic does not exist is dead-lettered with that reason; the
retry agent does not wait on the missing topic, so the next retry still goes out."""

import pytest

from app.client import FailureReporter
from app.client.consumer import ensure_topic
from app.contracts import headers as h
from app.settings import Settings
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration


def failed(offset: int) -> dict:
    return {"topic": "orders", "partition": 0, "offset": offset, "key": f"o{offset}".encode(),
            "value": b"v", "headers": []}


def test_retry_to_a_missing_topic_is_dead_lettered_and_others_go_on(
        applied_topics, worker_factory, topic_prefix):
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    missing = f"{topic_prefix}nowhere.redelivery"
    present = f"{topic_prefix}billing.redelivery"
    ensure_topic(settings.kafka_bootstrap_servers, present)
    reporter = FailureReporter(settings)
    for offset, target in ((1, missing), (2, present)):
        reporter.report(kind="PROCESSING_FAILED", error_type="handler_exception",
                        service="orders", work_item_id=f"inc-{offset}",
                        failed_record=failed(offset), dispatch_target=target)
    reporter.flush()
    codec = locked_codec()
    events = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    dlq = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.dlq")])
    redelivered = TopicReader(settings.kafka_bootstrap_servers, [present])
    worker = worker_factory()

    def types(incident: str):
        return [e["event_type"] for e in lifecycle(codec, events.messages)
                if e["incident_id"] == incident]

    assert events.wait_for(lambda ms: "recovery/dead_lettered" in types("inc-1")
                           and "recovery/redelivered" in types("inc-2"), timeout=90), \
        worker.log_tail()
    assert redelivered.wait_for(lambda ms: len(ms) >= 1, timeout=30)
    assert dlq.wait_for(lambda ms: len(ms) >= 1, timeout=30)
    [dead] = dlq.messages
    assert dead.key() == b"o1"
    assert h.header_value(dead.headers(), h.REASON) == \
        f"dispatch target topic {missing} does not exist"
    for reader in (events, dlq, redelivered):
        reader.close()
