"""The incident watchdog through the real broker: a redelivery nobody acknowledges is sent
once more and then dead-lettered with its original bytes; an acknowledgement for an incident
the worker does not know is reported and dead-lettered, never dropped without a word."""

import pytest

from app.client import FailureReporter
from app.client.consumer import ensure_topic
from app.contracts import headers as h
from app.contracts import lifecycle as names
from app.settings import Settings
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration

FAILED = {"topic": "orders", "partition": 0, "offset": 11, "key": b"o11",
          "value": b'{"order": 11}',
          "headers": [{"key": "trace", "value": b"t-11"}, {"key": "bin", "value": b"\x00\xff"}]}


@pytest.fixture
def fast_watchdog(applied_topics):
    applied_topics.update(RECOVERY_ACK_TIMEOUT_MS="3000", RECOVERY_WATCHDOG_INTERVAL_MS="500")
    return applied_topics


def test_an_unacknowledged_redelivery_is_sent_again_then_dead_lettered(
        fast_watchdog, worker_factory, topic_prefix):
    settings = Settings(kafka_bootstrap_servers=fast_watchdog["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    target = f"{topic_prefix}silent.redelivery"
    ensure_topic(settings.kafka_bootstrap_servers, target)
    reporter = FailureReporter(settings)
    reporter.report(kind="PROCESSING_FAILED", error_type="handler_exception", service="orders",
                    work_item_id="inc-w", failed_record=FAILED, dispatch_target=target)
    reporter.flush()
    codec = locked_codec()
    events = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    dlq = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.dlq")])
    redelivered = TopicReader(settings.kafka_bootstrap_servers, [target])
    worker = worker_factory()

    def types() -> list[str]:
        return [e["event_type"] for e in lifecycle(codec, events.messages)
                if e["incident_id"] == "inc-w"]

    assert events.wait_for(lambda ms: names.DEAD_LETTERED in types(), timeout=90), \
        (types(), worker.log_tail())
    assert dlq.wait_for(lambda ms: len(ms) >= 1, timeout=30), worker.log_tail()
    redelivered.poll_for(1)
    for reader in (events, dlq, redelivered):
        reader.close()
    kinds = types()
    assert kinds.index(names.REDELIVERED) < kinds.index(names.WATCHDOG_REDISPATCHED) \
        < kinds.index(names.DEAD_LETTERED)
    # The service saw the record twice (the retry, then the watchdog's), byte for byte.
    assert [(m.key(), m.value()) for m in redelivered.messages] == \
        [(b"o11", b'{"order": 11}')] * 2
    for message in redelivered.messages:
        headers = message.headers() or []
        assert ("trace", b"t-11") in headers and ("bin", b"\x00\xff") in headers
        assert h.header_value(headers, h.INCIDENT_ID) == "inc-w"
    [dead] = dlq.messages
    assert (dead.key(), dead.value()) == (b"o11", b'{"order": 11}')
    assert h.header_value(dead.headers(), h.REASON) == "unacknowledged redelivery"
    assert ("trace", b"t-11") in dead.headers()
    [dead_event] = [e for e in lifecycle(codec, events.messages)
                    if e["event_type"] == names.DEAD_LETTERED and e["incident_id"] == "inc-w"]
    assert dead_event["outcome"] == "dead_lettered"


def test_an_ack_for_an_unknown_incident_is_reported_and_dead_lettered(
        fast_watchdog, worker_factory, topic_prefix):
    settings = Settings(kafka_bootstrap_servers=fast_watchdog["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    reporter = FailureReporter(settings)
    reporter.acknowledge("never-reported", replay_id="0:7")
    reporter.flush()
    codec = locked_codec()
    events = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    dlq = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.dlq")])
    worker = worker_factory()
    assert events.wait_for(lambda ms: any(
        e["event_type"] == names.COMMAND_UNMATCHED for e in lifecycle(codec, ms)), timeout=60), \
        worker.log_tail()
    assert dlq.wait_for(lambda ms: len(ms) == 1, timeout=30), worker.log_tail()
    events.close()
    dlq.close()
    [dead] = dlq.messages
    assert dead.key() == b"never-reported"
    assert h.header_value(dead.headers(), h.COMMAND) == "ack"
    assert h.header_value(dead.headers(), h.REPLAY_ID) == "0:7"
    assert h.header_value(dead.headers(), h.REASON) == \
        "ack for an incident this worker does not know"
