"""Scenario 4: consumer processing errors (the source's ConsumerFailureHandler), handled
by the severity of the crash.

- FATAL and CRITICAL (`handleCriticalConsumerError`): a `stop` command to the consumer, the
  failed event to the poison topic (the generic pipeline's Poison decision), a
  `restart_safe_mode` command (skipPoisonMessages, enableDebugLogging, reduceParallelism,
  and the poisoned record to skip), then the recovery watch of app/health.py (15 s checks,
  5 min window): confirmed when the restarted consumer processes events, escalated at once
  if it reports `failed` (the restart failed), degraded/escalated when the window closes.
  On confirmation the consumer is told to `resume` normal operation.
- ERROR (`handleRecoverableConsumerError`): reprocessed through the retry topics with 1 s,
  2 s, 4 s back-off (policy `[retry.consumer_crash]`); a successful reprocessing emits
  `communication/consumer_recovered` with attemptsRequired; when retries run out the
  policy's `poison` makes it a CRITICAL crash, handled as above.
- Anything lower (`handleMinorConsumerError`): logged, and processing continues.

The commands travel on `recovery.control` (app/client/control.py), which the client API's
consumer wrappers obey."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from app.client import control as ctl
from app.contracts import lifecycle
from app.contracts.records import OutRecord
from app.pipeline import decide as d
from app.pipeline import health
from app.pipeline.strategy import BaseStrategy, StrategyContext
from app.scenarios.shared.incidents import classification_of, detail_of, note_report

log = logging.getLogger(__name__)

KIND = "CONSUMER_CRASHED"
CRASH_TYPE = "consumer_crash"

QUARANTINE = "quarantine"  # FATAL, CRITICAL
REPROCESS = "reprocess"  # ERROR
LOG = "log"  # anything lower

CONSUMER_CRASHED = "communication/consumer_crashed"
CONSUMER_RECOVERED = "communication/consumer_recovered"
CONSUMER_RECOVERY_CONFIRMED = health.CONFIRMED
STOP_REQUESTED = "communication/consumer_stop_requested"
SAFE_MODE_RESTART_REQUESTED = "communication/consumer_safe_mode_restart_requested"
RESUME_REQUESTED = "communication/consumer_resume_requested"
ERROR_LOGGED = "communication/consumer_error_logged"


def response_for(severity: str) -> str:
    """The source's switch on classification.severity."""
    if severity in ("FATAL", "CRITICAL"):
        return QUARANTINE
    if severity == "ERROR":
        return REPROCESS
    return LOG


def consumer_of(event: dict[str, Any]) -> str | None:
    """The crashed consumer: its group as reported, else the detail's consumer id."""
    group = (event.get("source") or {}).get("consumer_group")
    if group:
        return str(group)
    detail = detail_of(event, "ConsumerCrashed")
    return str(detail["consumer_id"]) if detail and detail.get("consumer_id") else None


def poisoned_records(event: dict[str, Any]) -> tuple[ctl.RecordId, ...]:
    failed = event.get("failed_record")
    if not failed or int(failed.get("offset", -1)) < 0:
        return ()
    return (ctl.RecordId(str(failed["topic"]), int(failed.get("partition", 0)),
                         int(failed["offset"])),)


def quarantines(event: dict[str, Any], decision: d.Decision | None) -> bool:
    """A crash whose generic decision is Poison: FATAL/CRITICAL at once, or ERROR once its
    reprocessing retries ran out."""
    return event["kind"] == KIND and isinstance(decision, d.Poison)


def handled_as(severity: str) -> str:
    """An ERROR crash that reaches quarantine has exhausted its retries: the source calls
    the critical handler with severity CRITICAL."""
    return severity if severity in ("FATAL", "CRITICAL") else "CRITICAL"


def stop_command(event: dict[str, Any], group: str, incident_id: str,
                 issued_at_ms: int) -> ctl.ControlCommand:
    return ctl.control_command(ctl.STOP, group, command_id=f"{event['event_id']}:stop",
                               incident_id=incident_id, issued_at_ms=issued_at_ms)


def restart_command(event: dict[str, Any], group: str, incident_id: str,
                    issued_at_ms: int) -> ctl.ControlCommand:
    return ctl.control_command(ctl.RESTART_SAFE_MODE, group,
                               command_id=f"{event['event_id']}:restart-safe-mode",
                               incident_id=incident_id, options=dict(ctl.SAFE_MODE_OPTIONS),
                               skip=poisoned_records(event), issued_at_ms=issued_at_ms)


def resume_command(group: str, restart_id: str, incident_id: str | None,
                   issued_at_ms: int) -> ctl.ControlCommand:
    return ctl.control_command(ctl.RESUME, group, command_id=f"{restart_id}:resume",
                               incident_id=incident_id, issued_at_ms=issued_at_ms)


def watch_start(group: str, restart: ctl.ControlCommand) -> dict[str, Any]:
    """The heartbeat-topic record that starts the recovery watch (app/health.start_watch)."""
    return {"group": group, "watch": health.SAFE_MODE_RESTART,
            "control_id": restart.command_id, "incident_id": restart.incident_id}


def resumes_after(before: health.ConsumerHealth | None, outcome: health.WatchOutcome) -> bool:
    """A safe-mode restart confirmed: the consumer goes back to normal operation."""
    return (before is not None and before.watch_reason == health.SAFE_MODE_RESTART
            and outcome.event_type == CONSUMER_RECOVERY_CONFIRMED)


