"""Bad input at the size limit of the intake topic: a garbage record of about 1 MB (below
recovery.failures' max.message.bytes, 1,048,588) must land in the poison topic with a reason
like any other, and the worker must go on with the good event behind it.

Found by fuzzing the running worker: quarantining such a record adds context headers, and
the result was above the Faust producer's default max_request_size (1,000,000 bytes). The
send raised MessageSizeTooLargeError, the incident agent crashed and was restarted by its
supervisor, and the record was never poisoned: dropped, against the contract."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from app.contracts import headers as h
from app.contracts.failure_event import SUBJECT, new_failure_event
from app.kafka.config import producer_config
from app.settings import Settings
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration

SIZE = 1_040_000


def test_a_garbage_record_at_the_topic_limit_is_poisoned_and_the_worker_goes_on(
        applied_topics, worker_factory, topic_prefix):
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    codec = locked_codec()
    good = new_failure_event(kind="MCP_CONNECTION_LOST", error_type="authentication_failure",
                             service="fuzz", work_item_id="after-the-big-one")
    # A producer allowed to send what the topic accepts (librdkafka's own default is 1 MB).
    producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000}))
    big = b"\x00\x00\x00\x00\x01" + b"\xff" * SIZE  # schema id 1, then a broken body
    producer.produce(settings.topic("recovery.failures"), key=b"big", value=big,
                     headers=[("x-dup", b"1"), ("x-dup", b"2")])
    producer.produce(settings.topic("recovery.failures"), key=b"after-the-big-one",
                     value=codec.encode(SUBJECT, good))
    assert producer.flush(30) == 0
    poison = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.poison")])
    events = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    worker = worker_factory()
    assert events.wait_for(lambda ms: any(
        e["incident_id"] == "after-the-big-one" and e["outcome"] for e in lifecycle(codec, ms)),
        timeout=90), worker.log_tail()
    assert poison.wait_for(lambda ms: len(ms) >= 1, timeout=30), worker.log_tail()
    [quarantined] = poison.messages
    assert quarantined.key() == b"big" and quarantined.value() == big
    assert [v for k, v in quarantined.headers() if k == "x-dup"] == [b"1", b"2"]
    assert h.header_value(quarantined.headers(), h.REASON).startswith(
        "undecodable failure event: ")
    assert "Crashed" not in worker.log_tail(400)
    poison.close()
    events.close()
