"""Reading the dead-letter topic: every record of one consumer group, from the beginning to
the end offsets seen at the start (so a scan always finishes). Never writes to the DLQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from app.contracts import headers as h
from app.contracts.records import RawRecord
from app.kafka.config import consumer_config, for_bootstrap
from app.settings import Settings


def read_dead_letters(settings: Settings | str, topic: str, *,
                      extra: dict | None = None) -> Iterator[RawRecord]:
    """The settings, or a bootstrap address reached with the environment's security
    settings."""
    if isinstance(settings, str):
        settings = for_bootstrap(settings)
    consumer = Consumer(consumer_config(
        settings, f"recovery-dlq-scan-{uuid.uuid4()}",
        **{"enable.partition.eof": True, **(extra or {})}))
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise KafkaException(f"topic {topic} not found")
        ends = {}
        for p in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        remaining = set(ends)
        while remaining:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                continue
            partition, offset = message.partition(), message.offset()
            if offset >= ends[partition]:
                remaining.discard(partition)
                continue
            yield RawRecord(topic, partition, offset, message.timestamp()[1], message.key(),
                            message.value(), list(message.headers() or []))
            if offset + 1 >= ends[partition]:
                remaining.discard(partition)
    finally:
        consumer.close()


def scan_dead_letters(settings: Settings | str, topic: str, group: str) -> list[RawRecord]:
    return [dead for dead in read_dead_letters(settings, topic)
            if h.header_value(dead.headers, h.CONSUMER_GROUP) == group]
