"""Coordinated recovery: the window, the plan and its execution, branch by branch, without
a broker."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from app.policy.state import CoordinationPolicy
from app.scenarios import coordinated as co

POLICY = CoordinationPolicy()
WINDOW = 60_000


def seen(pattern: str, incident: str, at: int, severity: str = "ERROR",
         kind: str = "X") -> co.Observation:
    return co.Observation(pattern, kind, incident, severity, at)


def test_patterns_not_seen_within_the_window_are_dropped() -> None:
    state = co.observe(None, seen("network", "a", 0), WINDOW)
    state = co.observe(state, seen("state_sync", "b", 30_000), WINDOW)
    state = co.observe(state, seen("event_bus", "c", 60_000), WINDOW)
    assert set(state["patterns"]) == {"state_sync", "event_bus"}
    assert set(co.active_patterns(state, 60_000, WINDOW)) == {"state_sync", "event_bus"}
    assert set(co.active_patterns(state, 90_000, WINDOW)) == {"event_bus"}


def test_a_pattern_counts_failures_and_names_the_latest_incidents() -> None:
    state = None
    for n in range(co.SAMPLE + 5):
        state = co.observe(state, seen("state_sync", f"i{n}", n), WINDOW)
    state = co.observe(state, replace(seen("state_sync", "i3", 99), count=10), WINDOW)
    entry = state["patterns"]["state_sync"]
    assert entry["count"] == co.SAMPLE + 5 + 10
    assert len(entry["incidents"]) == co.SAMPLE and entry["incidents"][-1] == "i3"
    assert (entry["first_ms"], entry["last_ms"]) == (0, 99)
    # Outcomes are kept only for the incidents named.
    assert set(state["outcomes"]) == set(entry["incidents"])


def test_an_outcome_is_kept_and_a_new_report_opens_the_incident_again() -> None:
    state = co.observe(None, seen("state_sync", "a", 0), WINDOW)
    state = co.record_outcome(state, "a", "completed")
    assert state["outcomes"] == {"a": "completed"}
    state = co.observe(state, seen("state_sync", "a", 10), WINDOW)
    assert state["outcomes"] == {"a": None}


def test_outcomes_of_incidents_not_named_change_nothing() -> None:
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


def test_analysis_counts_failures_kinds_and_the_worst_severity() -> None:
    state = co.observe(None, seen("event_bus", "a", 0, "WARNING", "CONSUMER_CRASHED"), WINDOW)
    state = co.observe(state, seen("event_bus", "b", 1, "FATAL", "EVENT_DELIVERY_FAILED"),
                       WINDOW)
    state = co.observe(state, seen("event_bus", "c", 2, "ERROR", "EVENT_DELIVERY_FAILED"),
                       WINDOW)
    state = co.observe(state, seen("network", "d", 3, None, "NETWORK_PARTITION"), WINDOW)
    analysis = co.analyze(co.active_patterns(state, 3, WINDOW))
    assert analysis["event_bus"] == {"incidents": ["a", "b", "c"], "failures": 3,
                                     "kinds": ["CONSUMER_CRASHED", "EVENT_DELIVERY_FAILED"],
                                     "maxSeverity": "FATAL"}
    assert analysis["network"]["maxSeverity"] is None


def test_the_observer_throttle_forwards_the_first_then_counts_the_rest() -> None:
    throttle = co.Throttle(1_000)
    first = throttle.admit(seen("state_sync", "a", 0), now_ms=0)
    assert first is not None and first.count == 1
    assert throttle.admit(seen("state_sync", "b", 1), now_ms=100) is None
    assert throttle.admit(seen("state_sync", "c", 2), now_ms=200) is None
    other = throttle.admit(seen("network", "n", 3), now_ms=300)
    assert other is not None  # another pattern is not held back
    assert throttle.due(900) == []
    [held] = throttle.due(1_000)
    assert (held.incident_id, held.count) == ("c", 2)
    assert throttle.due(5_000) == []
    assert throttle.knows("a") and throttle.knows("c") and not throttle.knows("b")
    later = throttle.admit(seen("state_sync", "d", 3), now_ms=2_500)
    assert later is not None and later.count == 1


def analysis_of(*patterns: str) -> dict:
    return {p: {"incidents": [f"{p}-1"], "failures": 1, "kinds": [], "maxSeverity": "ERROR"}
            for p in patterns}


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
