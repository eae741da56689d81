"""Every failure event ends in exactly one terminal outcome, also when the worker is killed
with SIGKILL mid-stream and restarted.

Outcomes are idempotent rather than transactional (see docs/exactly-once.md): a report that
was being processed when the worker died is processed again and sends the same outcome, with
the same event id, so a reader that keeps the first of each id sees exactly one. Two
different outcomes for one failure, or none, fail the test."""

from __future__ import annotations

import collections
import os
import signal
import time

import pytest
from confluent_kafka import Producer

from app.contracts.failure_event import new_failure_event
from app.contracts.lifecycle import TERMINAL_OUTCOMES
from app.kafka.config import producer_config
from app.settings import Settings
from tests.integration.test_pipeline import why_not_caught_up
from tests.kafka_helpers import TopicReader, locked_codec

# One xdist process runs the kill-and-restart tests one after another (scripts/test, -n 2).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kills")]

EVENTS = int(os.environ.get("RECOVERY_EOS_TEST_EVENTS", "6000"))
TERMINAL = TERMINAL_OUTCOMES


def failure(i: int) -> dict:
    """Three kinds of failure that each end at once: escalated, poisoned, dead-lettered."""
    if i % 3 == 0:
        return new_failure_event(kind="MCP_CONNECTION_LOST", error_type="authentication_failure",
                                 service="agent", work_item_id=f"w{i}")
    if i % 3 == 1:
        return new_failure_event(
            kind="CONSUMER_CRASHED", error_type="oom", service="indexer", severity="FATAL",
            work_item_id=f"w{i}",
            failed_record={"topic": "docs", "partition": 0, "offset": i, "key": b"k",
                           "value": b"v", "headers": []})
    return new_failure_event(kind="EVENT_DELIVERY_FAILED", error_type="consumer_unavailable",
                             service="bus", work_item_id=f"w{i}")  # no record: dead letter


class OutcomeCount:
    """Distinct terminal outcomes per failure event, counted as records arrive, and how many
    outcome records repeated an id already seen (what an id-keeping reader drops)."""

    def __init__(self, codec):
        self.codec = codec
        self.per_event: collections.Counter = collections.Counter()
        self.ids: set[str] = set()
        self.repeats = 0
        self.read = 0

    def update(self, messages) -> None:
        for message in messages[self.read:]:
            event = self.codec.decode(message.value(), "lifecycle-event")
            if event["outcome"] not in TERMINAL:
                continue
            if event["event_id"] in self.ids:
                self.repeats += 1
                continue
            self.ids.add(event["event_id"])
            self.per_event[event["failure_event_id"]] += 1
        self.read = len(messages)

    def complete(self, messages) -> bool:
        self.update(messages)
        return len(self.per_event) >= EVENTS


def test_sigkill_mid_stream_loses_and_duplicates_nothing(applied_topics, worker_factory,
                                                         topic_prefix, tmp_path):
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    codec = locked_codec()
    producer = Producer(producer_config(settings, **{"linger.ms": 50}))
    ids = []
    for i in range(EVENTS):
        event = failure(i)
        ids.append(event["event_id"])
        producer.produce(settings.topic("recovery.failures"), key=event["work_item_id"].encode(),
                         value=codec.encode("failure-event", event))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0

    reader = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    worker = worker_factory()
    # Kill it once it is well into the run: a third of the failure events have outcomes.
    outcomes = OutcomeCount(codec)
    assert reader.wait_for(lambda ms: outcomes.update(ms) or len(outcomes.per_event) >= EVENTS // 3,
                           timeout=180), worker.log_tail()
    os.kill(worker.proc.pid, signal.SIGKILL)  # mid-stream: about a quarter of the way
    worker.proc.wait()
    killed_at = len(reader.messages)
    time.sleep(1)
    second = worker_factory()
    done = reader.wait_for(outcomes.complete, timeout=240)
    assert done, (len(outcomes.per_event), second.log_tail())
    # Anything late would be a duplicate: wait until the worker has processed every input
    # it has, then read its outputs to the end.
    why = why_not_caught_up(applied_topics, reader, [settings.topic("recovery.events")],
                            timeout=120)
    if why is not None:
        state = second.consumer_state()
        (tmp_path / "consumer-state.json").write_text(state)
        (tmp_path / "consumer-tasks.txt").write_text(second.consumer_tasks())
        log = second.log_path.read_text(errors="replace").splitlines()
        notable = [line for line in log if "[ERROR]" in line or "[WARNING]" in line][-30:]
        raise AssertionError(f"{why}; the worker's consumer: {state}; its last warnings and "
                             "errors:\n" + "\n".join(notable))
    reader.close()
    outcomes.update(reader.messages)
    counts = outcomes.per_event
    print(f"{EVENTS} failure events, killed after {killed_at} lifecycle records; "
          f"{outcomes.repeats} outcome records repeated an id after the restart")
    lost = [i for i in ids if counts[i] == 0]
    duplicated = {i: n for i, n in counts.items() if n > 1}
    assert killed_at < EVENTS * 3, "the kill came after the run had finished"
    assert lost == []
    assert duplicated == {}
