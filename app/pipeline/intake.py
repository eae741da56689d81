"""Intake of failure events: decode, identify the incident, or quarantine what cannot be read.
Pure functions over the record and the time of receipt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.avro.codec import AvroCodec, DecodeError
from app.contracts import headers as h
from app.contracts.records import RawRecord

FAILURE_SUBJECT = "failure-event"


@dataclass(frozen=True)
class Accepted:
    incident_id: str
    event: dict[str, Any]


@dataclass(frozen=True)
class Quarantined:
    key: bytes | None
    value: bytes | None
    headers: h.Headers
    reason: str


def incident_id_of(event: dict[str, Any]) -> str:
    return event.get("work_item_id") or event["event_id"]


def receive(record: RawRecord, codec: AvroCodec, *, now_ms: int) -> Accepted | Quarantined:
    try:
        event = codec.decode(record.value, FAILURE_SUBJECT)
    except DecodeError as exc:
        return quarantine(record, f"undecodable failure event: {exc}", now_ms=now_ms)
    return Accepted(incident_id_of(event), event)


def quarantine(record: RawRecord, reason: str, *, now_ms: int) -> Quarantined:
    context = {
        h.ORIGINAL_TOPIC: record.topic,
        h.ORIGINAL_PARTITION: record.partition,
        h.ORIGINAL_OFFSET: record.offset,
        h.ORIGINAL_TIMESTAMP: record.timestamp_ms,
        h.REASON: reason,
        h.LAST_FAILURE: now_ms,
    }
    return Quarantined(record.key, record.value, h.with_context(record.headers, context), reason)
