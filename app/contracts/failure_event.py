"""The failure event (schema failure-event): built from plain arguments, read through a typed
view."""

from __future__ import annotations

import uuid
from typing import Any

from app.contracts.clock import now_ms, to_ms

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


class FailureEvent:
    """A decoded failure event (schema failure-event), read through named properties.

    `raw` is the record as fastavro decoded it: what the codec encodes again, and what
    the few places that copy whole sub-records use."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw

    def __repr__(self) -> str:
        return f"FailureEvent({self.event_id!r}, kind={self.kind!r}, error={self.error_type!r})"

    @property
    def event_id(self) -> str:
        return self.raw["event_id"]

    @property
    def work_item_id(self) -> str | None:
        return self.raw.get("work_item_id")

    @property
    def kind(self) -> str:
        return self.raw.get("kind") or "UNKNOWN"

    @property
    def occurred_at_ms(self) -> int:
        return to_ms(self.raw["occurred_at"])

    # source
    @property
    def source(self) -> dict[str, Any]:
        return self.raw.get("source") or {}

    @property
    def service(self) -> str:
        return self.source.get("service") or ""

    @property
    def instance(self) -> str | None:
        return self.source.get("instance")

    @property
    def consumer_group(self) -> str | None:
        return self.source.get("consumer_group")

    # error
    @property
    def error(self) -> dict[str, Any]:
        return self.raw.get("error") or {}

    @property
    def error_type(self) -> str:
        return self.error.get("type") or ""

    @property
    def message(self) -> str:
        return self.error.get("message") or ""

    @property
    def stack_trace(self) -> str | None:
        return self.error.get("stack_trace")

    @property
    def reported_severity(self) -> str | None:
        return self.error.get("severity")

    @property
    def error_details(self) -> dict[str, str]:
        return dict(self.error.get("details") or {})

    # what failed, and where a retry goes
    @property
    def failed_record(self) -> dict[str, Any] | None:
        return self.raw.get("failed_record")

    @property
    def dispatch_target(self) -> str | None:
        return self.raw.get("dispatch_target")

    @property
    def detail_name(self) -> str | None:
        detail = self.raw.get("detail")
        return detail[0].rsplit(".", 1)[-1] if isinstance(detail, tuple) else None

    @property
    def detail_fields(self) -> dict[str, Any]:
        detail = self.raw.get("detail")
        return dict(detail[1]) if isinstance(detail, tuple) else {}

    def detail(self, record_name: str) -> dict[str, Any] | None:
        """The scenario detail record when it is the named one (`McpConnectionLost`, ...)."""
        return self.detail_fields if self.detail_name == record_name else None

    # Transitional: the record's own fields by name, for code not yet on the properties.
    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)
