"""Commands on an incident, from the incident-commands topic: `ack` (a redelivery was
handled: the incident completes), `replay` (a dead letter goes back to its consumer) and
`watchdog` (the incident may be past its deadline: app/pipeline/watchdog.py). The record's
key is the incident id; the command is the `recovery.command` header.

A command for an incident the table does not know (never reported here, or not restored
yet) is never dropped without a word: a `recovery/command_unmatched` lifecycle event says
so, and an ack goes to the dead-letter topic with its reason; the incident, if it exists, is
then finished by the watchdog (its retry sent again and acknowledged, or dead-lettered)."""

from __future__ import annotations

import logging

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.lifecycle import step_id
from app.contracts.records import RawRecord
from app.pipeline import decide as d
from app.pipeline.outcomes import forwarded, redelivery
from app.pipeline.services import Services
from app.pipeline.strategy import Strategies, Table
from app.pipeline.watchdog_stage import WatchdogStage

log = logging.getLogger(__name__)

ACK = "ack"
REPLAY = "replay"
WATCHDOG = "watchdog"


def watchdog_command(incident_id: str, at_ms: int, consumer_healthy: bool | None = None
                     ) -> tuple[bytes, h.Headers]:
    """The key and headers of the timer's nudge for one incident, found due at `at_ms`, with
    its consumer's health as the timer read it then (None: the agent reads it)."""
    headers: h.Headers = [(h.COMMAND, WATCHDOG.encode()), (h.DECIDED_AT, str(at_ms).encode())]
    if consumer_healthy is not None:
        headers.append((h.CONSUMER_HEALTHY, b"1" if consumer_healthy else b"0"))
    return incident_id.encode(), headers


def pinned_health(headers: h.Headers | None) -> bool | None:
    """The health a watchdog command carries; None when it carries none (or a bad value)."""
    return {"1": True, "0": False}.get(h.header_value(headers, h.CONSUMER_HEALTHY) or "")


class CommandStage:
    def __init__(self, services: Services, strategies: Strategies, watchdog: WatchdogStage):
        self.services = services
        self.strategies = strategies
        self.watchdog = watchdog

    async def on_command(self, record: RawRecord, incidents: Table) -> None:
        command = h.header_value(record.headers, h.COMMAND)
        incident_id = (record.key or b"").decode(errors="replace")
        incident = d.Incident.from_json(incidents.get(incident_id), incident_id)
        if command in (ACK, REPLAY) and incident.unknown:
            await self.unmatched(record, command, incident_id)
        elif command == ACK:
            await self.acknowledge(record, incident, incidents)
        elif command == REPLAY:
            await self.replay(record, incident, incidents)
        elif command == WATCHDOG:
            # As of the time the timer found it due (a command without one: now). Handled
            # again after a crash, the command then decides as it did: the first run's
            # outputs may be on the broker while its table write was lost, and a later clock
            # could turn a redispatch into a dead letter beside an acknowledgement. The same
            # holds for the consumer's health, which the command carries too.
            at_ms = h.header_int(record.headers, h.DECIDED_AT)
            await self.watchdog.check(incident, incidents,
                                      self.services.clock.now_ms() if at_ms is None else at_ms,
                                      consumer_healthy=pinned_health(record.headers))
        else:
            log.warning("ignoring unknown command %r for %s", command, incident_id)

    async def unmatched(self, record: RawRecord, command: str | None, incident_id: str) -> None:
        """An ack goes to the dead-letter topic with its reason; a replay's record is a dead
        letter already (it stays there), so it is only reported."""
        reason = f"{command} for an incident this worker does not know"
        log.error("%s %s (%s[%d]@%d)", reason, incident_id, record.topic, record.partition,
                  record.offset)
        if command == ACK:
            await self.services.send(forwarded(
                self.services.topics.dlq, record.key, record.value, record.headers,
                **{h.REASON: reason, h.ORIGINAL_TOPIC: record.topic,
                   h.ORIGINAL_PARTITION: record.partition, h.ORIGINAL_OFFSET: record.offset}))
        await self.services.emit(
            lifecycle.COMMAND_UNMATCHED, incident_id,
            step_id=step_id(incident_id, "unmatched",
                            detail=f"{record.topic}:{record.partition}:{record.offset}"),
            payload={"command": command, "reason": reason,
                     "position": [record.topic, record.partition, record.offset]})

    async def acknowledge(self, record: RawRecord, incident: d.Incident,
                          incidents: Table) -> None:
        done, duration = d.acknowledge(incident, self.services.clock.now_ms())
        if done is incident:  # finished already: a repeated acknowledgement
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
        # A replayed dead letter begins a new cycle: the dead letter was the last one's
        # outcome, and this one ends in its own (`<incident>:<cycle>:completed`), with the
        # watchdog's allowance afresh.
        incidents[incident_id] = incident.step(
            self.services.clock.now_ms(), "replayed", state="retrying",
            cycle=incident.cycle + 1, watchdog_redispatches=0).to_json()
        await self.services.send(redelivery(
            target, h.header_bytes(record.headers, h.ORIGINAL_KEY), record.value,
            record.headers, **{h.REPLAY_ID: replay_id}))
        await self.services.emit(lifecycle.REDELIVERED, incident_id,
                                 step_id=step_id(incident_id, "replay", detail=replay_id),
                                 attempt=incident.attempts,
                                 payload={"target": target, "replayId": replay_id,
                                          "fromDeadLetter": True})
