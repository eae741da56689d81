"""Reading what the service wrote, for integration tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Message

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

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic() == topic]

    def close(self) -> None:
        self.consumer.close()


def lifecycle(codec: AvroCodec, messages: list[Message]) -> list[dict]:
    return [codec.decode(m.value(), "lifecycle-event") for m in messages]
