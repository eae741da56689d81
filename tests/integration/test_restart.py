"""A restarted worker restores its incidents from the changelog: a report it already handled
is not handled again, and the next report of the same incident continues its count."""

import pytest

from app.client import FailureReporter
from app.settings import Settings
from tests.integration.test_pipeline import caught_up
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration

FAILED = {"topic": "orders", "partition": 0, "offset": 3, "key": b"o3", "value": b"v",
          "headers": []}


def test_incident_state_survives_a_restart(applied_topics, worker_factory, topic_prefix,
                                           tmp_path):
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    reporter = FailureReporter(settings)
    first = reporter.report(kind="PROCESSING_FAILED", error_type="handler_exception",
                            service="orders", work_item_id="inc-r", failed_record=FAILED,
                            dispatch_target=f"{topic_prefix}orders.redelivery")
    reporter.flush()
    codec = locked_codec()
    reader = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])

    def distinct(messages) -> list[dict]:
        """Lifecycle events as a reader keeping the first of each event id sees them."""
        seen, events = set(), []
        for event in lifecycle(codec, messages):
            if event["event_id"] not in seen:
                seen.add(event["event_id"])
                events.append(event)
        return events

    def retries(messages) -> list[int]:
        return [e["attempt"] for e in distinct(messages)
                if e["event_type"] == "recovery/retry_scheduled"]

    worker = worker_factory()
    assert reader.wait_for(lambda ms: retries(ms) == [1], timeout=60), worker.log_tail()
    worker.stop()
    # A fresh data dir: the worker must rebuild its state from the changelog, not from disk.
    applied_topics["RECOVERY_DATA_DIR"] = str(tmp_path / "fresh-data")
    reporter.report_event(first)  # the same report again: already handled
    second = reporter.report(kind="PROCESSING_FAILED", error_type="handler_exception",
                             service="orders", work_item_id="inc-r", failed_record=FAILED,
                             dispatch_target=f"{topic_prefix}orders.redelivery")
    reporter.flush()
    restarted = worker_factory()
    assert reader.wait_for(lambda ms: len(retries(ms)) >= 2, timeout=90), restarted.log_tail()
    # Nothing more comes: the worker has processed every report, and its outputs are read.
    assert caught_up(applied_topics, reader, [settings.topic("recovery.events")])
    reader.close()
    assert retries(reader.messages) == [1, 2]
    received = [e["failure_event_id"] for e in distinct(reader.messages)
                if e["event_type"] == "recovery/failure_received"]
    assert received == [first["event_id"], second["event_id"]]
