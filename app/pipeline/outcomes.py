"""Building the records the service moves: retries, redeliveries, dead letters and poison.
Each keeps the failed record's key, value and headers byte for byte and appends context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.contracts import headers as h
from app.contracts.records import OutRecord, RawRecord
from app.contracts.topics import redelivery_topic
from app.pipeline.classify import Classification
from app.pipeline.decide import Incident

MAX_MESSAGE_CHARS = 4_096
MAX_STACK_CHARS = 16_384


@dataclass(frozen=True)
class Original:
    """The record whose handling failed, and where it came from."""

    key: bytes | None
    value: bytes | None
    headers: h.Headers
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def original_of(event: dict[str, Any], intake_record: RawRecord) -> Original:
    """The failed record carried by the report, or, when it carries none, the report
    itself, so that what is dead-lettered or poisoned is never nothing."""
    failed = event.get("failed_record")
    if failed:
        timestamp = failed.get("timestamp")
        if hasattr(timestamp, "timestamp"):
            timestamp = int(timestamp.timestamp() * 1000)
        return Original(
            key=failed.get("key"), value=failed.get("value"),
            headers=[(x["key"], x.get("value")) for x in failed.get("headers", [])],
            topic=failed["topic"], partition=failed.get("partition", -1),
            offset=failed.get("offset", -1), timestamp_ms=timestamp,
        )
    return Original(intake_record.key, intake_record.value, intake_record.headers,
                    intake_record.topic, intake_record.partition, intake_record.offset,
                    intake_record.timestamp_ms)


def dispatch_target_of(event: dict[str, Any]) -> str | None:
    if event.get("dispatch_target"):
        return event["dispatch_target"]
    group = (event.get("source") or {}).get("consumer_group")
    return redelivery_topic(group) if group else None


def context(
    event: dict[str, Any], original: Original, incident: Incident,
    classification: Classification, **extra: object | None,
) -> dict[str, object | None]:
    error = event.get("error") or {}
    stack = error.get("stack_trace")
    values: dict[str, object | None] = {
        h.ORIGINAL_TOPIC: original.topic,
        h.ORIGINAL_PARTITION: original.partition,
        h.ORIGINAL_OFFSET: original.offset,
        h.ORIGINAL_TIMESTAMP: original.timestamp_ms,
        h.CONSUMER_GROUP: (event.get("source") or {}).get("consumer_group"),
        h.ERROR_TYPE: error.get("type"),
        h.ERROR_MESSAGE: (error.get("message") or "")[:MAX_MESSAGE_CHARS],
        h.ERROR_STACKTRACE: stack[:MAX_STACK_CHARS] if stack else None,
        h.CLASSIFICATION: classification.header(),
        h.ATTEMPT: incident.attempts,
        h.FIRST_FAILURE: incident.first_failure_ms,
        h.LAST_FAILURE: incident.last_failure_ms,
        h.INCIDENT_ID: incident.incident_id,
        h.FAILURE_EVENT_ID: event.get("event_id"),
    }
    values.update(extra)
    return values


def moved(topic: str, original: Original, ctx: dict[str, object | None]) -> OutRecord:
    return OutRecord(topic, original.key, original.value, h.with_context(original.headers, ctx))


def forwarded(topic: str, key: bytes | None, value: bytes | None, headers: h.Headers,
              **changes: object | None) -> OutRecord:
    """The same record on another hop, with some context headers changed."""
    return OutRecord(topic, key, value, h.with_context(headers, changes))


def redelivery(target: str, key: bytes | None, value: bytes | None,
               headers: h.Headers, **changes: object | None) -> OutRecord:
    """To the consumer: routing-only headers go; incident, attempt, origin and the due time
    stay, so the consumer wrapper can acknowledge the right incident and anyone can see how
    late the retry came."""
    kept = h.without(headers, (h.HELD, h.COMMAND, h.ORIGINAL_KEY, h.DISPATCH_TARGET))
    return OutRecord(target, key, value, h.with_context(kept, changes))
