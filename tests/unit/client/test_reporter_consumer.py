"""The client API holds a record's offset until the broker has acknowledged its failure
report (issue 16): FailureReporter.confirm and RecoveringConsumer.reports_confirmed, with
the broker replaced by scripted fakes (the real-broker tests are in
tests/integration/test_report_durability.py)."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from app.client.consumer import RecoveringConsumer
from app.client.reporter import FailureReporter
from app.settings import Settings
from tests.kafka_helpers import locked_codec


class ScriptedProducer:
    """Each flush settles the queued sends with the next outcome of the script: "ok",
    "error" (a delivery error) or "queued" (nothing settles: the broker is unreachable)."""

    def __init__(self, script: list[str]):
        self.script = script
        self.queue: list[tuple[dict[str, Any], Any]] = []
        self.produced: list[dict[str, Any]] = []

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                headers: Any = None, on_delivery: Any = None) -> None:
        record = {"topic": topic, "key": key, "value": value, "headers": headers}
        self.produced.append(record)
        if on_delivery is not None:
            self.queue.append((record, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "queued":
            return len(self.queue)
        settled, self.queue = self.queue, []
        for _record, callback in settled:
            callback(None if outcome == "ok" else KafkaError(KafkaError._MSG_TIMED_OUT), None)
        return 0


def reporter(script: list[str]) -> tuple[FailureReporter, ScriptedProducer]:
    producer = ScriptedProducer(script)
    return FailureReporter(Settings(kafka_bootstrap_servers="127.0.0.1:1"), producer=producer,
                           codec=locked_codec()), producer  # type: ignore[arg-type]


def report(r: FailureReporter) -> dict[str, Any]:
    return r.report(kind="PROCESSING_FAILED", error_type="handler_exception", service="s",
                    work_item_id="w-1")


def test_confirm_is_true_once_the_broker_acknowledged_every_report():
    r, producer = reporter(["ok"])
    report(r)
    r.acknowledge("incident-1", "0:5")
    assert r.confirm(0) is True
    assert [p["topic"] for p in producer.produced] == [r.failures_topic, r.commands_topic]


def test_confirm_is_false_while_a_report_is_undelivered_and_sends_it_once():
    r, producer = reporter(["queued", "queued", "ok"])
    report(r)
    assert r.confirm(0) is False
    assert r.confirm(0) is False
    assert r.confirm(0) is True
    assert len(producer.produced) == 1  # waited for, not sent again


def test_a_failed_delivery_is_sent_again_with_the_same_bytes():
    r, producer = reporter(["error", "ok"])
    event = report(r)
    assert r.confirm(0) is False  # the delivery failed: resent by the next confirm
    assert r.confirm(0) is True
    first, again = producer.produced
    assert first == again  # same bytes, so the same event id the worker recognises
    assert locked_codec().decode(again["value"], "failure-event")["event_id"] == event["event_id"]


def test_heartbeats_are_not_waited_for():
    r, _ = reporter(["queued", "queued"])
    r.heartbeat("g")
    assert r.confirm(0) is True


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int):
        self._at = (topic, partition, offset)

    def topic(self) -> str:
        return self._at[0]

    def partition(self) -> int:
        return self._at[1]

    def offset(self) -> int:
        return self._at[2]

    def error(self) -> None:
        return None


class FakeConsumer:
    def __init__(self, polls: list[FakeMessage | None]):
        self.polls = polls
        self.calls: list[tuple[str, Any]] = []
        self.assigned = [TopicPartition("orders", 0), TopicPartition("orders", 1)]

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", sorted(tp.partition for tp in partitions)))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", sorted(tp.partition for tp in partitions)))

    def poll(self, timeout: float) -> FakeMessage | None:
        return self.polls.pop(0) if self.polls else None

    def seek(self, tp: TopicPartition) -> None:
        self.calls.append(("seek", (tp.topic, tp.partition, tp.offset)))

    def commit(self, message: Any = None, asynchronous: bool = True) -> None:
        self.calls.append(("commit", message.offset()))


class ScriptedReporter:
    def __init__(self, answers: list[bool], on_wait: Any = None):
        self.answers = answers
        self.on_wait = on_wait

    def confirm(self, timeout: float) -> bool:
        answer = self.answers.pop(0)
        if not answer and self.on_wait:
            self.on_wait()
        return answer


def wrapper(consumer: FakeConsumer, reporter: ScriptedReporter) -> RecoveringConsumer:
    """A RecoveringConsumer around fakes (its constructor would reach a broker)."""
    made = object.__new__(RecoveringConsumer)
    made.consumer, made.reporter = consumer, reporter  # type: ignore[assignment]
    made._stopped, made._until, made.report_timeout = False, None, 0.0
    made.log = logging.getLogger("test")
    return made


def test_acknowledged_at_once_commits_without_pausing():
    consumer = FakeConsumer([])
    assert wrapper(consumer, ScriptedReporter([True])).reports_confirmed(
        FakeMessage("orders", 0, 7)) is True
    assert consumer.calls == []


def test_the_wait_pauses_and_puts_back_a_record_a_rebalance_handed_out():
    # Partition 2 was assigned meanwhile (not paused) and a record of it came back.
    consumer = FakeConsumer([FakeMessage("orders", 2, 40), None])
    assert wrapper(consumer, ScriptedReporter([False, False, True])).reports_confirmed(
        FakeMessage("orders", 0, 7)) is True
    assert consumer.calls == [("pause", [0, 1]), ("seek", ("orders", 2, 40)),
                              ("pause", [0, 1]), ("resume", [0, 1])]


def test_stopped_while_waiting_commits_nothing_and_seeks_back_to_the_record():
    consumer = FakeConsumer([])
    made = wrapper(consumer, ScriptedReporter([False, False]))
    made.reporter.on_wait = made.stop  # type: ignore[attr-defined]
    assert made.reports_confirmed(FakeMessage("orders", 1, 9)) is False
    assert consumer.calls == [("pause", [0, 1]), ("seek", ("orders", 1, 9)),
                              ("resume", [0, 1])]
