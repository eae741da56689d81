"""The one port through which the pipeline's side effects leave: every record it moves
(retries, redeliveries, dead letters, poison, commands) and every lifecycle event it emits.

The worker gives it a transport (Faust's producer today); the pipeline never sees Kafka.
Observers hear of each lifecycle event once it is sent: the worker's counters and the
strategies that watch every event (coordinated recovery)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from app.avro.codec import AvroCodec
from app.contracts import lifecycle
from app.contracts.clock import Clock
from app.contracts.records import OutRecord

LifecycleObserver = Callable[[dict[str, Any]], Awaitable[None]]


class Transport(Protocol):
    async def send(self, record: OutRecord) -> None: ...


class Outbox:
    def __init__(self, transport: Transport, codec: AvroCodec, events_topic: str,
                 clock: Clock):
        self.transport = transport
        self.codec = codec
        self.events_topic = events_topic
        self.clock = clock
        self._observers: list[LifecycleObserver] = []

    def observe(self, observer: LifecycleObserver) -> None:
        self._observers.append(observer)

    async def send(self, record: OutRecord) -> None:
        await self.transport.send(record)

    async def emit(self, event_type: str, incident_id: str, *, step_id: str,
                   **fields: Any) -> dict[str, Any]:
        """Sends one lifecycle event. `step_id` is its event id, built by
        `lifecycle.step_id`: a step done again after a crash carries the same id."""
        event = lifecycle.lifecycle_event(event_type, incident_id, event_id=step_id,
                                          occurred_at=self.clock.now_ms(), **fields)
        await self.send(OutRecord(self.events_topic, incident_id.encode(),
                                  self.codec.encode(lifecycle.SUBJECT, event), None))
        for observer in self._observers:
            await observer(event)
        return event
