"""At-least-once through the worker's output producer: an output the broker refuses holds
its input (the offset is not committed past it), is counted and logged, and goes out once
the broker takes it, with nothing lost and nothing doubled."""

from __future__ import annotations

import time
import urllib.request

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from app.client import FailureReporter
from app.contracts import headers as h
from tests.conftest import wait_until
from tests.integration.test_pipeline import client_settings, fast_env  # noqa: F401
from tests.kafka_helpers import TopicReader, committed_offsets, lifecycle, locked_codec

pytestmark = pytest.mark.integration


def set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(value),
                    incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def delivery_failures(port: str, topic: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("recovery_output_delivery_failures_total{") and topic in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_refused_output_holds_its_input_until_the_broker_takes_it(
    fast_env, worker_factory, topic_prefix  # noqa: F811
):
    settings = client_settings(fast_env)
    bootstrap = settings.kafka_bootstrap_servers
    dlq, failures = f"{topic_prefix}recovery.dlq", f"{topic_prefix}recovery.failures"
    events_topic = f"{topic_prefix}recovery.events"
    # The dead letter of the report below is about 20 kB: too large for the DLQ now.
    set_max_message_bytes(bootstrap, dlq, 4000)
    worker = worker_factory()
    reporter = FailureReporter(settings)
    group = f"{topic_prefix}ledger"
    event = reporter.report(
        kind="PROCESSING_FAILED", error_type="unprocessable_now", service="ledger",
        consumer_group=group, work_item_id="big-1", dispatch_target=f"{group}.redelivery",
        failed_record={"topic": f"{topic_prefix}orders", "partition": 0, "offset": 7,
                       "key": b"k", "value": b"x" * 20_000, "headers": []})
    assert reporter.confirm(10)
    reader = TopicReader(bootstrap, [failures, dlq, events_topic])
    assert reader.wait_for(lambda ms: any(m.topic() == failures for m in ms), timeout=30)
    [report] = reader.on(failures)
    position = (failures, report.partition())

    assert wait_until(lambda: "not accepted by the broker" in worker.log_path.read_text(
        errors="replace"), timeout=90), worker.log_tail()
    assert wait_until(lambda: delivery_failures(fast_env["RECOVERY_WEB_PORT"], dlq) >= 1,
                      timeout=30), "the refusal is not in the metrics"
    # Several commit intervals with the output refused: the input's offset stays before it.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert committed_offsets(bootstrap, fast_env["RECOVERY_APP_ID"], [position])[
            position] <= report.offset()
        time.sleep(0.5)
    reader.poll_for(1)
    assert not reader.on(dlq)

    set_max_message_bytes(bootstrap, dlq, 8_388_608)
    assert reader.wait_for(lambda ms: any(m.topic() == dlq for m in ms), timeout=60), \
        worker.log_tail()
    assert wait_until(lambda: committed_offsets(
        bootstrap, fast_env["RECOVERY_APP_ID"], [position])[position] > report.offset(),
        timeout=30), "the input was not committed once its outputs were delivered"
    reader.poll_for(3)
    reader.close()
    [dead] = reader.on(dlq)
    assert dead.value() == b"x" * 20_000
    assert h.header_value(dead.headers(), h.FAILURE_EVENT_ID) == event["event_id"]
    mine = [e for e in lifecycle(locked_codec(), reader.on(events_topic))
            if e["failure_event_id"] == event["event_id"]]
    assert [e["outcome"] for e in mine if e["outcome"]] == ["dead_lettered"]
    assert len({e["event_id"] for e in mine}) == len(mine), "a lifecycle event was sent twice"
