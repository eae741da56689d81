"""Building failure-event records (schema failure-event) from plain arguments."""

from __future__ import annotations

import uuid
from typing import Any

from app.contracts.lifecycle import now_ms

SUBJECT = "failure-event"


def new_failure_event(
    *,
    kind: str,
    error_type: str,
    service: str,
    message: str = "",
    work_item_id: str | None = None,
    consumer_group: str | None = None,
    instance: str | None = None,
    severity: str | None = None,
    stack_trace: str | None = None,
    details: dict[str, str] | None = None,
    failed_record: dict[str, Any] | None = None,
    dispatch_target: str | None = None,
    detail: tuple[str, dict[str, Any]] | None = None,
    event_id: str | None = None,
    occurred_at: int | None = None,
) -> dict[str, Any]:
    """`detail` is (record name, fields), e.g. ("McpConnectionLost", {"server_id": "s1"}):
    fastavro picks the union branch by that name."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "work_item_id": work_item_id,
        "kind": kind,
        "occurred_at": occurred_at if occurred_at is not None else now_ms(),
        "source": {"service": service, "instance": instance, "consumer_group": consumer_group},
        "error": {
            "type": error_type,
            "message": message,
            "stack_trace": stack_trace,
            "severity": severity,
            "details": details or {},
        },
        "failed_record": failed_record,
        "dispatch_target": dispatch_target,
        "detail": (f"io.recovery.v1.{detail[0]}", detail[1]) if detail else None,
    }
