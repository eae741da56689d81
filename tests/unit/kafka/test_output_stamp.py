"""The worker's identity on its lifecycle events (recovery.emitted.by): stamped on the
topics the worker names, replacing an earlier hop's stamp, and never on a record moved for a
user (app/kafka/outputs.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.contracts.records import OutRecord
from app.kafka.outputs import OutputProducer


class Recording:
    def __init__(self, config: dict[str, Any]):
        self.sent: list[tuple[str, list]] = []

    def produce(self, topic: str, value: bytes, key: bytes, *, headers: Any,
                on_delivery: Any) -> None:
        self.sent.append((topic, headers))
        on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0


def test_only_the_named_topics_are_stamped_and_an_earlier_stamp_is_replaced():
    made: list[Recording] = []
    outputs = OutputProducer({}, make_producer=lambda c: made.append(Recording(c)) or made[-1])
    outputs.stamp = lambda topic: [("by", b"w:2/g5")] if topic == "events" else []

    async def run() -> None:
        with outputs.batch() as group:
            await outputs.send(OutRecord("events", b"k", b"v", [("by", b"w:1/g4")]))
            await outputs.send(OutRecord("orders", b"k", b"v", [("type", b"snapshot")]))
            await outputs.send(OutRecord("orders", b"k", b"v", []))
            await outputs.deliver(group)

    asyncio.run(run())
    assert made[0].sent == [("events", [("by", b"w:2/g5")]),
                            ("orders", [("type", b"snapshot")]), ("orders", None)]
