"""The incident stage: a failure report in, its incident found or opened, classified and
decided on, recorded, and handed to the outcomes (or to the strategy that owns it).

Runs inside the incident agent, whose table is co-partitioned with the failure topic, so one
incident's reports are handled in order by one worker."""

from __future__ import annotations

import logging
from typing import Any

from app.contracts import lifecycle
from app.contracts.failure_event import FailureEvent
from app.contracts.lifecycle import step_id
from app.contracts.records import OutRecord, RawRecord
from app.pipeline import decide as d
from app.pipeline import intake
from app.pipeline.classify import Classification, classify
from app.pipeline.outcomes import Outcomes, dispatch_target_of
from app.pipeline.services import Services
from app.pipeline.strategy import Strategies, StrategyContext, Table

log = logging.getLogger(__name__)


def classify_event(services: Services, event: FailureEvent) -> Classification:
    return classify(services.policies.rules, kind=event.kind, error_type=event.error_type,
                    reported_severity=event.reported_severity)


def scenario_payload(event: FailureEvent, classification: dict[str, str]) -> dict[str, Any]:
    return {"errorType": event.error_type, "message": event.message,
            "classification": classification, **event.detail_fields}


class IncidentStage:
    def __init__(self, services: Services, strategies: Strategies, outcomes: Outcomes):
        self.services = services
        self.strategies = strategies
        self.outcomes = outcomes

    async def on_failure(self, record: RawRecord, incidents: Table) -> None:
        services = self.services
        received = intake.receive(record, services.codec, now_ms=services.clock.now_ms())
        if isinstance(received, intake.Quarantined):
            log.warning("poison %s[%d]@%d: %s", record.topic, record.partition, record.offset,
                        received.reason)
            await services.send(OutRecord(services.topics.poison, received.key,
                                          received.value, received.headers))
            return
        event, incident_id = FailureEvent(received.event), received.incident_id
        classification = classify_event(services, event)
        target = dispatch_target_of(event)
        report = d.Report(event.event_id, event.occurred_at_ms, classification,
                          can_redeliver=bool(event.failed_record and target),
                          consumer_group=event.consumer_group, dispatch_target=target,
                          kind=event.kind,
                          position=(record.topic, record.partition, record.offset))
        before = d.Incident.from_json(incidents.get(incident_id), incident_id)
        owner = self.strategies.owner_of(event)
        if owner is not None:
            await self.emit_received(event, before, classification.as_record())
            await owner.handle(StrategyContext(services, event, record, before, classification,
                                               None, incidents))
            return
        decision = d.decide(before, report, services.policies.retry_for(classification.type))
        if isinstance(decision, d.Duplicate):
            # Processed before a crash: the state was saved, the outputs may not have been.
            # Send them again; their ids are deterministic, so readers see one outcome.
            again = d.replayed(before, report.event_id)
            if again is not None:
                await self.apply(event, record, again[0], classification, again[1], incidents)
            return
        incident = d.record_report(before, report, decision, services.clock.now_ms())
        incidents[incident_id] = incident.to_json()
        await self.apply(event, record, incident, classification, decision, incidents)

    async def emit_received(self, event: FailureEvent, incident: d.Incident,
                            cls: dict[str, str]) -> None:
        incident_id, event_id = incident.incident_id, event.event_id
        common = {"failure_event_id": event_id, "classification": cls,
                  "attempt": incident.attempts}
        await self.services.emit(lifecycle.FAILURE_RECEIVED, incident_id,
                                 step_id=step_id(event_id, "received"),
                                 payload={"kind": event.kind, "errorType": event.error_type,
                                          "service": event.service}, **common)
        payload = scenario_payload(event, cls)
        payload.update(self.strategies.reported_fields(event))
        await self.services.emit(lifecycle.reported_event(event.kind), incident_id,
                                 step_id=step_id(event_id, "classified"), payload=payload,
                                 **common)

    async def apply(self, event: FailureEvent, record: RawRecord, incident: d.Incident,
                    classification: Classification, decision: d.Decision,
                    incidents: Table) -> None:
        """Sends what a decision calls for. Runs again, unchanged, for a report redelivered
        after a crash, so everything here (strategies included) must be idempotent."""
        await self.emit_received(event, incident, classification.as_record())
        ctx = StrategyContext(self.services, event, record, incident, classification,
                              decision, incidents)
        handled = await self.strategies.after_decision(ctx)
        await self.outcomes.apply(ctx, handled=handled)
        await self.strategies.after_apply(ctx)
