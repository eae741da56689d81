"""A topic just created by another process may be unknown to the broker asked for its
configuration: that answer is asked again, within a bound (app/kafka/topics.py)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from app.kafka.topics import described_configs


class Entry:
    def __init__(self, value: str) -> None:
        self.value = value


class Admin:
    """Answers with `errors` (one per call, then the configuration)."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.calls = 0

    def describe_configs(self, resources, request_timeout: float):
        self.calls += 1
        answers = {}
        for resource in resources:
            future: Future = Future()
            if self.errors:
                future.set_exception(KafkaException(KafkaError(self.errors[0])))
            else:
                future.set_result({"retention.ms": Entry("1000")})
            answers[resource] = future
        if self.errors:
            self.errors.pop(0)
        return answers


def test_an_unknown_topic_is_asked_again_until_the_broker_knows_it():
    admin = Admin([KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_OR_PART])
    assert described_configs(admin, ["t.recovery.events"], timeout=10) == {
        "t.recovery.events": {"retention.ms": "1000"}}
    assert admin.calls == 3


def test_other_errors_and_an_unknown_topic_past_the_bound_are_raised():
    with pytest.raises(KafkaException):
        described_configs(Admin([KafkaError.TOPIC_AUTHORIZATION_FAILED]), ["t"], timeout=10)
    with pytest.raises(KafkaException):
        described_configs(Admin([KafkaError.UNKNOWN_TOPIC_OR_PART] * 100), ["t"], timeout=0.6)
