"""A worker whose intake agent never got the records of one partition rescues them.

The fault is injected into a real worker on the real broker (tests/integration/
dropping_worker.py): Faust's consumer drops each record of failures[0] the first time it is
fetched, so nothing after it reveals the loss. The stall guard (app/worker/stall.py) sees
records waiting on the partition that the agent has not handled, seeks the partition back,
and every failure event gets its outcome."""

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

EVENTS = 20


def produce_failures(settings: Settings, codec) -> set[str]:
    producer = Producer(producer_config(settings))
    ids = set()
    for i in range(EVENTS):
        # Dead-lettered at once (no record to retry): one outcome per event, quickly.
        event = new_failure_event(kind="EVENT_DELIVERY_FAILED",
                                  error_type="consumer_unavailable", service="bus",
                                  work_item_id=f"w{i}")
        ids.add(event["event_id"])
        producer.produce(settings.topic("recovery.failures"), partition=0,
                         key=f"w{i}".encode(), value=codec.encode("failure-event", event))
    assert producer.flush(30) == 0
    return ids


def settled(worker: WorkerProcess, log_path: Path, timeout: float = 90.0,
            quiet_s: float = 5.0) -> bool:
    """Whether the worker logged "Worker ready" and then no rebalance for `quiet_s`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.proc.poll() is None:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        ready = text.rfind("Worker ready")
        if ready >= 0 and "(Re-)joining group" not in text[ready:]:
            time.sleep(quiet_s)
            again = log_path.read_text(errors="replace")
            if "(Re-)joining group" not in again[ready:]:
                return True
        time.sleep(0.5)
    return False


def dropping_worker(env: dict[str, str], settings: Settings, log_path: Path,
                    always: bool) -> WorkerProcess:
    env = {**env, "RECOVERY_INPUT_STALL_S": "3",
           "RECOVERY_TEST_DROP_TOPIC": settings.topic("recovery.failures"),
           "RECOVERY_TEST_DROP_PARTITION": "0", "RECOVERY_TEST_DROP_ALWAYS": "1" if always else "0"}
    return WorkerProcess(env, log_path, ("tests/integration/dropping_worker.py",)).start()


def test_records_the_agent_never_got_are_fetched_again_and_handled(applied_topics,
                                                                    topic_prefix,
                                                                    tmp_path: Path):
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    codec = locked_codec()
    log_path = tmp_path / "worker.log"
    worker = dropping_worker(applied_topics, settings, log_path, always=False)
    reader = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    try:
        # The records go out once the worker is settled: dropped while it still rebalanced
        # or restored, Faust's own seek to the committed offsets at the end of that fetched
        # them again (seen in a gate), and there was no stall for the guard to find.
        assert settled(worker, log_path), log_path.read_text(errors="replace")[-3000:]
        ids = produce_failures(settings, codec)
        def outcomes(messages) -> set[str]:
            events = (codec.decode(m.value(), "lifecycle-event") for m in messages)
            return {e["failure_event_id"] for e in events if e["outcome"] == "dead_lettered"}

        done = reader.wait_for(lambda ms: outcomes(ms) >= ids, timeout=150)
        text = log_path.read_text(errors="replace")
        assert "injected: dropped" in text, text[-3000:]  # the fault did happen
        assert done, (len(outcomes(reader.messages)), text[-3000:])
        # ...and it was the guard that brought the records back, saying so in the log.
        assert "rescue: seek" in text, text[-3000:]
        assert worker.proc.poll() is None, "the seek sufficed: no rejoin or exit was needed"
        assert "rescue: exit" not in text
    finally:
        reader.close()
        worker.stop()


def test_a_partition_that_never_gets_through_ends_in_a_rejoin_and_then_exit_4(applied_topics,
                                                                             topic_prefix,
                                                                             tmp_path: Path):
    """Seeking does not help when every fetch of the partition is lost: the worker asks its
    group for a rejoin (a new generation), and when that does not help either it exits with
    code 4 for its supervisor to restart it, within three bounds of the stall."""
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    produce_failures(settings, locked_codec())
    log_path = tmp_path / "worker.log"
    worker = dropping_worker(applied_topics, settings, log_path, always=True)
    code = worker.exit_code(150)
    text = log_path.read_text(errors="replace")
    assert code == 4, text[-3000:]
    seek, rejoin, leave = (text.find(f"rescue: {step}") for step in ("seek", "rejoin", "exit"))
    assert -1 < seek < rejoin < leave, text[-3000:]
    # The rejoin really rebalanced: the group was joined again after it was asked for.
    assert "(Re-)joining group" in text[rejoin:leave], text[rejoin:leave][-3000:]
