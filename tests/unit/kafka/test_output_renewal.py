"""An output producer that failed fatally (librdkafka's idempotence can) refuses every
record from then on: the worker's outputs must go on through a new producer, the batch
delivered and nothing dropped. The replacement is a real librdkafka producer on
librdkafka's in-process mock cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from app.contracts.records import OutRecord
from app.kafka.outputs import DeliveryFailed, OutputProducer


class FailedProducer:
    """A producer after a fatal error: every produce is refused with it."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.purged = False

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._FATAL, "sequence gap", fatal=True))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def purge(self, **kwargs: Any) -> None:
        self.purged = True

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_a_fatal_producer_is_replaced_and_the_batch_is_delivered_through_the_new_one():
    made: list[Any] = []

    def make(config: dict[str, Any]) -> Any:
        producer = FailedProducer(config) if not made else Producer(
            {**config, "test.mock.num.brokers": 1})
        made.append(producer)
        return producer

    failures: list[str] = []
    outputs = OutputProducer({"bootstrap.servers": "unused:9092"}, make_producer=make,
                             on_failure=lambda record, error: failures.append(error),
                             retry_pause_s=(0.01, 0.01))

    async def batch() -> None:
        with outputs.batch() as group:
            for i in range(3):
                await outputs.send(OutRecord("t", f"k{i}".encode(), b"v", []))
            await asyncio.wait_for(outputs.deliver(group), 30)

    asyncio.run(batch())
    assert len(made) == 2 and made[0].purged
    assert outputs.renewals == 1 and outputs.fatal is None
    assert len(failures) == 3 and all("sequence gap" in f for f in failures)
    assert outputs.undelivered == 0
    assert outputs.close() == 0


def test_a_refusal_that_is_not_fatal_keeps_the_producer():
    outputs = OutputProducer({"test.mock.num.brokers": 1, "message.max.bytes": 1000},
                             retry_pause_s=(0.01, 0.01))

    async def too_large() -> None:
        try:
            await outputs.send(OutRecord("t", b"k", b"x" * 5000, []))
        except DeliveryFailed as exc:
            return exc
        raise AssertionError("a record over message.max.bytes was accepted")

    error = asyncio.run(too_large())
    assert "too large" in str(error).lower() or "size" in str(error).lower()
    assert outputs.renewals == 0
    outputs.close()
