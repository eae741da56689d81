"""Helpers the scenario strategies share for events they take over from the generic
pipeline: classifying the decoded event before the pipeline does, keeping the incident's
record (so a report read again after a crash is recognised and the incident's state stays
truthful), and emitting the lifecycle steps they take about the event."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.contracts import lifecycle
from app.contracts.failure_event import FailureEvent
from app.pipeline.classify import Classification, classify
from app.pipeline.decide import SEEN_LIMIT, Incident
from app.pipeline.strategy import StrategyContext, StrategyServices


def classification_of(services: StrategyServices, event: FailureEvent) -> Classification:
    """The event's classification by the policies' rules (what the generic pipeline will
    find: `takes_over` is asked before it classifies)."""
    return classify(services.policies.rules, kind=event.kind, error_type=event.error_type,
                    reported_severity=event.reported_severity)


def note_report(incident: Incident, event: FailureEvent, classification: Classification,
                now_ms: int, *, state: str, what: str) -> Incident:
    """The incident after a report a strategy handled itself. A report seen before leaves
    it as it is."""
    if event.event_id in incident.seen:
        return incident
    at = event.occurred_at_ms
    reopened = incident.terminal
    noted = replace(
        incident,
        reports=incident.reports + 1,
        cycle=incident.cycle + 1 if reopened else incident.cycle,
        first_failure_ms=(incident.first_failure_ms if incident.first_failure_ms and not reopened
                          else at),
        last_failure_ms=at,
        classification=classification.as_record(),
        consumer_group=event.consumer_group or incident.consumer_group,
        kind=event.kind,
        seen=(*incident.seen, event.event_id)[-SEEN_LIMIT:],
    )
    return noted.step(now_ms, what, state=state)


def note_handled(ctx: StrategyContext, state: str, what: str) -> None:
    """Keeps the report the strategy handled itself on its incident (note_report), at the
    services' clock, in the incidents table."""
    noted = note_report(ctx.incident, ctx.event, ctx.classification,
                        ctx.services.clock.now_ms(), state=state, what=what)
    if noted is not ctx.incident:
        ctx.incidents[ctx.incident.incident_id] = noted.to_json()


async def emit_step(ctx: StrategyContext, event_type: str, step: str,
                    payload: dict[str, Any], *, outcome: str | None = None,
                    **fields: Any) -> None:
    """A lifecycle event for a step taken about the context's failure event, naming the event
    and its classification. Its id is derived from the failure event's, so a report
    processed again (after a crash) emits the same step again, recognisably."""
    event_id = ctx.event.event_id
    await ctx.services.emit(event_type, ctx.incident.incident_id,
                            step_id=lifecycle.step_id(event_id, step),
                            failure_event_id=event_id,
                            classification=ctx.classification.as_record(),
                            outcome=outcome, payload=payload, **fields)
