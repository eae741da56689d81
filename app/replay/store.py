"""Replay progress kept in Kafka: the compacted topic ``recovery.replay-progress`` holds the
latest progress per replay name (the record key), so a replay resumes on any machine after
Ctrl-C or a crash. Nothing is kept in a local file."""

from __future__ import annotations

import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from app.kafka.config import consumer_config
from app.replay.progress import Progress
from app.settings import Settings

PROGRESS_TOPIC = "recovery.replay-progress"


def topic_partitions(consumer: Consumer, topic: str, timeout: float = 10) -> list[int] | None:
    """The topic's partitions, None when the cluster does not have the topic."""
    found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return None
    return sorted(found.partitions)


def watermarks(consumer: Consumer, topic: str,
               partitions: list[int], timeout: float = 10) -> tuple[dict[int, int], dict[int, int]]:
    low, high = {}, {}
    for p in partitions:
        low[p], high[p] = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                         timeout=timeout, cached=False)
    return low, high


def offsets_at(consumer: Consumer, topic: str, partitions: list[int], high: dict[int, int],
               timestamp_ms: int, timeout: float = 10) -> dict[int, int]:
    """For each partition the first offset whose timestamp is at or after ``timestamp_ms``
    (the end offset when there is none)."""
    found = consumer.offsets_for_times(
        [TopicPartition(topic, p, timestamp_ms) for p in partitions], timeout=timeout)
    return {tp.partition: tp.offset if tp.offset >= 0 else high[tp.partition] for tp in found}


class ProgressStore:
    def __init__(self, settings: Settings, producer: Producer | None):
        self.settings = settings
        self.topic = settings.topic(PROGRESS_TOPIC)
        self.producer = producer

    def exists(self, consumer: Consumer) -> bool:
        return topic_partitions(consumer, self.topic) is not None

    def load(self, name: str, timeout: float = 30) -> Progress | None:
        """The latest progress stored under ``name`` (None if none, or deleted)."""
        consumer = Consumer(consumer_config(
            self.settings, f"recovery-replay-progress-{uuid.uuid4()}",
            **{"enable.partition.eof": True}))
        try:
            partitions = topic_partitions(consumer, self.topic) or []
            _, high = watermarks(consumer, self.topic, partitions)
            todo = {p for p in partitions if high[p] > 0}
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in todo])
            key = name.encode()
            latest: bytes | None = None
            while todo:
                message = consumer.poll(timeout)
                if message is None:
                    raise TimeoutError(f"reading {self.topic} took longer than {timeout:.0f} s")
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.discard(message.partition())
                        continue
                    raise RuntimeError(f"reading {self.topic}: {error}")
                if message.key() == key:
                    latest = message.value()
                if message.offset() + 1 >= high[message.partition()]:
                    todo.discard(message.partition())
            return Progress.from_json(latest) if latest else None
        finally:
            consumer.close()

    def save(self, progress: Progress) -> None:
        """Queued on the replay's producer; delivered by its next flush."""
        if self.producer is None:
            raise RuntimeError("a progress store that saves needs a producer")
        self.producer.produce(self.topic, key=progress.name.encode(), value=progress.to_json())
