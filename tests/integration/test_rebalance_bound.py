"""A rebalance that never ends has a bound (RECOVERY_REBALANCE_BOUND_S, app/worker/stall.py).

The fault is injected into a real worker on the real broker (tests/integration/
failing_assignor_worker.py): the group leader's assignment fails, and aiokafka waits for
an error poll Faust never makes, so the worker sits in its group with no partitions (seen
in a clean-clone CI's fault run on a fresh three-broker cluster). Past the bound the worker
consumes that error and asks for a rejoin; if the rebalance still does not end, it exits 4
for its supervisor."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from app.contracts.failure_event import new_failure_event
from app.kafka.config import producer_config
from app.settings import Settings
from tests.conftest import WorkerProcess
from tests.kafka_helpers import TopicReader, locked_codec

pytestmark = pytest.mark.integration

BOUND_S = 6


def failing_worker(env: dict[str, str], log_path: Path, always: bool) -> WorkerProcess:
    env = {**env, "RECOVERY_REBALANCE_BOUND_S": str(BOUND_S),
           "RECOVERY_TEST_ASSIGN_ALWAYS_FAILS": "1" if always else "0"}
    return WorkerProcess(env, log_path, ("tests/integration/failing_assignor_worker.py",)
                         ).start()


def test_a_failed_assignment_is_rejoined_past_the_bound_and_the_worker_goes_on(
        applied_topics, topic_prefix, tmp_path: Path):
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    codec = locked_codec()
    producer = Producer(producer_config(settings))
    # Dead-lettered at once (no record to retry): one outcome, quickly.
    event = new_failure_event(kind="EVENT_DELIVERY_FAILED", error_type="consumer_unavailable",
                              service="bus", work_item_id="w1")
    producer.produce(settings.topic("recovery.failures"), key=b"w1",
                     value=codec.encode("failure-event", event))
    assert producer.flush(30) == 0
    reader = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    log_path = tmp_path / "worker.log"
    worker = failing_worker(applied_topics, log_path, always=False)
    try:
        def outcome(messages) -> bool:
            events = (codec.decode(m.value(), "lifecycle-event") for m in messages)
            return any(e["failure_event_id"] == event["event_id"]
                       and e["outcome"] == "dead_lettered" for e in events)

        done = reader.wait_for(outcome, timeout=120)
        text = log_path.read_text(errors="replace")
        assert "injected: assignment 1 failed" in text, text[-3000:]  # the fault did happen
        assert done, text[-3000:]
        # ...and it was the bound that ended it: the error consumed, the group joined again.
        rejoin = text.find("rescue: rejoin")
        assert rejoin >= 0, text[-3000:]
        assert "waiting for its error to be read" in text[rejoin:], text[rejoin:][-3000:]
        assert "(Re-)joining group" in text[rejoin:], text[rejoin:][-3000:]
        assert worker.proc.poll() is None and "rescue: exit" not in text
    finally:
        reader.close()
        worker.stop()


def test_a_rebalance_that_never_ends_ends_in_exit_4(applied_topics, tmp_path: Path):
    log_path = tmp_path / "worker.log"
    worker = failing_worker(applied_topics, log_path, always=True)
    code = worker.exit_code(120)
    text = log_path.read_text(errors="replace")
    assert code == 4, text[-3000:]
    rejoin, leave = text.find("rescue: rejoin"), text.find("rescue: exit")
    assert -1 < rejoin < leave, text[-3000:]
    assert "injected: assignment 2 failed" in text[rejoin:leave], text[rejoin:leave][-3000:]
