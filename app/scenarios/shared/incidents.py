"""Helpers the scenario strategies share for events they take over from the generic
pipeline: reading the decoded event, and keeping the incident's record (so a report read
again after a crash is recognised and the incident's state stays truthful)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.pipeline.classify import Classification, classify
from app.pipeline.decide import SEEN_LIMIT, Incident


def occurred_ms(event: dict[str, Any]) -> int:
    occurred = event["occurred_at"]
    return int(occurred.timestamp() * 1000) if hasattr(occurred, "timestamp") else int(occurred)


def detail_of(event: dict[str, Any], record_name: str) -> dict[str, Any] | None:
    """The event's detail record when it is the named one (fastavro gives (name, fields))."""
    detail = event.get("detail")
    if isinstance(detail, tuple) and detail[0].rsplit(".", 1)[-1] == record_name:
        return dict(detail[1])
    return None


def classification_of(pipeline: Any, event: dict[str, Any]) -> Classification:
    error = event["error"]
    return classify(pipeline.policies.rules, kind=event["kind"], error_type=error["type"],
                    reported_severity=error["severity"])


def note_report(incident: Incident, event: dict[str, Any], classification: Classification,
                now_ms: int, *, state: str, what: str) -> Incident:
    """The incident after a report a strategy handled itself. A report seen before leaves
    it as it is."""
    if event["event_id"] in incident.seen:
        return incident
    at = occurred_ms(event)
    reopened = incident.terminal
    noted = replace(
        incident,
        reports=incident.reports + 1,
        cycle=incident.cycle + 1 if reopened else incident.cycle,
        first_failure_ms=(incident.first_failure_ms if incident.first_failure_ms and not reopened
                          else at),
        last_failure_ms=at,
        classification=classification.as_record(),
        consumer_group=(event.get("source") or {}).get("consumer_group")
        or incident.consumer_group,
        kind=event.get("kind") or incident.kind,
        seen=(*incident.seen, event["event_id"])[-SEEN_LIMIT:],
    )
    return noted.step(now_ms, what, state=state)
