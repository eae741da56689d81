"""Recovery lifecycle events: names and record construction (schema lifecycle-event)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

SUBJECT = "lifecycle-event"

FAILURE_RECEIVED = "recovery/failure_received"
CLASSIFIED = "recovery/classified"
RETRY_SCHEDULED = "recovery/retry_scheduled"
REDELIVERED = "recovery/redelivered"
RECOVERY_COMPLETED = "recovery/recovery_completed"
DEAD_LETTERED = "recovery/dead_lettered"
POISONED = "recovery/poisoned"
ESCALATED = "recovery/escalated"
RETRY_HELD = "recovery/retry_held"

# The source document's event names for a failure as first reported, per failure kind.
REPORTED_EVENT = {
    "MCP_CONNECTION_LOST": "communication/mcp_connection_lost",
    "TOOL_DISCOVERY_FAILED": "communication/tool_discovery_failed",
    "EVENT_DELIVERY_FAILED": "communication/event_delivery_failed",
    "CONSUMER_CRASHED": "communication/consumer_crashed",
    "CACHE_CORRUPTED": "communication/cache_corrupted",
    "VERSION_CONFLICT": "communication/cache_corrupted",
    "NETWORK_PARTITION": "communication/network_partition_detected",
}


def reported_event(kind: str) -> str:
    return REPORTED_EVENT.get(kind, "communication/failure_reported")


def now_ms() -> int:
    return int(time.time() * 1000)


def lifecycle_event(
    event_type: str,
    incident_id: str,
    *,
    failure_event_id: str | None = None,
    attempt: int = 0,
    classification: dict[str, str] | None = None,
    outcome: str | None = None,
    duration_ms: int | None = None,
    payload: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        # Deterministic ids make a re-emitted step (after a crash) recognisable downstream.
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "incident_id": incident_id,
        "failure_event_id": failure_event_id,
        "occurred_at": now_ms(),
        "attempt": attempt,
        "classification": classification,
        "outcome": outcome,
        "duration_ms": duration_ms,
        "payload_json": orjson.dumps(payload or {}, default=str).decode(),
    }
