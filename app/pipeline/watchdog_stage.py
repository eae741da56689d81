"""The watchdog's stage in the incident agent: for an incident the timer found overdue,
decide again (app/pipeline/watchdog.py) and act: send its retry once more, dead-letter its
failed record, or escalate. The failed record is read again from the failure report at the
incident's report position, so what is re-sent or dead-lettered is the original, byte for
byte, with the same context headers as the retry path."""

from __future__ import annotations

import logging

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.failure_event import FailureEvent
from app.contracts.lifecycle import step_id
from app.pipeline import decide as d
from app.pipeline import intake, watchdog
from app.pipeline.classify import FALLBACK, Classification
from app.pipeline.outcomes import Original, context, moved, original_of, redelivery
from app.pipeline.services import Services
from app.pipeline.strategy import Table

log = logging.getLogger(__name__)


class WatchdogStage:
    def __init__(self, services: Services):
        self.services = services

    def consumer_healthy(self, incident: d.Incident, now_ms: int) -> bool:
        return self.services.consumer_healthy(incident.consumer_group, now_ms)

    def decide(self, incident: d.Incident, now_ms: int,
               consumer_healthy: bool | None = None) -> watchdog.WatchdogAction:
        """`consumer_healthy` as the command carries it; None: read now."""
        services = self.services
        classification = classification_of(incident)
        healthy = (self.consumer_healthy(incident, now_ms) if consumer_healthy is None
                   else consumer_healthy)
        return watchdog.act(
            incident, now_ms,
            retry=services.policies.retry_for(classification.type),
            ack_timeout_ms=services.settings.ack_timeout_ms,
            consumer_healthy=healthy, policy=services.watchdog)

    async def check(self, incident: d.Incident, incidents: Table, now_ms: int,
                    consumer_healthy: bool | None = None) -> None:
        """Decides as of `now_ms` (the watchdog command's time) and the consumer health it
        carries, and acts."""
        action = self.decide(incident, now_ms, consumer_healthy)
        if isinstance(action, watchdog.Wait):
            return
        if isinstance(action, d.Escalate):
            await self.escalate(incident, incidents, action.reason, now_ms)
            return
        found = await self.failed_record(incident)
        if found is None:
            await self.escalate(incident, incidents, f"{watchdog.UNACKNOWLEDGED}; the failure "
                                "report can no longer be read (retention?)", now_ms)
            return
        event, original = found
        headers = context(event, original, incident, classification_of(incident))
        if isinstance(action, watchdog.Redispatch):
            await self.redispatch(incident, incidents, original, headers, now_ms)
        else:
            await self.dead_letter(incident, incidents, original, headers, action.reason,
                                   now_ms)

    async def escalate(self, incident: d.Incident, incidents: Table, reason: str,
                       now: int) -> None:
        incident_id = incident.incident_id
        incidents[incident_id] = incident.step(now, "watchdog: escalated",
                                               state="escalated").to_json()
        await self.services.emit(
            lifecycle.ESCALATED, incident_id,
            step_id=step_id(incident_id, "watchdog-escalated", cycle=incident.cycle),
            attempt=incident.attempts, outcome="escalated",
            classification=incident.classification,
            payload={"reason": reason, "state": incident.state})

    async def redispatch(self, incident: d.Incident, incidents: Table, original: Original,
                         headers: dict[str, object | None], now: int) -> None:
        target = incident.dispatch_target
        incident_id = incident.incident_id
        if not target:
            await self.dead_letter(incident, incidents, original, headers,
                                   f"{watchdog.UNACKNOWLEDGED}: no dispatch target", now)
            return
        incidents[incident_id] = watchdog.redispatched(incident, now).to_json()
        await self.services.send(redelivery(target, original.key, original.value,
                                            moved(target, original, headers).headers))
        await self.services.emit(
            lifecycle.WATCHDOG_REDISPATCHED, incident_id,
            step_id=step_id(incident_id, "watchdog-redispatched", attempt=incident.attempts),
            attempt=incident.attempts, classification=incident.classification,
            payload={"target": target, "ackTimeoutMs": self.services.settings.ack_timeout_ms})

    async def dead_letter(self, incident: d.Incident, incidents: Table, original: Original,
                          headers: dict[str, object | None], reason: str, now: int) -> None:
        incident_id = incident.incident_id
        incidents[incident_id] = incident.step(now, f"watchdog: {reason}",
                                               state="dead_lettered").to_json()
        await self.services.send(moved(self.services.topics.dlq, original,
                                       {**headers, h.REASON: reason}))
        await self.services.emit(
            lifecycle.DEAD_LETTERED, incident_id,
            step_id=step_id(incident_id, "watchdog-dead-lettered", cycle=incident.cycle),
            attempt=incident.attempts, outcome="dead_lettered",
            classification=incident.classification, payload={"reason": reason})

    async def failed_record(self, incident: d.Incident) -> tuple[FailureEvent, Original] | None:
        if incident.report_position is None:
            return None
        topic, partition, offset = incident.report_position
        record = await self.services.read_record(topic, partition, offset)
        if record is None:
            return None
        received = intake.receive(record, self.services.codec,
                                  now_ms=self.services.clock.now_ms())
        if isinstance(received, intake.Quarantined):
            log.error("watchdog: report of %s at %s[%d]@%d no longer decodes: %s",
                      incident.incident_id, topic, partition, offset, received.reason)
            return None
        event = FailureEvent(received.event)
        return event, original_of(event, record)


def classification_of(incident: d.Incident) -> Classification:
    try:
        return Classification(**(incident.classification or {}))
    except TypeError:
        return FALLBACK
