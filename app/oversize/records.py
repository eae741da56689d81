"""The records reassembly reads and what it gives back, independent of the Kafka client."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.contracts import headers as h


@dataclass(frozen=True)
class Incoming:
    """A record as consumed (from confluent-kafka or Faust)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | bytearray | None
    headers: h.Headers

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass
class Whole:
    """A message as its producer sent it: reassembled, decompressed or fetched, with its
    original key and headers. `value` may be a bytearray (a reassembled message is handed
    over in the buffer it was assembled in rather than copied)."""

    topic: str
    partition: int
    offset: int  # the record that completed it (the last fragment to arrive)
    first_offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | bytearray | None
    headers: h.Headers
    message_id: str | None
    strategy: str | None  # None for a record that was never oversized
    sources: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class Rejected:
    """Records that go to the dead-letter topic ("dlq") or the poison topic ("poison") with
    a reason, byte for byte as they came."""

    destination: str
    reason: str
    records: list[Incoming]
