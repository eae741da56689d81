"""Helpers for the oversize unit tests: records as a consumer would read them."""

from __future__ import annotations

from app.contracts.records import OutRecord
from app.oversize.records import Incoming


def as_incoming(records: list[OutRecord], partition: int = 0, first_offset: int = 0
                ) -> list[Incoming]:
    return [Incoming(r.topic, partition, first_offset + i, 1_700_000_000_000 + i, r.key,
                     bytes(r.value) if r.value is not None else None, list(r.headers))
            for i, r in enumerate(records)]


def at(record: Incoming, offset: int, partition: int | None = None) -> Incoming:
    return Incoming(record.topic, record.partition if partition is None else partition, offset,
                    record.timestamp_ms, record.key, record.value, record.headers)
