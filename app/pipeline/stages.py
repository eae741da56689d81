"""The pipeline in stage order, as the worker's agents call it:

    failure report ─▶ IncidentStage (intake, classify, incident, decide) ─▶ Outcomes
    command        ─▶ CommandStage (ack, replay, watchdog ─▶ WatchdogStage)
    retry tier     ─▶ RetryStage (wait, park, hold, dispatch)
    heartbeat      ─▶ HeartbeatStage (health, watch, dead-letter replay)

Every side effect leaves through `services.outbox`; strategies join through `strategies`."""

from __future__ import annotations

from app.contracts.records import RawRecord
from app.pipeline.commands import CommandStage
from app.pipeline.heartbeats import HeartbeatStage
from app.pipeline.incident import IncidentStage
from app.pipeline.outcomes import Outcomes
from app.pipeline.retry.dispatch import RetryStage
from app.pipeline.services import Services
from app.pipeline.strategy import Strategies, Table
from app.pipeline.watchdog_stage import WatchdogStage


class Pipeline:
    def __init__(self, services: Services, strategies: Strategies | None = None):
        self.services = services
        self.strategies = strategies or Strategies([])
        self.outcomes = Outcomes(services)
        self.incidents = IncidentStage(services, self.strategies, self.outcomes)
        self.watchdog = WatchdogStage(services)
        self.commands = CommandStage(services, self.strategies, self.watchdog)
        self.retries = RetryStage(services)
        self.heartbeats = HeartbeatStage(services, self.strategies)

    async def on_incident_input(self, record: RawRecord, incidents: Table) -> None:
        """The incident agent's two inputs: commands and failure reports."""
        if record.topic == self.services.topics.commands:
            await self.commands.on_command(record, incidents)
        else:
            await self.incidents.on_failure(record, incidents)
