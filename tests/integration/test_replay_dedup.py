"""Replays delivered once, and the window of that promise (docs/how-it-works.md, "Replays
delivered once"): the client API remembers replay ids in memory, so within one consumer's
life a replay id reaches the handler once, and after a restart a replay sent again is
delivered again."""

from __future__ import annotations

import pytest
from confluent_kafka import Message, Producer

from app.client import RecoveringConsumer
from app.client.consumer import ensure_topic, redelivery_topic
from app.contracts import headers as h
from tests.conftest import wait_until
from tests.integration.test_pipeline import ConsumerThread, client_settings

pytestmark = pytest.mark.integration


def test_a_replay_id_is_delivered_once_per_consumer_life(applied_topics, topic_prefix):
    settings = client_settings(applied_topics)
    bootstrap = settings.kafka_bootstrap_servers
    group = f"{topic_prefix}mailer"
    target = redelivery_topic(group)
    ensure_topic(bootstrap, target, partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap})

    def replay(value: bytes, replay_id: str | None) -> None:
        headers = [("trace", b"t")] + ([(h.REPLAY_ID, replay_id.encode())] if replay_id else [])
        producer.produce(target, key=b"m", value=value, headers=headers)
        producer.flush(10)

    handled: list[bytes] = []

    def handler(message: Message) -> None:
        handled.append(message.value())

    # The same dead letter replayed twice (two runs, or the worker and by hand), then a
    # record without a replay id that marks how far the consumer has read.
    replay(b"letter", "0:17")
    replay(b"letter", "0:17")
    replay(b"marker-1", None)
    first = RecoveringConsumer(group, [], service="mailer", settings=settings, control=False)
    with ConsumerThread(first, handler):
        assert wait_until(lambda: b"marker-1" in handled, timeout=60)
    assert handled == [b"letter", b"marker-1"]

    # After a restart the ids seen before are forgotten: the same replay sent a third time
    # is delivered again. This is the documented window, not a wish.
    replay(b"letter", "0:17")
    replay(b"marker-2", None)
    second = RecoveringConsumer(group, [], service="mailer", settings=settings, control=False)
    with ConsumerThread(second, handler):
        assert wait_until(lambda: b"marker-2" in handled, timeout=60)
    assert handled == [b"letter", b"marker-1", b"letter", b"marker-2"]
