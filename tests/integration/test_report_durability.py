"""A failed record's offset is committed only after the broker has acknowledged its failure
report (issue 16): with the reporter unable to reach the broker, the client wrappers hold
the offset, and the record is reported once the broker is back or read again after a
restart. Before the fix the consumer committed after an ignored `flush(10)` and the record
was lost."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer

from app.client import FailureReporter, RecoveringConsumer
from app.client.consumer import ensure_topic
from app.kafka import config as kafka_config
from app.settings import Settings
from tests.conftest import REPO, wait_until
from tests.integration.test_pipeline import ConsumerThread, client_settings
from tests.kafka_helpers import TopicReader, committed_offsets, locked_codec
from tests.tcp_relay import TcpRelay

# One xdist process runs the kill-and-restart tests one after another (scripts/test, -n 2).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kills")]

HOLDING = "not acknowledged by the broker"  # the wrappers' warning while they hold an offset


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset on partition 0 (-1001: none), read without joining."""
    return committed_offsets(bootstrap, group, [(topic, 0)])[(topic, 0)]


def reports_of(codec, messages: list[Message], value: bytes) -> list[dict]:
    events = [codec.decode(m.value(), "failure-event") for m in messages]
    return [e for e in events if e["failed_record"] and e["failed_record"]["value"] == value]


class CountingProducer:
    """A real producer that counts what is produced to each topic."""

    def __init__(self, producer: Producer):
        self.producer = producer
        self.produced: dict[str, int] = {}

    def produce(self, topic: str, *args, **kwargs) -> None:
        self.produced[topic] = self.produced.get(topic, 0) + 1
        self.producer.produce(topic, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.producer, name)


def unreachable_reporter(settings: Settings, relay: TcpRelay,
                         producer_config: dict | None = None) -> FailureReporter:
    unreachable = settings.model_copy(update={"kafka_bootstrap_servers": relay.address})
    producer = CountingProducer(Producer(kafka_config.producer_config(
        unreachable, **(producer_config or {}))))
    return FailureReporter(unreachable, producer=producer)  # type: ignore[arg-type]


@pytest.fixture
def held_record(applied_topics, topic_prefix):
    """A one-partition input topic holding one record, and a relay that is closed."""
    settings = client_settings(applied_topics)
    orders = f"{topic_prefix}orders"
    ensure_topic(settings.kafka_bootstrap_servers, orders, partitions=1)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(orders, key=b"order-1", value=b"\x01held", headers=[("trace", b"t1")])
    producer.flush(10)
    relay = TcpRelay(settings.kafka_bootstrap_servers)
    yield settings, orders, relay, applied_topics
    relay.close()


# Queued: librdkafka keeps the report queued through the blip. Timed out: its deliveries
# fail every 3 s (message.timeout.ms) and the reporter sends it again each time.
@pytest.mark.parametrize("producer_config", [None, {"message.timeout.ms": 3000}],
                         ids=["queued", "timed-out"])
def test_consumer_holds_the_offset_until_the_report_is_acknowledged(
        held_record, topic_prefix, caplog, producer_config):
    settings, orders, relay, _ = held_record
    bootstrap = settings.kafka_bootstrap_servers
    group = f"{topic_prefix}billing"
    attempts: list[bytes] = []

    def fails(message: Message) -> None:
        attempts.append(message.value())
        raise RuntimeError("downstream timeout")

    caplog.set_level(logging.WARNING, logger="app.client.consumer")
    reporter = unreachable_reporter(settings, relay, producer_config)
    consumer = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                                  reporter=reporter, heartbeat_interval=1, control=False)
    reader = TopicReader(bootstrap, [settings.topic("recovery.failures")])
    codec = locked_codec()
    try:
        with ConsumerThread(consumer, fails):
            # Either marker ends the wait: the offset was committed (the old behaviour) or
            # the consumer says it holds it.
            assert wait_until(lambda: committed(bootstrap, group, orders) >= 0
                              or HOLDING in caplog.text, timeout=60)
            assert committed(bootstrap, group, orders) < 0, \
                "offset committed before the broker acknowledged the failure report"
            assert attempts == [b"\x01held"]
            if producer_config:  # a delivery failed and the report was sent again
                failures = settings.topic("recovery.failures")
                assert wait_until(lambda: reporter.producer.produced.get(failures, 0) >= 2,
                                  timeout=60)
                assert committed(bootstrap, group, orders) < 0
            # The broker is back: the report goes out, then the offset is committed.
            relay.open()
            assert reader.wait_for(lambda ms: reports_of(codec, ms, b"\x01held"), timeout=60)
            assert wait_until(lambda: committed(bootstrap, group, orders) == 1, timeout=60)
        # Any second report would have been sent before the commit: read up to the end.
        assert reader.read_to_end([settings.topic("recovery.failures")], timeout=30)
    finally:
        reader.close()
    [report] = reports_of(codec, reader.messages, b"\x01held")  # sent once, not twice
    assert report["failed_record"]["key"] == b"order-1"
    assert report["failed_record"]["headers"] == [{"key": "trace", "value": b"t1"}]
    assert attempts == [b"\x01held"]  # the handler was not run again while waiting


