"""Reading skipped input records again (app/offset_gaps.read_range) from a real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.worker.offset_gaps import read_range

pytestmark = pytest.mark.integration


@pytest.fixture
def filled_topic(kafka_bootstrap: str) -> str:
    topic = f"gap-read-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=1,
                         headers=[("n", str(i).encode())])
    assert producer.flush(30) == 0
    return topic


def config(bootstrap: str) -> dict[str, str]:
    return {"bootstrap.servers": bootstrap, "group.id": "gap-reader-test"}


def test_the_records_between_two_offsets_come_back_whole(kafka_bootstrap: str,
                                                          filled_topic: str):
    records = read_range(config(kafka_bootstrap), filled_topic, 1, 3, 7)
    assert [r.offset for r in records] == [3, 4, 5, 6]
    assert [r.value for r in records] == [b"v3", b"v4", b"v5", b"v6"]
    assert records[0].key == b"k3" and records[0].headers == [("n", b"3")]
    assert all(r.topic == filled_topic and r.partition == 1 for r in records)
    assert records[0].timestamp_ms and records[0].timestamp_ms > 1_600_000_000_000


def test_a_range_up_to_the_end_of_the_partition_ends_there(kafka_bootstrap: str,
                                                           filled_topic: str):
    records = read_range(config(kafka_bootstrap), filled_topic, 1, 8, 10, timeout_s=20)
    assert [r.offset for r in records] == [8, 9]
