"""Recovery lifecycle events: names and record construction (schema lifecycle-event)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from app.contracts.clock import now_ms

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
# A command (ack, replay) for an incident the worker does not know; it is dead-lettered.
COMMAND_UNMATCHED = "recovery/command_unmatched"
# The watchdog sent an overdue retry once more.
WATCHDOG_REDISPATCHED = "recovery/watchdog_redispatched"

# Consumer health watch (Scenario 3/4).
CONSUMER_UNHEALTHY = "communication/consumer_unhealthy"
CONSUMER_RECOVERY_CONFIRMED = "communication/consumer_recovery_confirmed"
CONSUMER_DEGRADED = "communication/consumer_degraded"

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


# The outcomes that end an incident's cycle (a lifecycle event's `outcome`).
TERMINAL_OUTCOMES = frozenset({"completed", "dead_lettered", "poisoned", "escalated"})


def reopens(event: Mapping[str, Any]) -> bool:
    """A step that begins a new cycle of an incident: a new failure report, or one of its
    dead letters replayed (its redelivery's step id is `<incident>:replay:<replay id>`)."""
    return event["event_type"] == FAILURE_RECEIVED or (
        event["event_type"] == REDELIVERED and ":replay:" in event["event_id"])


def conflicting(events: Iterable[Mapping[str, Any]]) -> bool:
    """Whether an incident's lifecycle events (one of each event id, in the order of
    recovery.events, where one incident's events share a partition) hold two terminal
    outcomes with no reopening between them: two outcomes for one cycle. A dead letter
    replayed and then completed is two cycles, one outcome each."""
    ended = False
    for event in events:
        if reopens(event):
            ended = False
        elif event["outcome"] in TERMINAL_OUTCOMES:
            if ended:
                return True
            ended = True
    return False


def reported_event(kind: str) -> str:
    return REPORTED_EVENT.get(kind, "communication/failure_reported")


def step_id(owner: str, step: str, *, cycle: int | None = None, attempt: int | None = None,
            detail: str | None = None) -> str:
    """The one place lifecycle event ids are built. They are deterministic, so a step done
    again after a crash (its input read twice) carries the id it had the first time and
    readers see one step. `owner` is the failure event's id for steps that answer one
    report, else the incident's id:

        owner:step               a step answering one report (`e-1:retry-2`, `e-1:poisoned`)
        owner:cycle:step         a step of one incident cycle (`inc:2:completed`)
        owner:step-attempt       a step of one retry attempt (`inc:redelivered-3`)
        owner:step:detail        one of many steps of its kind (`inc:replay:0:17`)
    """
    if cycle is not None:
        return f"{owner}:{cycle}:{step}"
    if attempt is not None:
        return f"{owner}:{step}-{attempt}"
    if detail is not None:
        return f"{owner}:{step}:{detail}"
    return f"{owner}:{step}"


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
    occurred_at: int | None = None,
) -> dict[str, Any]:
    return {
        # Deterministic ids make a re-emitted step (after a crash) recognisable downstream.
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "incident_id": incident_id,
        "failure_event_id": failure_event_id,
        "occurred_at": occurred_at if occurred_at is not None else now_ms(),
        "attempt": attempt,
        "classification": classification,
        "outcome": outcome,
        "duration_ms": duration_ms,
        "payload_json": orjson.dumps(payload or {}, default=str).decode(),
    }