def test_consumer_stopped_before_the_acknowledgement_reads_the_record_again(
        held_record, topic_prefix, caplog):
    settings, orders, relay, _ = held_record
    bootstrap = settings.kafka_bootstrap_servers
    group = f"{topic_prefix}billing"

    def fails(message: Message) -> None:
        raise RuntimeError("downstream timeout")

    caplog.set_level(logging.WARNING, logger="app.client.consumer")
    first = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                               reporter=unreachable_reporter(settings, relay),
                               heartbeat_interval=1, control=False)
    with ConsumerThread(first, fails):
        assert wait_until(lambda: committed(bootstrap, group, orders) >= 0
                          or HOLDING in caplog.text, timeout=60)
    # Stopped (as a crash would) while its report was still undelivered.
    assert committed(bootstrap, group, orders) < 0

    seen = threading.Event()

    def fails_again(message: Message) -> None:
        seen.set()
        raise RuntimeError("downstream timeout")

    reader = TopicReader(bootstrap, [settings.topic("recovery.failures")])
    codec = locked_codec()
    second = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                                heartbeat_interval=1, control=False)
    try:
        with ConsumerThread(second, fails_again):
            assert seen.wait(60), "the record whose report was never delivered is lost"
            assert reader.wait_for(lambda ms: reports_of(codec, ms, b"\x01held"), timeout=60)
            assert wait_until(lambda: committed(bootstrap, group, orders) == 1, timeout=60)
    finally:
        reader.close()


def start_billing(service_env: dict[str, str], app_id: str, orders: str, tmp_path: Path,
                  log_path: Path, reporter_bootstrap: str | None) -> subprocess.Popen:
    env = {**service_env, "RECOVERY_WEB_PORT": "0", "BILLING_APP_ID": app_id,
           "BILLING_GROUP": app_id.replace("-svc", ""), "BILLING_TOPIC": orders,
           "BILLING_HANDLED": str(tmp_path / "handled.txt"), "BILLING_ALWAYS_FAIL": "1"}
    if reporter_bootstrap:
        env["BILLING_REPORTER_BOOTSTRAP"] = reporter_bootstrap
    return subprocess.Popen(
        [sys.executable, "-m", "tests.services.faust_billing", "worker", "-l", "info",
         "--without-web"],
        env=env, cwd=REPO, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True)


def stop(service: subprocess.Popen) -> None:
    service.terminate()
    try:
        service.wait(60)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()


def test_faust_agent_holds_the_offset_until_the_report_is_acknowledged(
        held_record, topic_prefix, tmp_path: Path):
    settings, orders, relay, service_env = held_record
    bootstrap = settings.kafka_bootstrap_servers
    app_id = f"{topic_prefix}billing-svc"  # the Faust app's consumer group
    log_path = tmp_path / "service.log"
    service = start_billing(service_env, app_id, orders, tmp_path, log_path, relay.address)
    reader = TopicReader(bootstrap, [settings.topic("recovery.failures")])
    codec = locked_codec()

    def service_log() -> str:
        return log_path.read_text(errors="replace")

    try:
        assert wait_until(lambda: committed(bootstrap, app_id, orders) >= 1
                          or HOLDING in service_log(), timeout=120), service_log()[-3000:]
        assert committed(bootstrap, app_id, orders) < 1, \
            "offset committed before the broker acknowledged the failure report"
        relay.open()
        assert reader.wait_for(lambda ms: reports_of(codec, ms, b"\x01held"), timeout=60), \
            service_log()[-3000:]
        assert wait_until(lambda: committed(bootstrap, app_id, orders) == 1, timeout=60), \
            service_log()[-3000:]
        assert reader.read_to_end([settings.topic("recovery.failures")], timeout=30)
    finally:
        reader.close()
        stop(service)
    [report] = reports_of(codec, reader.messages, b"\x01held")
    assert report["failed_record"]["headers"] == [{"key": "trace", "value": b"t1"}]


def test_faust_agent_stopped_before_the_acknowledgement_reads_the_record_again(
        held_record, topic_prefix, tmp_path: Path):
    settings, orders, relay, service_env = held_record
    bootstrap = settings.kafka_bootstrap_servers
    app_id = f"{topic_prefix}billing-svc"
    log_path = tmp_path / "service.log"

    def service_log() -> str:
        return log_path.read_text(errors="replace")

    first = start_billing(service_env, app_id, orders, tmp_path, log_path, relay.address)
    try:
        assert wait_until(lambda: committed(bootstrap, app_id, orders) >= 1
                          or HOLDING in service_log(), timeout=120), service_log()[-3000:]
    finally:
        stop(first)  # stopped while its report was still undelivered
    assert committed(bootstrap, app_id, orders) < 1
    reader = TopicReader(bootstrap, [settings.topic("recovery.failures")])
    codec = locked_codec()
    second = start_billing(service_env, app_id, orders, tmp_path, log_path, None)
    try:
        assert reader.wait_for(lambda ms: reports_of(codec, ms, b"\x01held"), timeout=120), \
            "the record whose report was never delivered is lost\n" + service_log()[-3000:]
        assert wait_until(lambda: committed(bootstrap, app_id, orders) == 1, timeout=60), \
            service_log()[-3000:]
    finally:
        reader.close()
        stop(second)

