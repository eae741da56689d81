"""Reading what the service wrote, for integration tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, LockedSchemaIds

REPO = Path(__file__).resolve().parent.parent


def locked_codec() -> AvroCodec:
    return AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))


class TopicReader:
    """Reads topics from the beginning, keeping everything seen so far."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.consumer.subscribe(topics)
        self._bootstrap = bootstrap
        self.messages: list[Message] = []

    def poll_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                self.messages.append(message)

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.messages):
                return True
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                self.messages.append(message)
        return predicate(self.messages)

    def read_to_end(self, topics: list[str], timeout: float) -> bool:
        """Reads until it has everything `topics` held when called."""
        ends = end_offsets(self._bootstrap, topics)

        def read() -> bool:
            positions = {(tp.topic, tp.partition): tp.offset
                         for tp in self.consumer.position(self.consumer.assignment())}
            return all(positions.get(tp, -1) >= end for tp, end in ends.items() if end)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not read():
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                self.messages.append(message)
        return read()

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic() == topic]

    def close(self) -> None:
        self.consumer.close()


def lifecycle(codec: AvroCodec, messages: list[Message]) -> list[dict]:
    return [codec.decode(m.value(), "lifecycle-event") for m in messages]


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of `topics` now."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        ends = {}
        metadata = probe.list_topics(timeout=10)
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                _, high = probe.get_watermark_offsets(TopicPartition(topic, partition),
                                                      timeout=10)
                ends[(topic, partition)] = high
        return ends
    finally:
        probe.close()


# librdkafka does not mark these retriable, but a new broker answers them for a while.
COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                      KafkaError.COORDINATOR_NOT_AVAILABLE}


def committed_offsets(bootstrap: str, group: str, partitions: list[tuple[str, int]],
                      timeout: float = 30) -> dict[tuple[str, int], int]:
    """The group's committed offsets (-1001: none), read without joining. A coordinator
    that is moving or still loading (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS on a
    broker just started) is asked again until `timeout`."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                found = probe.committed([TopicPartition(t, p) for t, p in partitions],
                                        timeout=10)
                return {(tp.topic, tp.partition): tp.offset for tp in found}
            except KafkaException as exc:
                error = exc.args[0]
                moving = error.code() in COORDINATOR_MOVING or error.retriable()
                if not moving or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        probe.close()


def wait_processed(bootstrap: str, group: str, topics: list[str], timeout: float) -> bool:
    """The "processed up to offset N" marker: waits until `group` has committed, on every
    partition of `topics`, the end offset it had when this was called (an empty partition
    counts as processed). For the worker this means its outputs for those records are on
    the broker too: Faust flushes its producer before it commits."""
    behind = processed_behind(bootstrap, group, topics, timeout)
    if behind:
        print(f"{group} not processed up to the ends (committed, end): {behind}")
    return not behind


def processed_behind(bootstrap: str, group: str, topics: list[str], timeout: float
                     ) -> dict[str, tuple[int, int]]:
    """wait_processed's wait; what is still behind when it gives up: partition ->
    (committed, end offset when called); empty once everything is processed."""
    ends = end_offsets(bootstrap, topics)

    def behind() -> dict[str, tuple[int, int]]:
        done = committed_offsets(bootstrap, group, [tp for tp, end in ends.items() if end])
        return {f"{tp[0]}[{tp[1]}]": (done.get(tp, -1), end) for tp, end in ends.items()
                if end and done.get(tp, -1) < end}

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not behind():
            return {}
        time.sleep(0.2)
    return behind()


WORKER_INPUTS = ("recovery.failures", "recovery.heartbeats", "recovery.incident-commands")


def assigned_inputs(bootstrap: str, group: str) -> list[str]:
    """The topics `group`'s members are assigned now, less Faust's table changelogs (read
    for state, never committed), its leader topic and the retry tiers (a parked record is
    committed only when it is due): the worker's inputs, scenario topics included."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result()
    topics = {tp.topic for member in description.members
              for tp in member.assignment.topic_partitions}
    return sorted(t for t in topics if not t.endswith(("-changelog", "__assignor-__leader"))
                  and ".recovery.retry." not in t)