class ConsumerCrashStrategy(BaseStrategy):
    name = "consumer_crash"
    kinds = frozenset({KIND})

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline
        self.control_topic = pipeline.settings.topic(ctl.TOPIC)
        self.heartbeats_topic = pipeline.settings.topic("recovery.heartbeats")

    # Minor errors: the strategy takes the event; nothing is retried or quarantined.
    def takes_over(self, event: dict[str, Any]) -> bool:
        return event["kind"] == KIND and response_for(
            classification_of(self.pipeline, event).severity) == LOG

    async def handle(self, ctx: StrategyContext) -> None:
        event, incident = ctx.event, ctx.incident
        event_id, incident_id = event["event_id"], incident.incident_id
        logged = note_report(incident, event, ctx.classification, lifecycle.now_ms(),
                             state="completed", what="minor consumer error logged")
        if logged is not incident:
            ctx.incidents[incident_id] = logged.to_json()
        log.warning("minor consumer error (%s) in %s: %s", ctx.classification.severity,
                    consumer_of(event), event["error"]["message"])
        common = {"failure_event_id": event_id, "classification": ctx.classification.as_record()}
        await self.pipeline.emit(ERROR_LOGGED, incident_id,
                                 step_id=lifecycle.step_id(event_id, "logged"),
                                 payload={"consumerId": consumer_of(event),
                                          "severity": ctx.classification.severity,
                                          "error": event["error"]["message"],
                                          "processingContinues": True}, **common)
        await self.pipeline.emit(lifecycle.RECOVERY_COMPLETED, incident_id,
                                 step_id=lifecycle.step_id(event_id, "completed"),
                                 outcome="completed",
                                 payload={"action": "logged", "processingContinues": True},
                                 **common)

    # FATAL / CRITICAL (and ERROR once exhausted): stop before the poison, restart after.
    async def after_decision(self, ctx: StrategyContext) -> bool:
        group = consumer_of(ctx.event)
        if not quarantines(ctx.event, ctx.decision) or group is None:
            if quarantines(ctx.event, ctx.decision):
                log.info("crash report %s names no consumer: nothing to stop or restart",
                            ctx.event["event_id"])
            return False
        command = stop_command(ctx.event, group, ctx.incident.incident_id, lifecycle.now_ms())
        await self.send_command(command)
        await self.emit_step(ctx, STOP_REQUESTED, "stop", group, command,
                             {"handledAs": handled_as(ctx.classification.severity)})
        return False

    async def after_apply(self, ctx: StrategyContext) -> None:
        group = consumer_of(ctx.event)
        if not quarantines(ctx.event, ctx.decision) or group is None:
            return
        command = restart_command(ctx.event, group, ctx.incident.incident_id,
                                  lifecycle.now_ms())
        await self.send_command(command)
        await self.pipeline.send(OutRecord(
            self.heartbeats_topic, group.encode(),
            orjson.dumps(watch_start(group, command)), []))
        watch = self.pipeline.watch
        await self.emit_step(ctx, SAFE_MODE_RESTART_REQUESTED, "restart-safe-mode", group,
                             command, {"options": command.options,
                                       "skip": [s.to_json() for s in command.skip],
                                       "monitoring": {"checkIntervalMs": watch.check_interval_ms,
                                                      "windowMs": watch.window_ms}})

    async def on_completed(self, pipeline: Any, incident: d.Incident) -> None:
        if (incident.classification or {}).get("type") != CRASH_TYPE:
            return
        await pipeline.emit(CONSUMER_RECOVERED, incident.incident_id,
                            step_id=lifecycle.step_id(incident.incident_id, "consumer-recovered",
                                                      cycle=incident.cycle),
                            attempt=incident.attempts, classification=incident.classification,
                            payload={"consumerId": incident.consumer_group,
                                     "recoveredEvent": {"incidentId": incident.incident_id},
                                     "attemptsRequired": incident.attempts})

    async def on_watch_outcome(self, pipeline: Any, group: str, before: Any,
                               outcome: Any) -> None:
        if not resumes_after(before, outcome) or not before.watch_control_id:
            return
        incident_id = before.watch_incident_id or f"consumer:{group}"
        command = resume_command(group, before.watch_control_id, before.watch_incident_id,
                                 lifecycle.now_ms())
        await self.send_command(command)
        await pipeline.emit(RESUME_REQUESTED, incident_id, step_id=command.command_id,
                            payload={"consumerId": group, "commandId": command.command_id,
                                     "command": command.command})

    async def send_command(self, command: ctl.ControlCommand) -> None:
        await self.pipeline.send(OutRecord(self.control_topic, command.target.encode(),
                                           command.encode(), []))

    async def emit_step(self, ctx: StrategyContext, event_type: str, step: str, group: str,
                        command: ctl.ControlCommand, extra: dict[str, Any]) -> None:
        event_id = ctx.event["event_id"]
        await self.pipeline.emit(event_type, ctx.incident.incident_id,
                                 step_id=lifecycle.step_id(event_id, step),
                                 failure_event_id=event_id,
                                 classification=ctx.classification.as_record(),
                                 attempt=ctx.incident.attempts,
                                 payload={"consumerId": group, "commandId": command.command_id,
                                          "command": command.command, **extra})


def install(app: Any, pipeline: Any) -> ConsumerCrashStrategy:
    return ConsumerCrashStrategy(pipeline)
