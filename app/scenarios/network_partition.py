"""Scenario 6: network partitions and split-brain recovery (the source's
NetworkPartitionHandler).

Reports of kind NETWORK_PARTITION are taken over from the generic pipeline:

- DETECTED (`handleSplitBrainScenario`): the reported partition goes into autonomous mode
  when it can operate autonomously (`enterPartitionedMode`: remote state sync off, local
  leader election, more local caching, conflict logging), else into degraded mode
  (read-only); the mode is a command on `recovery.control` keyed by the partition id, and
  `communication/partition_mode_entered` is emitted. A deadline watch
  (`monitorPartitionRecovery`) escalates if the partition has not healed within
  RECOVERY_PARTITION_WATCH_MS (30 minutes).
- HEALED (the connectivity check finding the system fully connected again:
  `initiatePartitionRecovery`): the state each side wrote while partitioned (versioned
  records on `recovery.partition-state`, keyed by partition id) is collected; conflicting
  keys are resolved by the configured strategy (Scenario 5's resolver); the merged state is
  written to `recovery.state` (every side reads it: synchronizeAllPartitions) and emitted
  (`communication/partition_state_merged`); normal operation resumes (a
  `resume_normal_operation` command); `communication/partition_recovery_completed` carries
  the number of conflicts resolved and whether data integrity was verified.

A side records what it writes while partitioned with app/client/partition_state.py."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.client import control as ctl
from app.contracts import lifecycle
from app.contracts.records import OutRecord
from app.kafka import config as kafka_config
from app.pipeline.conflicts import Resolution, Version, in_conflict, resolve
from app.pipeline.strategy import BaseStrategy, StrategyContext
from app.policy.state import PartitionPolicy
from app.scenarios.cache_conflicts import state_record
from app.scenarios.shared import watches as w
from app.scenarios.shared.incidents import detail_of, note_report, occurred_ms

log = logging.getLogger(__name__)

KIND = "NETWORK_PARTITION"
PARTITION_STATE_TOPIC = "recovery.partition-state"
RECOVERY_WATCH = "partition_recovery"
DETECTED, HEALED = "DETECTED", "HEALED"
AUTONOMOUS, DEGRADED = "autonomous", "degraded"

PARTITION_DETECTED = "communication/network_partition_detected"
PARTITION_MODE_ENTERED = "communication/partition_mode_entered"
PARTITION_STATE_MERGED = "communication/partition_state_merged"
PARTITION_RECOVERY_COMPLETED = "communication/partition_recovery_completed"
AUDIT_TYPE = "partition_conflict_resolution"
MERGED_IN_PAYLOAD = 100  # keys listed in the merged-state event; the rest are counted


def mode_for(can_operate_autonomously: bool) -> str:
    """The source's viability check: autonomous operation, else degraded mode."""
    return AUTONOMOUS if can_operate_autonomously else DEGRADED


def mode_command(partition_id: str, mode: str, policy: PartitionPolicy, *, event_id: str,
                 incident_id: str, components: list[str], now_ms: int) -> ctl.ControlCommand:
    configuration = policy.autonomous if mode == AUTONOMOUS else policy.degraded
    name = ctl.ENTER_PARTITIONED_MODE if mode == AUTONOMOUS else ctl.ENTER_DEGRADED_MODE
    return ctl.control_command(name, partition_id, command_id=f"{event_id}:{mode}",
                               incident_id=incident_id, issued_at_ms=now_ms,
                               options={"mode": mode, "components": components,
                                        "configuration": dict(configuration)})


def watch_id_of(partition_id: str) -> str:
    return f"partition:{partition_id}"


@dataclass(frozen=True)
class SideWrite:
    """One versioned record a side wrote while partitioned."""

    side: str
    key: str
    value: Any
    version: int
    updated_at_ms: int | None

    @classmethod
    def parse(cls, value: bytes | None) -> SideWrite:
        try:
            data = orjson.loads(value or b"")
            return cls(str(data["side"]), str(data["key"]), data.get("value"),
                       int(data.get("version", 0)),
                       int(data["updated_at"]) if data.get("updated_at") is not None else None)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a partition-state record: {exc}") from None


def latest_by_side(writes: list[SideWrite]) -> dict[str, dict[str, Version]]:
    """key -> side -> that side's latest version of it (highest version, then latest
    write, then the later record)."""
    states: dict[str, dict[str, Version]] = {}
    for write in writes:
        version = Version(write.side, write.value, write.version, write.updated_at_ms)
        sides = states.setdefault(write.key, {})
        current = sides.get(write.side)
        if current is None or (version.version, version.updated_at_ms or -1) >= (
                current.version, current.updated_at_ms or -1):
            sides[write.side] = version
    return states


