"""Commands on an incident, from the incident-commands topic: `ack` (a redelivery was
handled: the incident completes) and `replay` (a dead letter goes back to its consumer).
The record's key is the incident id; the command is the `recovery.command` header."""

from __future__ import annotations

import logging

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.lifecycle import step_id
from app.contracts.records import RawRecord
from app.pipeline import decide as d
from app.pipeline.outcomes import redelivery
from app.pipeline.services import Services
from app.pipeline.strategy import Strategies, Table

log = logging.getLogger(__name__)

ACK = "ack"
REPLAY = "replay"


class CommandStage:
    def __init__(self, services: Services, strategies: Strategies):
        self.services = services
        self.strategies = strategies

    async def on_command(self, record: RawRecord, incidents: Table) -> None:
        command = h.header_value(record.headers, h.COMMAND)
        incident_id = (record.key or b"").decode(errors="replace")
        incident = d.Incident.from_json(incidents.get(incident_id), incident_id)
        if command == ACK:
            await self.acknowledge(record, incident, incidents)
        elif command == REPLAY:
            await self.replay(record, incident, incidents)
        else:
            log.warning("ignoring unknown command %r for %s", command, incident_id)

    async def acknowledge(self, record: RawRecord, incident: d.Incident,
                          incidents: Table) -> None:
        done, duration = d.acknowledge(incident, self.services.clock.now_ms())
        if duration is None:
            return
        incident_id = incident.incident_id
        incidents[incident_id] = done.to_json()
        await self.services.emit(
            lifecycle.RECOVERY_COMPLETED, incident_id,
            step_id=step_id(incident_id, "completed", cycle=done.cycle),
            attempt=done.attempts, outcome="completed", duration_ms=duration,
            classification=done.classification,
            payload={"attemptsRequired": done.attempts,
                     "replayId": h.header_value(record.headers, h.REPLAY_ID)})
        await self.strategies.on_completed(self.services, done)

    async def replay(self, record: RawRecord, incident: d.Incident, incidents: Table) -> None:
        if incident.state != "dead_lettered":
            return  # already replayed or reopened: a replay is delivered once
        target = h.header_value(record.headers, h.DISPATCH_TARGET) or incident.dispatch_target
        if not target:
            return
        incident_id = incident.incident_id
        replay_id = h.header_value(record.headers, h.REPLAY_ID)
        incidents[incident_id] = incident.step(self.services.clock.now_ms(), "replayed",
                                               state="retrying").to_json()
        await self.services.send(redelivery(
            target, h.header_bytes(record.headers, h.ORIGINAL_KEY), record.value,
            record.headers, **{h.REPLAY_ID: replay_id}))
        await self.services.emit(lifecycle.REDELIVERED, incident_id,
                                 step_id=step_id(incident_id, "replay", detail=replay_id),
                                 attempt=incident.attempts,
                                 payload={"target": target, "replayId": replay_id,
                                          "fromDeadLetter": True})
