"""Cross-communication pattern recovery (the source's CommunicationRecoveryCoordinator):
when several communication patterns fail at once, one coordinated plan.

Every failure the service receives is observed (its `recovery/failure_received`, as the
worker emits it: the strategies' `on_event` hook) as one of the patterns of policy
`[scenario.coordination]`: tool routing, event bus, state sync, network. Observations
(throttled per pattern) and the named incidents' outcomes go to the single-partition topic
`recovery.coordination`, where one agent keeps the window
(RECOVERY_COORDINATION_WINDOW_MS). When at least `min_patterns` distinct patterns are active
in the window (and no plan was made within it), a plan is made
(`analyzeCommunicationFailures`, `createRecoveryPlan`): a step per active pattern, critical
ones (the `critical_patterns`: network, event bus) first and required. It runs
RECOVERY_COORDINATION_SETTLE_MS later (`executeCoordinatedRecovery`): phase 1 stabilises
critical communications and stops at the first failed required step (phase
critical_stabilization); phase 2 restores normal communications; phase 3 verifies system
integrity. `communication/coordinated_recovery_completed` carries the steps' results and
the integrity verification.

Steps (each acts where it can, and says whether its part of the system is sound):
- verify_partitions_healed (network): no partition is still split (Scenario 6's watches);
- stabilize_consumers (event bus): consumers that are down are restarted in safe mode
  (Scenario 4's command and watch); sound when every known consumer is healthy;
- verify_cache_consistency (state sync): no cache repair is waiting for its verification
  (Scenario 5's watches);
- verify_tool_routing (tool routing): every tool-routing incident of the window completed."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import faust
import orjson

from app.client import control as ctl
from app.contracts import lifecycle
from app.contracts.records import OutRecord
from app.pipeline import health
from app.pipeline.strategy import BaseStrategy
from app.policy.state import CoordinationPolicy
from app.scenarios import cache_conflicts, network_partition
from app.scenarios import consumer_crash as crash
from app.scenarios.shared import watches as w

log = logging.getLogger(__name__)

TOPIC = "recovery.coordination"
PLAN_WATCH = "coordinated_plan"
STATE_KEY = "system"
THROTTLE_MS = 1_000

PLANNED = "communication/coordinated_recovery_planned"
COMPLETED = "communication/coordinated_recovery_completed"

# Step per pattern (the plan's vocabulary).
STEP_FOR_PATTERN = {
    "network": "verify_partitions_healed",
    "event_bus": "stabilize_consumers",
    "state_sync": "verify_cache_consistency",
    "tool_routing": "verify_tool_routing",
}
TERMINAL_OK = "completed"


@dataclass(frozen=True)
class Observation:
    """Failures of one pattern seen by an observer: `count` of them, one named."""

    pattern: str
    kind: str
    incident_id: str
    severity: str | None
    at_ms: int
    count: int = 1


SEVERITY_ORDER = ("INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")
SAMPLE = 20  # incidents named per pattern (the count covers them all)


def _rank(severity: str | None) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else -1


def observe(state: dict[str, Any] | None, seen: Observation, window_ms: int
            ) -> dict[str, Any]:
    """The coordinator's state after an observation: per active pattern, when it was first
    and last seen in the window, how many failures, the kinds, the worst severity and the
    latest incidents (a sample); patterns not seen within the window are dropped. Its size
    does not grow with the number of failures."""
    current = state or {}
    patterns = {p: e for p, e in (current.get("patterns") or {}).items()
                if seen.at_ms - e["last_ms"] < window_ms}
    entry = patterns.get(seen.pattern)
    if entry is None:
        entry = {"first_ms": seen.at_ms, "last_ms": seen.at_ms, "count": 0, "kinds": [],
                 "max_severity": seen.severity, "incidents": []}
    incidents = [i for i in entry["incidents"] if i != seen.incident_id]
    incidents = (incidents + [seen.incident_id])[-SAMPLE:]
    patterns[seen.pattern] = {
        "first_ms": min(entry["first_ms"], seen.at_ms),
        "last_ms": max(entry["last_ms"], seen.at_ms),
        "count": entry["count"] + seen.count,
        "kinds": sorted({*entry["kinds"], seen.kind}),
        "max_severity": max((entry["max_severity"], seen.severity), key=_rank),
        "incidents": incidents}
    named = {i for e in patterns.values() for i in e["incidents"]}
    outcomes = {i: o for i, o in (current.get("outcomes") or {}).items() if i in named}
    outcomes[seen.incident_id] = None  # (reported again: open again)
    return {"patterns": patterns, "outcomes": outcomes,
            "last_plan_ms": current.get("last_plan_ms")}


def record_outcome(state: dict[str, Any] | None, incident_id: str, outcome: str
                   ) -> dict[str, Any] | None:
    """An incident named in the state ended. None if it is not named."""
    if not state or incident_id not in (state.get("outcomes") or {}):
        return None
    return {**state, "outcomes": {**state["outcomes"], incident_id: outcome}}


def active_patterns(state: dict[str, Any], now_ms: int, window_ms: int
                    ) -> dict[str, dict[str, Any]]:
    return {p: e for p, e in (state.get("patterns") or {}).items()
            if now_ms - e["last_ms"] < window_ms}


def should_plan(state: dict[str, Any], now_ms: int, window_ms: int,
                policy: CoordinationPolicy) -> bool:
    """Several patterns active at once, and no plan already made within the window."""
    last = state.get("last_plan_ms")
    if last is not None and now_ms - last < window_ms:
        return False
    return len(active_patterns(state, now_ms, window_ms)) >= policy.min_patterns


def analyze(patterns: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """analyzeCommunicationFailures: per pattern, how many failures, which kinds, how
    severe, and the latest incidents."""
    return {pattern: {"incidents": list(e["incidents"]), "failures": e["count"],
                      "kinds": list(e["kinds"]), "maxSeverity": e["max_severity"]}
            for pattern, e in sorted(patterns.items())}


class Throttle:
    """An observer forwards the first failure of a pattern at once, then at most one
    observation per pattern every `interval_ms`, carrying the count of those held back (a
    timer forwards what is still held), so a flood of failures is a trickle on the
    one-partition coordination topic."""

    def __init__(self, interval_ms: int, remember: int = 10_000):
        self.interval_ms = interval_ms
        self.last: dict[str, int] = {}
        self.held: dict[str, tuple[Observation, int]] = {}
        self.forwarded: OrderedDict[str, None] = OrderedDict()
        self.remember = remember

    def admit(self, seen: Observation, now_ms: int) -> Observation | None:
        """The observation to forward now (with the held-back count), or None."""
        pattern = seen.pattern
        _, held = self.held.pop(pattern, (seen, 0))
        if pattern in self.last and now_ms - self.last[pattern] < self.interval_ms:
            self.held[pattern] = (seen, held + 1)
            return None
        return self._forward(replace(seen, count=held + 1), now_ms)

    def due(self, now_ms: int) -> list[Observation]:
        """Held-back observations whose interval has passed."""
        ready = [p for p in self.held if now_ms - self.last.get(p, 0) >= self.interval_ms]
        out = []
        for pattern in ready:
            seen, held = self.held.pop(pattern)
            out.append(self._forward(replace(seen, count=held), now_ms))
        return out

    def _forward(self, seen: Observation, now_ms: int) -> Observation:
        self.last[seen.pattern] = now_ms
        self.forwarded[seen.incident_id] = None
        if len(self.forwarded) > self.remember:
            self.forwarded.popitem(last=False)
        return seen

    def knows(self, incident_id: str) -> bool:
        """Whether this observer named the incident (so its outcome matters)."""
        return incident_id in self.forwarded


@dataclass(frozen=True)
class Step:
    name: str
    pattern: str
    critical: bool
    required: bool
    incidents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    plan_id: str
    critical_steps: tuple[Step, ...]
    normal_steps: tuple[Step, ...]
    analysis: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "analysis": self.analysis,
                "critical_steps": [asdict(s) for s in self.critical_steps],
                "normal_steps": [asdict(s) for s in self.normal_steps]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        def steps(items: list[dict[str, Any]]) -> tuple[Step, ...]:
            return tuple(Step(**{**s, "incidents": tuple(s.get("incidents", ()))})
                         for s in items)

        return cls(data["plan_id"], steps(data["critical_steps"]), steps(data["normal_steps"]),
                   data.get("analysis", {}))


def create_plan(plan_id: str, analysis: dict[str, Any], policy: CoordinationPolicy) -> Plan:
    """createRecoveryPlan: one step per active pattern; critical patterns' steps first (in
    the order the policy lists them) and required; the rest after."""
    critical: list[Step] = []
    normal: list[Step] = []
    order = {p: i for i, p in enumerate(policy.critical_patterns)}
    for pattern in sorted(analysis, key=lambda p: (order.get(p, len(order)), p)):
        name = STEP_FOR_PATTERN.get(pattern)
        if name is None:
            continue
        is_critical = pattern in order
        step = Step(name, pattern, is_critical, is_critical,
                    tuple(analysis[pattern]["incidents"]))
        (critical if is_critical else normal).append(step)
    return Plan(plan_id, tuple(critical), tuple(normal), analysis)


@dataclass(frozen=True)
class StepResult:
    step: str
    pattern: str
    success: bool
    detail: dict[str, Any] = field(default_factory=dict)


RunStep = Callable[[Step], Awaitable[StepResult]]
VerifySystem = Callable[[], Awaitable[dict[str, Any]]]


async def execute_plan(plan: Plan, run_step: RunStep, verify_system: VerifySystem
                       ) -> dict[str, Any]:
    """executeCoordinatedRecovery, step for step."""
    results: list[StepResult] = []
    for step in plan.critical_steps:  # Phase 1: stabilize critical communications
        result = await run_step(step)
        results.append(result)
        if not result.success and step.required:
            return {"success": False, "phase": "critical_stabilization",
                    "failedStep": asdict(step), "results": [asdict(r) for r in results]}
    for step in plan.normal_steps:  # Phase 2: restore normal communications
        results.append(await run_step(step))
    verification = await verify_system()  # Phase 3: verify system integrity
    return {"success": bool(verification.get("isHealthy")), "phase": "completed",
            "results": [asdict(r) for r in results], "systemIntegrity": verification}


def tool_routing_result(step: Step, outcomes: dict[str, str | None]) -> StepResult:
    """Every tool-routing incident of the window completed."""
    detail = {"incidents": {i: outcomes.get(i) for i in step.incidents}}
    ok = all(outcomes.get(i) == TERMINAL_OK for i in step.incidents)
    return StepResult(step.name, step.pattern, ok, detail)


def integrity(open_partitions: list[str], unhealthy: list[str], pending_caches: list[str]
              ) -> dict[str, Any]:
    """verifySystemIntegrity over what the service can see."""
    return {"isHealthy": not (open_partitions or unhealthy or pending_caches),
            "openPartitions": open_partitions, "unhealthyConsumers": unhealthy,
            "pendingCacheVerifications": pending_caches}


class Coordinator(BaseStrategy):
    """Takes no failure event over; observes them all through the lifecycle topic."""

    name = "coordinated"

    def __init__(self, app: Any, pipeline: Any, policy: CoordinationPolicy):
        self.app = app
        self.pipeline = pipeline
        self.policy = policy
        settings = pipeline.settings
        self.window_ms = settings.coordination_window_ms
        self.settle_ms = settings.coordination_settle_ms
        self.topic_name = settings.topic(TOPIC)
        self.control_topic = settings.topic(ctl.TOPIC)
        self.heartbeats_topic = settings.topic("recovery.heartbeats")
        self.watches = w.ensure(app, pipeline)
        self.watches.register(PLAN_WATCH, self.on_plan_due_early, self.on_plan_due)
        self.throttle = Throttle(THROTTLE_MS)
        self.table = app.Table("coordination", default=None, partitions=1, schema=faust.Schema(
            key_type=str, key_serializer="raw", value_serializer="json"))
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                               "key_serializer": "raw", "value_serializer": "raw"}
        coordination = app.topic(self.topic_name, allow_empty=True, **raw)

        @app.timer(THROTTLE_MS / 1000)
        async def forward_held() -> None:
            for seen in self.throttle.due(lifecycle.now_ms()):
                await self.forward(seen)

        @app.agent(coordination, name="coordinator")
        async def coordinator(stream: Any) -> None:
            async for event in stream.events():
                await self.on_coordination(event.message.value)

    # ---- observing -------------------------------------------------------------------------

    async def on_event(self, pipeline: Any, event: dict[str, Any]) -> None:
        """Every lifecycle event this worker emits: failures received (as patterns) and the
        outcomes of the incidents it named."""
        incident = event["incident_id"]
        if incident.startswith("coordination:"):
            return
        message: dict[str, Any] | None = None
        if event["event_type"] == lifecycle.FAILURE_RECEIVED:
            payload = orjson.loads(event["payload_json"] or "{}")
            pattern = self.policy.patterns.get(payload.get("kind", ""))
            occurred = event["occurred_at"]
            at_ms = int(occurred.timestamp() * 1000) if hasattr(occurred, "timestamp") \
                else int(occurred)
            if pattern is not None:
                seen = self.throttle.admit(Observation(
                    pattern, payload["kind"], incident,
                    (event.get("classification") or {}).get("severity"), at_ms),
                    lifecycle.now_ms())
                if seen is not None:
                    await self.forward(seen)
        elif event.get("outcome") and self.throttle.knows(incident):
            message = {"op": "outcome", "incident_id": incident, "outcome": event["outcome"]}
        if message is not None:
            await self.pipeline.send(OutRecord(self.topic_name, STATE_KEY.encode(),
                                               orjson.dumps(message), []))

    async def forward(self, seen: Observation) -> None:
        await self.pipeline.send(OutRecord(self.topic_name, STATE_KEY.encode(), orjson.dumps(
            {"op": "observed", **asdict(seen)}), []))

    async def on_coordination(self, value: bytes | None) -> None:
        try:
            message = orjson.loads(value or b"")
            op = message["op"]
            if op == "outcome":
                incident, outcome = str(message["incident_id"]), str(message["outcome"])
            else:
                seen = Observation(str(message["pattern"]), str(message["kind"]),
                                   str(message["incident_id"]), message.get("severity"),
                                   int(message["at_ms"]), int(message.get("count", 1)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("coordination: ignoring %r: %s", value[:200] if value else value, exc)
            return
        state = self.table.get(STATE_KEY)
        if op == "outcome":
            updated = record_outcome(state, incident, outcome)
            if updated is not None:
                self.table[STATE_KEY] = updated
            return
        state = observe(state, seen, self.window_ms)
        now = lifecycle.now_ms()
        if should_plan(state, now, self.window_ms, self.policy):
            state = {**state, "last_plan_ms": now}
            await self.make_plan(state, now, trigger=seen)
        self.table[STATE_KEY] = state

    async def make_plan(self, state: dict[str, Any], now: int, trigger: Observation) -> None:
        plan_id = f"{trigger.incident_id}:{trigger.at_ms}"
        plan = create_plan(plan_id, analyze(active_patterns(state, now, self.window_ms)),
                           self.policy)
        incident_id = f"coordination:{plan_id}"
        await self.pipeline.emit(PLANNED, incident_id,
                                 step_id=lifecycle.step_id(incident_id, "planned"),
                                 payload={**plan.to_json(), "runsAt": now + self.settle_ms,
                                          "windowMs": self.window_ms})
        await self.watches.start(w.Watch(f"plan:{plan_id}", PLAN_WATCH, incident_id, now,
                                         now + self.settle_ms, plan.to_json()))

    # ---- executing -------------------------------------------------------------------------

    async def on_plan_due_early(self, watch: w.Watch, result: dict[str, Any]) -> None:
        await self.on_plan_due(watch)

    async def on_plan_due(self, watch: w.Watch) -> None:
        plan = Plan.from_json(watch.data)
        result = await execute_plan(plan, lambda step: self.run_step(plan, step),
                                    self.verify_system)
        # No `outcome`: a plan is not a failure's incident (every failure event keeps its
        # own one terminal outcome); its verdict is `success` in the payload.
        await self.pipeline.emit(COMPLETED, watch.incident_id,
                                 step_id=lifecycle.step_id(watch.incident_id, "completed"),
                                 payload={"planId": plan.plan_id, **result})

    async def run_step(self, plan: Plan, step: Step) -> StepResult:
        try:
            if step.name == "verify_partitions_healed":
                open_now = self.open_partitions()
                return StepResult(step.name, step.pattern, not open_now,
                                  {"openPartitions": open_now})
            if step.name == "stabilize_consumers":
                return await self.stabilize_consumers(plan, step)
            if step.name == "verify_cache_consistency":
                pending = self.pending_caches()
                return StepResult(step.name, step.pattern, not pending,
                                  {"pendingCacheVerifications": pending})
            if step.name == "verify_tool_routing":
                return tool_routing_result(step, self.outcomes())
        except Exception as exc:  # a step that breaks is a failed step, not a dead agent
            log.exception("coordinated step %s failed", step.name)
            return StepResult(step.name, step.pattern, False, {"error": str(exc)})
        return StepResult(step.name, step.pattern, False, {"error": "unknown step"})

    async def stabilize_consumers(self, plan: Plan, step: Step) -> StepResult:
        unhealthy = self.unhealthy_consumers()
        restarted: list[str] = []
        for group, state in unhealthy:
            if state.watch_reason == health.SAFE_MODE_RESTART:
                continue  # already restarting in safe mode
            command = ctl.control_command(
                ctl.RESTART_SAFE_MODE, group, command_id=f"{plan.plan_id}:{group}:restart",
                incident_id=f"coordination:{plan.plan_id}", options=dict(ctl.SAFE_MODE_OPTIONS))
            await self.pipeline.send(OutRecord(self.control_topic, group.encode(),
                                               command.encode(), []))
            await self.pipeline.send(OutRecord(self.heartbeats_topic, group.encode(),
                                               orjson.dumps(crash.watch_start(group, command)),
                                               []))
            restarted.append(group)
        return StepResult(step.name, step.pattern, not unhealthy,
                          {"unhealthyConsumers": [g for g, _ in unhealthy],
                           "restartedInSafeMode": restarted})

    async def verify_system(self) -> dict[str, Any]:
        return integrity(self.open_partitions(), [g for g, _ in self.unhealthy_consumers()],
                         self.pending_caches())

    # ---- what the other scenarios know ---------------------------------------------------

    def open_partitions(self) -> list[str]:
        return sorted(str(x.data.get("partitionId"))
                      for x in self.watches.active(network_partition.RECOVERY_WATCH))

    def pending_caches(self) -> list[str]:
        return sorted(str(x.data.get("cacheKey"))
                      for x in self.watches.active(cache_conflicts.VERIFY_WATCH))

    def unhealthy_consumers(self) -> list[tuple[str, health.ConsumerHealth]]:
        table = self.app.tables.get("consumer-health")
        if table is None:
            return []
        now = lifecycle.now_ms()
        found = []
        for group, data in sorted(table.items()):
            state = health.ConsumerHealth.from_json(data, group)
            if state is not None and not health.is_healthy(state, now, self.pipeline.watch):
                found.append((group, state))
        return found

    def outcomes(self) -> dict[str, str | None]:
        return dict((self.table.get(STATE_KEY) or {}).get("outcomes") or {})


def install(app: Any, pipeline: Any) -> Coordinator:
    return Coordinator(app, pipeline, pipeline.state_policies.coordination)
