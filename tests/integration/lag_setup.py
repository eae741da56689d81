"""Known lag on a real broker: a topic with records, and a group's offsets committed where
a test wants them (through the AdminClient, so the group has no member: state EMPTY)."""

from __future__ import annotations

import time

from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def make_topic(bootstrap: str, topic: str, records_per_partition: list[int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, len(records_per_partition), 1)])[topic].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every partition has a leader before producing
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta and meta.error is None and len(meta.partitions) == len(records_per_partition) \
                and all(p.leader >= 0 for p in meta.partitions.values()):
            break
        time.sleep(0.2)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, count in enumerate(records_per_partition):
        for i in range(count):
            producer.produce(topic, key=f"k{i}".encode(), value=b"v", partition=partition)
    assert producer.flush(30) == 0


def commit(bootstrap: str, group: str, topic: str, offsets: list[int]) -> None:
    """A fresh broker refuses commits per partition while it loads its groups (the call
    itself succeeds): try until every partition is committed."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, offset) for p, offset in enumerate(offsets)])
    deadline = time.monotonic() + 30
    while True:
        result = admin.alter_consumer_group_offsets([request])[group].result(30)
        errors = [tp.error for tp in result.topic_partitions if tp.error]
        if not errors:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"offsets for {group} not committed: {errors}")
        time.sleep(0.3)
