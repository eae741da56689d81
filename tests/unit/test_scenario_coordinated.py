"""Coordinated recovery: the window, the plan and its execution, branch by branch, without
a broker."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from app.scenarios import coordinated as co
from app.scenarios.state_policy import CoordinationPolicy

POLICY = CoordinationPolicy()
WINDOW = 60_000


def seen(pattern: str, incident: str, at: int, severity: str = "ERROR",
         kind: str = "X") -> co.Observation:
    return co.Observation(pattern, kind, incident, severity, at)


def test_observations_outside_the_window_are_dropped() -> None:
    state = co.observe(None, seen("network", "a", 0), WINDOW)
    state = co.observe(state, seen("state_sync", "b", 30_000), WINDOW)
    state = co.observe(state, seen("event_bus", "c", 60_000), WINDOW)
    assert [o["incident_id"] for o in state["observed"]] == ["b", "c"]
    assert set(co.active_patterns(state, 60_000, WINDOW)) == {"state_sync", "event_bus"}
    assert set(co.active_patterns(state, 90_000, WINDOW)) == {"event_bus"}


def test_an_incident_is_observed_once_per_pattern_and_reopened_when_reported_again() -> None:
    state = co.observe(None, seen("state_sync", "a", 0), WINDOW)
    state = co.record_outcome(state, "a", "completed")
    assert state["observed"][0]["outcome"] == "completed"
    state = co.observe(state, seen("state_sync", "a", 10), WINDOW)
    assert len(state["observed"]) == 1
    assert state["observed"][0]["outcome"] is None and state["observed"][0]["at_ms"] == 10


def test_outcomes_of_incidents_not_observed_change_nothing() -> None:
    assert co.record_outcome(None, "x", "completed") is None
    state = co.observe(None, seen("network", "a", 0), WINDOW)
    assert co.record_outcome(state, "x", "completed") is None


def test_a_plan_needs_several_patterns_and_one_per_window() -> None:
    one = co.observe(co.observe(None, seen("state_sync", "a", 0), WINDOW),
                     seen("state_sync", "b", 1), WINDOW)
    assert not co.should_plan(one, 1, WINDOW, POLICY)
    two = co.observe(one, seen("network", "c", 2), WINDOW)
    assert co.should_plan(two, 2, WINDOW, POLICY)
    planned = {**two, "last_plan_ms": 2}
    later = co.observe(planned, seen("tool_routing", "d", 3), WINDOW)
    assert not co.should_plan(later, 3, WINDOW, POLICY)
    again = co.observe(later, seen("event_bus", "e", 70_000), WINDOW)
    again = co.observe(again, seen("network", "f", 70_001), WINDOW)
    assert co.should_plan(again, 70_002, WINDOW, POLICY)
    assert not co.should_plan(two, 2, WINDOW, replace(POLICY, min_patterns=3))


def test_analysis_counts_incidents_kinds_and_the_worst_severity() -> None:
    state = co.observe(None, seen("event_bus", "a", 0, "WARNING", "CONSUMER_CRASHED"), WINDOW)
    state = co.observe(state, seen("event_bus", "b", 1, "FATAL", "EVENT_DELIVERY_FAILED"),
                       WINDOW)
    state = co.observe(state, seen("network", "c", 2, None, "NETWORK_PARTITION"), WINDOW)
    analysis = co.analyze(co.active_patterns(state, 2, WINDOW))
    assert analysis["event_bus"] == {"incidents": ["a", "b"],
                                     "kinds": ["CONSUMER_CRASHED", "EVENT_DELIVERY_FAILED"],
                                     "maxSeverity": "FATAL"}
    assert analysis["network"]["maxSeverity"] is None


def analysis_of(*patterns: str) -> dict:
    return {p: {"incidents": [f"{p}-1"], "kinds": [], "maxSeverity": "ERROR"} for p in patterns}


def test_the_plan_puts_critical_steps_first_in_policy_order() -> None:
    plan = co.create_plan("p", analysis_of("tool_routing", "state_sync", "event_bus",
                                           "network", "mystery"), POLICY)
    assert [s.name for s in plan.critical_steps] == ["verify_partitions_healed",
                                                     "stabilize_consumers"]
    assert all(s.critical and s.required for s in plan.critical_steps)
    assert [s.name for s in plan.normal_steps] == ["verify_cache_consistency",
                                                   "verify_tool_routing"]
    assert not any(s.required for s in plan.normal_steps)
    assert plan.critical_steps[0].incidents == ("network-1",)
    assert co.Plan.from_json(plan.to_json()) == plan


def run(plan: co.Plan, failing: set[str], healthy: bool = True) -> tuple[dict, list[str]]:
    ran: list[str] = []

    async def run_step(step: co.Step) -> co.StepResult:
        ran.append(step.name)
        return co.StepResult(step.name, step.pattern, step.name not in failing)

    async def verify() -> dict:
        ran.append("verify")
        return {"isHealthy": healthy}

    return asyncio.run(co.execute_plan(plan, run_step, verify)), ran


PLAN = co.create_plan("p", analysis_of("network", "event_bus", "state_sync", "tool_routing"),
                      POLICY)


def test_all_steps_succeed_then_integrity_decides() -> None:
    result, ran = run(PLAN, set())
    assert ran == ["verify_partitions_healed", "stabilize_consumers",
                   "verify_cache_consistency", "verify_tool_routing", "verify"]
    assert result["success"] and result["phase"] == "completed"
    assert result["systemIntegrity"] == {"isHealthy": True}
    unhealthy, _ = run(PLAN, set(), healthy=False)
    assert not unhealthy["success"] and unhealthy["phase"] == "completed"


def test_a_failed_required_critical_step_stops_the_plan() -> None:
    result, ran = run(PLAN, {"verify_partitions_healed"})
    assert ran == ["verify_partitions_healed"]
    assert result["success"] is False and result["phase"] == "critical_stabilization"
    assert result["failedStep"]["name"] == "verify_partitions_healed"
    assert result["results"] == [{"step": "verify_partitions_healed", "pattern": "network",
                                  "success": False, "detail": {}}]


def test_a_failed_optional_critical_step_or_normal_step_does_not_stop_it() -> None:
    optional = replace(PLAN, critical_steps=tuple(replace(s, required=False)
                                                  for s in PLAN.critical_steps))
    result, ran = run(optional, {"stabilize_consumers", "verify_tool_routing"})
    assert ran[-1] == "verify" and result["phase"] == "completed"
    assert [r["success"] for r in result["results"]] == [True, False, True, False]


def test_tool_routing_is_sound_when_every_incident_completed() -> None:
    step = co.Step("verify_tool_routing", "tool_routing", False, False, ("a", "b"))
    assert co.tool_routing_result(step, {"a": "completed", "b": "completed"}).success
    pending = co.tool_routing_result(step, {"a": "completed", "b": None})
    assert not pending.success and pending.detail == {"incidents": {"a": "completed",
                                                                    "b": None}}
    assert not co.tool_routing_result(step, {"a": "completed", "b": "escalated"}).success


def test_system_integrity_needs_no_split_no_down_consumer_no_pending_cache() -> None:
    assert co.integrity([], [], [])["isHealthy"]
    assert not co.integrity(["eu-1"], [], [])["isHealthy"]
    assert not co.integrity([], ["g"], [])["isHealthy"]
    assert not co.integrity([], [], ["user:1"])["isHealthy"]
