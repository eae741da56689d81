"""The consumer-health stage: heartbeats from the client API, the leader's periodic checks
(which travel through the same topic, as table writes need a stream event) and the watches
started on purpose (Scenario 4). The decisions are app/pipeline/health.py's."""

from __future__ import annotations

import logging

import orjson

from app.contracts import headers as h
from app.contracts.lifecycle import step_id
from app.contracts.records import OutRecord, RawRecord
from app.pipeline import health
from app.pipeline.commands import REPLAY
from app.pipeline.services import Services
from app.pipeline.strategy import Strategies, Table

log = logging.getLogger(__name__)


def check_record(group: str) -> bytes:
    """The leader's nudge for one group's health check."""
    return orjson.dumps({"group": group, "check": True})


class HeartbeatStage:
    def __init__(self, services: Services, strategies: Strategies):
        self.services = services
        self.strategies = strategies

    async def on_heartbeat(self, record: RawRecord, health_table: Table) -> None:
        services, now = self.services, self.services.clock.now_ms()
        try:
            beat = orjson.loads(record.value or b"")
            group = str(beat["group"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await services.send(OutRecord(services.topics.poison, record.key, record.value,
                                          h.with_context(record.headers, {
                                              h.ORIGINAL_TOPIC: record.topic,
                                              h.ORIGINAL_PARTITION: record.partition,
                                              h.ORIGINAL_OFFSET: record.offset,
                                              h.REASON: "malformed heartbeat"})))
            return
        current = health.ConsumerHealth.from_json(health_table.get(group), group)
        if beat.get("watch"):
            # A watch started on purpose (Scenario 4, after a restart in safe mode).
            health_table[group] = health.start_watch(
                current, group, now, reason=str(beat["watch"]),
                control_id=beat.get("control_id"), incident_id=beat.get("incident_id")).to_json()
            return
        if beat.get("check"):
            if current is not None:
                await self.check(group, current, health_table)
            return
        updated = health.on_heartbeat(current, group, str(beat.get("status", health.HEALTHY)),
                                      int(beat.get("events_processed", 0)), now,
                                      control_id=beat.get("control_id"))
        health_table[group] = updated.to_json()

    async def check(self, group: str, current: health.ConsumerHealth,
                    health_table: Table) -> None:
        services, now = self.services, self.services.clock.now_ms()
        outcome = health.check(current, now, services.watch)
        health_table[group] = outcome.health.to_json()
        if outcome.event_type:
            await services.emit(outcome.event_type, f"consumer:{group}",
                                step_id=step_id(f"consumer:{group}", outcome.event_type,
                                                detail=str(now)),
                                outcome="escalated" if outcome.event_type == health.ESCALATED
                                else None,
                                payload={"consumerId": group,
                                         "healthMetrics": outcome.health.to_json()})
            await self.strategies.on_watch_outcome(services, group, current, outcome)
        if outcome.replay_dead_letters:
            await self.replay_dead_letters(group)

    async def replay_dead_letters(self, group: str) -> None:
        """Each of the group's dead letters goes to the incident-commands topic as a replay
        command; the incident agent sends it on only if its incident is still dead-lettered,
        so a dead letter is replayed once."""
        services = self.services
        for dead in await services.scan_dead_letters(group):
            incident_id = h.header_value(dead.headers, h.INCIDENT_ID)
            if not incident_id:
                continue
            await services.send(OutRecord(
                services.topics.commands, incident_id.encode(), dead.value,
                h.with_context(dead.headers, {
                    h.COMMAND: REPLAY, h.ORIGINAL_KEY: dead.key,
                    h.REPLAY_ID: f"{dead.partition}:{dead.offset}"})))
