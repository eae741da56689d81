"""A commit the broker refuses (coordinator moving, rebalance) does not stop a service built
on RecoveringConsumer: the offset stays and the service goes on."""

from __future__ import annotations

from types import SimpleNamespace

from confluent_kafka import KafkaError, KafkaException

from app.client.consumer import RecoveringConsumer


class Message:
    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return 42


def consumer_that(raises: KafkaException | None):
    calls: list[object] = []

    def commit(message, asynchronous):
        calls.append(message)
        if raises is not None:
            raise raises

    return SimpleNamespace(consumer=SimpleNamespace(commit=commit)), calls


def test_a_refused_commit_is_logged_and_the_service_goes_on(caplog) -> None:
    refused = KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Not coordinator"))
    fake, calls = consumer_that(refused)
    assert RecoveringConsumer.commit(fake, Message()) is False
    assert len(calls) == 1
    assert "orders[1]@42: commit refused" in caplog.text


def test_an_accepted_commit_says_so() -> None:
    fake, calls = consumer_that(None)
    assert RecoveringConsumer.commit(fake, Message()) is True
    assert len(calls) == 1