@dataclass(frozen=True)
class MergeResult:
    merged: dict[str, Version]  # key -> the state every side synchronises to
    conflicts: dict[str, Resolution]  # conflicting key -> its resolution
    unresolved: tuple[str, ...]  # conflicts left for a person

    @property
    def conflicts_resolved(self) -> int:
        return len(self.conflicts) - len(self.unresolved)


def merge_partition_states(states: dict[str, dict[str, Version]], strategy: str
                           ) -> MergeResult:
    """Steps 2 and 3 of the source: detect and resolve conflicts, merge the states."""
    merged: dict[str, Version] = {}
    conflicts: dict[str, Resolution] = {}
    unresolved: list[str] = []
    for key in sorted(states):
        versions = [states[key][side] for side in sorted(states[key])]
        newest = max(v.version for v in versions)
        if not in_conflict(versions):
            latest = max(versions, key=lambda v: (v.version, v.updated_at_ms or -1))
            merged[key] = Version("merged", latest.value, newest, latest.updated_at_ms)
            continue
        resolution = resolve(versions, strategy)
        conflicts[key] = resolution
        if resolution.manual:
            unresolved.append(key)
        else:
            merged[key] = Version(resolution.chosen or "merged", resolution.value,
                                  resolution.version if resolution.version is not None
                                  else newest, None)
    return MergeResult(merged, conflicts, tuple(unresolved))


def verify_integrity(states: dict[str, dict[str, Version]], result: MergeResult
                     ) -> tuple[bool, list[str]]:
    """Data integrity after the merge: every key written is in the merged state (or
    explicitly left for a person), no merged version is older than what a side wrote, and a
    resolved conflict's merged value is the resolution's."""
    problems: list[str] = []
    for key, sides in sorted(states.items()):
        if key in result.unresolved:
            problems.append(f"{key}: conflict left for manual resolution")
            continue
        merged = result.merged.get(key)
        if merged is None:
            problems.append(f"{key}: written by {sorted(sides)} but missing from the merge")
            continue
        older = [s for s, v in sides.items() if v.version > merged.version]
        if older:
            problems.append(f"{key}: merged version {merged.version} older than {older}")
        resolution = result.conflicts.get(key)
        if resolution is not None and resolution.value != merged.value:
            problems.append(f"{key}: merged value differs from its resolution")
    return not problems, problems


def collect_partition_writes(settings: Any, topic: str, partition_id: str, since_ms: int,
                             timeout_s: float = 120.0) -> tuple[list[SideWrite], int]:
    """Step 1 (collectPartitionStates): every record for the partition on the partition-state
    topic written since `since_ms`, up to the end offsets at the start of the scan. Returns
    the writes and how many records could not be read."""
    consumer = Consumer(kafka_config.consumer_config(
        settings, f"recovery-partition-scan-{uuid.uuid4().hex[:8]}"))
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            raise LookupError(f"topic {topic} not found")
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in sorted(found.partitions)], timeout=10)
        ends: dict[int, int] = {}
        begin: list[TopicPartition] = []
        for tp in starts:
            high = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if 0 <= tp.offset < high:
                ends[tp.partition] = high
                begin.append(tp)
        consumer.assign(begin)
        writes: list[SideWrite] = []
        unreadable = 0
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            # Done with a partition once its position passes the end seen at the start (a
            # position, not the last record's offset: control records take offsets too).
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
            if message is None or message.error():
                continue
            partition, offset = message.partition(), message.offset()
            if (message.key() or b"").decode(errors="replace") != partition_id:
                continue
            try:
                writes.append(SideWrite.parse(message.value()))
            except ValueError as exc:
                unreadable += 1
                log.warning("partition %s: skipping %s[%d]@%d: %s", partition_id,
                            message.topic(), partition, offset, exc)
        if ends:
            raise TimeoutError(f"{topic}: partitions {sorted(ends)} not read to their end "
                               f"within {timeout_s:.0f} s")
        return writes, unreadable
    finally:
        consumer.close()


