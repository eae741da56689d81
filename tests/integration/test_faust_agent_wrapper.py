"""The Faust-agent consumer wrapper through a real broker and a real worker: a handler that
fails twice is retried through the redelivery topic and its incident completes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from app.client.consumer import ensure_topic
from tests.conftest import REPO
from tests.integration.test_pipeline import fast_env, types_for  # noqa: F401 (fixture)
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration


def test_faust_agent_failure_is_retried_and_completes(fast_env, worker_factory,  # noqa: F811
                                                      topic_prefix, tmp_path: Path):
    bootstrap = fast_env["KAFKA_BOOTSTRAP_SERVERS"]
    orders = f"{topic_prefix}orders"
    group = f"{topic_prefix}billing"
    ensure_topic(bootstrap, orders)
    worker_factory()
    handled = tmp_path / "handled.txt"
    env = {**fast_env, "BILLING_APP_ID": f"{topic_prefix}billing-svc", "BILLING_GROUP": group,
           "BILLING_TOPIC": orders, "BILLING_HANDLED": str(handled),
           "RECOVERY_WEB_PORT": "0"}
    log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "tests.services.faust_billing", "worker", "-l", "info",
         "--without-web"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    reader = TopicReader(bootstrap, [f"{topic_prefix}recovery.events"])
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(orders, key=b"order-1", value=b"\x01payload")
        producer.produce(orders, key=b"order-2", value=b"fine")
        producer.flush(10)
        codec = locked_codec()
        done = reader.wait_for(
            lambda ms: any(e["event_type"] == "recovery/recovery_completed"
                           for e in lifecycle(codec, ms)), timeout=120)
        events = lifecycle(codec, reader.messages)
    finally:
        reader.close()
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
    service_log = (tmp_path / "service.log").read_text(errors="replace")[-3000:]
    assert done, (events, service_log)
    lines = handled.read_text().split("\n")
    assert "order-1 3" in lines and "order-2 1" in lines, lines
    [incident] = {e["incident_id"] for e in events
                  if e["event_type"] == "recovery/recovery_completed"}
    steps = types_for(events, incident)
    assert steps.count("recovery/retry_scheduled") == 2
    assert steps.count("recovery/redelivered") == 2
    completed = next(e for e in events if e["event_type"] == "recovery/recovery_completed")
    assert completed["outcome"] == "completed"