class NetworkPartitionStrategy(BaseStrategy):
    name = "network_partition"
    kinds = frozenset({KIND})

    def __init__(self, app: Any, pipeline: Any, policy: PartitionPolicy):
        self.pipeline = pipeline
        self.policy = policy
        settings = pipeline.settings
        self.control_topic = settings.topic(ctl.TOPIC)
        self.partition_state_topic = settings.topic(PARTITION_STATE_TOPIC)
        self.state_topic = settings.topic("recovery.state")
        self.audit_topic = settings.topic("recovery.audit")
        self.watches = w.ensure(app, pipeline)
        self.watches.register(RECOVERY_WATCH, self.on_healed_in_time, self.on_not_healed)

    def takes_over(self, event: dict[str, Any]) -> bool:
        return event["kind"] == KIND

    def open_partitions(self) -> list[str]:
        """Partitions detected and not healed yet (read by coordinated recovery)."""
        return sorted(str(watch.data.get("partitionId")) for watch in
                      self.watches.active(RECOVERY_WATCH))

    async def handle(self, ctx: StrategyContext) -> None:
        detail = detail_of(ctx.event, "NetworkPartition")
        if not detail or not detail.get("partition_id"):
            await self.emit(ctx, lifecycle.ESCALATED, "escalated",
                            {"reason": "the partition report names no partition",
                             "recommendedAction": "fix the reporting service"},
                            outcome="escalated")
            self.note(ctx, "escalated", "partition report without a partition")
            return
        if detail.get("phase") == HEALED:
            await self.healed(ctx, detail)
        else:
            await self.detected(ctx, detail)

    # ---- DETECTED ----------------------------------------------------------------------

    async def detected(self, ctx: StrategyContext, detail: dict[str, Any]) -> None:
        partition_id = str(detail["partition_id"])
        event_id, incident_id = ctx.event["event_id"], ctx.incident.incident_id
        mode = mode_for(bool(detail.get("can_operate_autonomously")))
        now = lifecycle.now_ms()
        components = list(detail.get("components") or [])
        self.note(ctx, "partitioned", f"partition {partition_id}: {mode} mode")
        command = mode_command(partition_id, mode, self.policy, event_id=event_id,
                               incident_id=incident_id, components=components, now_ms=now)
        await self.pipeline.send(OutRecord(self.control_topic, partition_id.encode(),
                                           command.encode(), []))
        await self.emit(ctx, PARTITION_MODE_ENTERED, "mode-entered",
                        {"partitionId": partition_id, "mode": mode,
                         "availableComponents": components,
                         "restrictions": list(detail.get("restrictions") or []),
                         "configuration": command.options["configuration"],
                         "commandId": command.command_id})
        limit = self.pipeline.settings.partition_watch_ms
        detected_at = occurred_ms(ctx.event)
        await self.watches.start(w.Watch(
            watch_id_of(partition_id), RECOVERY_WATCH, incident_id, now, detected_at + limit,
            {"partitionId": partition_id, "detectedAt": detected_at, "eventId": event_id,
             "mode": mode, "classification": ctx.classification.as_record()}))

    async def on_healed_in_time(self, watch: w.Watch, result: dict[str, Any]) -> None:
        log.info("partition %s healed before its deadline", watch.data.get("partitionId"))

    async def on_not_healed(self, watch: w.Watch) -> None:
        """escalatePartitionRecovery: the partition has not healed in time."""
        data = watch.data
        now = lifecycle.now_ms()
        await self.pipeline.emit(
            lifecycle.ESCALATED, watch.incident_id,
            step_id=lifecycle.step_id(data["eventId"], "not-healed"),
            failure_event_id=data["eventId"], classification=data.get("classification"),
            outcome="escalated",
            payload={"reason": "partition_not_healed", "partitionId": data["partitionId"],
                     "mode": data.get("mode"), "partitionedForMs": now - data["detectedAt"],
                     "limitMs": watch.deadline_ms - data["detectedAt"],
                     "recommendedAction": "restore connectivity between the partitions; "
                                          "recovery runs when HEALED is reported"})

    # ---- HEALED ------------------------------------------------------------------------

    async def healed(self, ctx: StrategyContext, detail: dict[str, Any]) -> None:
        partition_id = str(detail["partition_id"])
        event_id, incident = ctx.event["event_id"], ctx.incident
        healed_at = occurred_ms(ctx.event)
        partitioned = incident.state == "partitioned" and incident.first_failure_ms
        detected_at = incident.first_failure_ms if partitioned else \
            healed_at - self.pipeline.settings.partition_watch_ms
        await self.watches.resolve(watch_id_of(partition_id), {"healedAt": healed_at})
        loop = asyncio.get_running_loop()
        try:
            writes, unreadable = await loop.run_in_executor(
                None, collect_partition_writes, self.pipeline.settings,
                self.partition_state_topic, partition_id, detected_at)
        except Exception as exc:  # the broker is the one place the sides' states are
            self.note(ctx, "escalated", f"partition {partition_id}: states not collected")
            await self.emit(ctx, lifecycle.ESCALATED, "escalated",
                            {"reason": f"the sides' states could not be collected: {exc}",
                             "partitionId": partition_id,
                             "recommendedAction": "check the partition-state topic, then "
                                                  "report HEALED again"},
                            outcome="escalated")
            return
        states = latest_by_side(writes)
        result = merge_partition_states(states, self.policy.conflict_strategy)
        now = lifecycle.now_ms()
        for key, resolution in sorted(result.conflicts.items()):
            await self.pipeline.send(OutRecord(self.audit_topic, key.encode(), orjson.dumps({
                "audit_id": f"{event_id}:audit:{key}", "type": AUDIT_TYPE,
                "partitionId": partition_id, "key": key, "resolution": resolution.action,
                "strategy": resolution.strategy, "timestamp": now,
                "incidentId": incident.incident_id,
                "resolved": {"value": resolution.value, "version": resolution.version,
                             "chosen": resolution.chosen, "reason": resolution.reason},
                "conflictData": {side: {"value": v.value, "version": v.version,
                                        "updatedAt": v.updated_at_ms}
                                 for side, v in sorted(states[key].items())}}), []))
        # Step 4: every side synchronises to the merged state.
        for key, version in sorted(result.merged.items()):
            await self.pipeline.send(OutRecord(
                self.state_topic, key.encode(),
                state_record(version.value, version.version, now, "partition_recovery"), []))
        listed = dict(sorted(result.merged.items())[:MERGED_IN_PAYLOAD])
        await self.emit(ctx, PARTITION_STATE_MERGED, "merged", {
            "partitionId": partition_id, "sides": sorted({x.side for x in writes}),
            "recordsCollected": len(writes), "unreadableRecords": unreadable,
            "keys": len(result.merged),
            "mergedState": {k: {"value": v.value, "version": v.version}
                            for k, v in listed.items()},
            "conflicts": {k: r.action for k, r in sorted(result.conflicts.items())},
            "unresolved": list(result.unresolved)})
        # Step 5: resume normal operation.
        resume = ctl.control_command(ctl.RESUME_NORMAL_OPERATION, partition_id,
                                     command_id=f"{event_id}:resume", incident_id=incident.
                                     incident_id, issued_at_ms=now)
        await self.pipeline.send(OutRecord(self.control_topic, partition_id.encode(),
                                           resume.encode(), []))
        intact, problems = verify_integrity(states, result)
        if unreadable:
            intact = False
            problems.append(f"{unreadable} partition-state records could not be read")
        payload = {"originalPartitionEvent": {"partitionId": partition_id,
                                              "detectedAt": detected_at,
                                              "healedEventId": event_id},
                   "recoveryDuration": now - detected_at,
                   "conflictsResolved": result.conflicts_resolved,
                   "conflictsDetected": len(result.conflicts),
                   "dataIntegrityMaintained": intact, "integrityProblems": problems[:20]}
        self.note(ctx, "completed" if intact else "escalated",
                  f"partition {partition_id} recovered")
        await self.emit(ctx, PARTITION_RECOVERY_COMPLETED, "recovered", payload,
                        outcome="completed" if intact else None)
        if not intact:
            await self.emit(ctx, lifecycle.ESCALATED, "escalated",
                            {"reason": "data integrity not verified after the partition",
                             "partitionId": partition_id, "problems": problems[:20],
                             "recommendedAction": "resolve the listed keys by hand; the "
                                                  "conflicts are in the audit topic"},
                            outcome="escalated")

    # ---- plumbing ----------------------------------------------------------------------

    def note(self, ctx: StrategyContext, state: str, what: str) -> None:
        noted = note_report(ctx.incident, ctx.event, ctx.classification, lifecycle.now_ms(),
                            state=state, what=what)
        if noted is not ctx.incident:
            ctx.incidents[ctx.incident.incident_id] = noted.to_json()

    async def emit(self, ctx: StrategyContext, event_type: str, step: str,
                   payload: dict[str, Any], outcome: str | None = None) -> None:
        event_id = ctx.event["event_id"]
        await self.pipeline.emit(event_type, ctx.incident.incident_id,
                                 step_id=lifecycle.step_id(event_id, step),
                                 failure_event_id=event_id,
                                 classification=ctx.classification.as_record(),
                                 outcome=outcome, payload=payload)


def install(app: Any, pipeline: Any) -> NetworkPartitionStrategy:
    policy = pipeline.state_policies.partition
    strategy = NetworkPartitionStrategy(app, pipeline, policy)
    app.network_partition_strategy = strategy
    return strategy
