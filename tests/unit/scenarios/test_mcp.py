"""Scenario 1 (MCP connection loss): every branch of the source's handler, without a broker.
The decisions are pure; the strategy's wiring runs over a recording pipeline and dict
tables, fed by the generic pipeline's own decide/record_report."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from app.contracts import headers as h
from app.contracts.failure_event import FailureEvent, new_failure_event
from app.pipeline import decide as d
from app.pipeline.classify import Classification, classify
from app.pipeline.intake import RawRecord
from app.pipeline.outcomes import dispatch_target_of
from app.pipeline.strategy import StrategyContext
from app.policy.routing import Fallback, McpPolicy
from app.policy.rules import Exhausted, load_policies
from app.scenarios import mcp_connection as m
from app.scenarios.shared import tool_registry as reg

POLICIES = load_policies()
POLICY = McpPolicy()


def cls(error_type: str) -> Classification:
    return classify(POLICIES.rules, kind=m.KIND, error_type=error_type)


def entry(server: str, tool: str = "get_weather", version: str = "1.0.0",
          protocol: str | None = "2024-11-05", topic: str | None = None) -> reg.ToolEntry:
    return reg.ToolEntry(server, tool, version, "weather for a city", topic, protocol)


def plan(mode: str = m.ALTERNATIVES, **changes: Any) -> m.Plan:
    base = m.Plan(cycle=1, mode=mode, tool="get_weather", arguments_json='{"city": "Oslo"}',
                  origin_server="s1")
    return m.Plan(**{**base.__dict__, **changes})


# ---- classification and policy: the source's classifyConnectionError -----------------------

@pytest.mark.parametrize(("error_type", "expected", "handler"), [
    ("network_timeout", ("ERROR", "transient", "network_timeout", "recoverable"),
     "handleNetworkTimeout"),
    ("authentication_failure", ("CRITICAL", "security", "authentication", "non_recoverable"),
     "handleAuthenticationFailure"),
    ("protocol_mismatch",
     ("CRITICAL", "configuration", "protocol_version", "partially_recoverable"),
     "handleProtocolMismatch"),
    ("connection_reset", ("ERROR", "unknown", "connection_failure", "partially_recoverable"),
     "handleGenericConnectionFailure"),
])
def test_classification_and_handler_per_error_type(error_type, expected, handler) -> None:
    c = cls(error_type)
    assert (c.severity, c.category, c.type, c.recoverability) == expected
    assert m.handler_for(c.type) == handler


def test_network_timeout_retries_1_2_4_s_then_alternative_route() -> None:
    policy = POLICIES.retry_for("network_timeout")
    incident = d.Incident("i")
    delays = []
    for n in range(3):
        report = d.Report(f"e{n}", 1000, cls("network_timeout"), True, None, "s1.requests")
        decision = d.decide(incident, report, policy)
        assert isinstance(decision, d.Retry)
        delays.append(decision.delay_ms)
        incident = d.record_report(incident, report, decision, 2000)
    assert delays == [1000, 2000, 4000]
    last = d.Report("e3", 1000, cls("network_timeout"), True, None, "s1.requests")
    assert isinstance(d.decide(incident, last, policy), d.AlternativeRoute)


def test_authentication_failure_is_escalated_and_never_retried() -> None:
    policy = POLICIES.retry_for("authentication")
    assert policy.attempts == 0 and policy.on_exhausted == Exhausted.ESCALATE
    report = d.Report("e", 1000, cls("authentication_failure"), True, None, "s1.requests")
    assert isinstance(d.decide(d.Incident("i"), report, policy), d.Escalate)
    assert m.engagement(m.KIND, "authentication", d.Escalate("x"), False) is None


def test_protocol_mismatch_is_not_retried_nor_poisoned() -> None:
    report = d.Report("e", 1000, cls("protocol_mismatch"), True, None, "s1.requests")
    decision = d.decide(d.Incident("i"), report, POLICIES.retry_for("protocol_version"))
    assert isinstance(decision, d.Escalate)
    assert m.engagement(m.KIND, "protocol_version", decision, False) == m.PROTOCOL


def test_generic_connection_failure_retries_then_takes_the_alternatives() -> None:
    policy = POLICIES.retry_for("connection_failure")
    assert policy.attempts == 3 and policy.on_exhausted == Exhausted.ALTERNATIVE_ROUTE


@pytest.mark.parametrize(("kind", "ctype", "decision", "active", "expected"), [
    ("MCP_CONNECTION_LOST", "network_timeout", d.AlternativeRoute("x"), False, m.ALTERNATIVES),
    ("MCP_CONNECTION_LOST", "network_timeout", d.AlternativeRoute("x"), True, "continue"),
    ("MCP_CONNECTION_LOST", "authentication", d.Escalate("x"), True, "continue"),
    ("MCP_CONNECTION_LOST", "protocol_version", d.Escalate("x"), True, "continue"),
    ("MCP_CONNECTION_LOST", "network_timeout", d.Retry(1, 1000), True, None),
    ("MCP_CONNECTION_LOST", "connection_failure", d.DeadLetter("x"), False, None),
    ("EVENT_DELIVERY_FAILED", "network_timeout", d.AlternativeRoute("x"), False, None),
])
def test_engagement(kind, ctype, decision, active, expected) -> None:
    assert m.engagement(kind, ctype, decision, active) == expected


# ---- tryAlternativeToolRouting ---------------------------------------------------------------

def test_candidates_are_the_registry_newest_first_then_configured_alternatives() -> None:
    policy = McpPolicy(alternatives={"get_weather": ("s9", "s2")}, servers={"s9": "nine.req"})
    entries = [entry("s2", version="1.0.0"), entry("s3", version="2.1.0", topic="three.req"),
               entry("s4", tool="other")]
    found = m.candidates_for("get_weather", entries, policy)
    assert [(c.server_id, c.topic) for c in found] == [
        ("s3", "three.req"), ("s2", "s2.requests"), ("s9", "nine.req")]
    assert m.candidates_for(None, entries, policy) == []


def test_alternative_servers_are_tried_in_turn_skipping_the_failed_ones() -> None:
    cands = [m.Candidate("s1", "s1.requests"), m.Candidate("s2", "s2.requests"),
             m.Candidate("s3", "s3.requests")]
    first = m.next_step(plan(), failed_server="s1", candidates=cands, cached=None,
                        fallback=None, policy=POLICY)
    assert first == m.RouteToServer("s2", "s2.requests", "alternative_server")
    after = m.after_step(plan(), "e1", first)
    assert after.attempted == ("s2",)
    second = m.next_step(after, failed_server="s2", candidates=cands, cached=None,
                         fallback=None, policy=POLICY)
    assert second == m.RouteToServer("s3", "s3.requests", "alternative_server")


def test_then_the_cached_result_marked_using_cached_data() -> None:
    cached = reg.CachedResult("get_weather", {"temp": 3}, 1234)
    step = m.next_step(plan(attempted=("s2",)), failed_server="s2",
                       candidates=[m.Candidate("s2", "s2.requests")], cached=cached,
                       fallback=Fallback(result="x"), policy=POLICY)
    assert step == m.ReturnDegraded({"temp": 3}, m.USING_CACHED_DATA, 1234)
    reply = orjson.loads(m.degraded_reply("get_weather", step, "inc"))
    assert reply["degraded"] is True and reply["degradationReason"] == "using_cached_data"
    assert reply["result"] == {"temp": 3}


def test_then_a_fixed_fallback_result_marked_using_fallback_implementation() -> None:
    step = m.next_step(plan(), failed_server="s1", candidates=[], cached=None,
                       fallback=Fallback(result={"temp": None}), policy=POLICY)
    assert step == m.ReturnDegraded({"temp": None}, m.USING_FALLBACK)


def test_a_routed_fallback_is_tried_once_then_escalated() -> None:
    fallback = Fallback(topic="weather-lite.requests")
    step = m.next_step(plan(), failed_server="s1", candidates=[], cached=None,
                       fallback=fallback, policy=POLICY)
    assert step == m.RouteToFallback("weather-lite.requests")
    routed = m.after_step(plan(), "e1", step)
    again = m.next_step(routed, failed_server=None, candidates=[], cached=None,
                        fallback=fallback, policy=POLICY)
    assert isinstance(again, m.EscalateRouting)


def test_all_alternatives_failed_escalates_with_attempted_and_recommended_action() -> None:
    step = m.next_step(plan(attempted=("s2", "s3")), failed_server="s3",
                       candidates=[m.Candidate("s2", "a"), m.Candidate("s3", "b")],
                       cached=None, fallback=None, policy=POLICY)
    assert step == m.EscalateRouting(step.reason, ("s2", "s3"), "manual_intervention")
    assert m.after_step(plan(), "e", step).done


def test_cached_results_by_tool_and_arguments_in_any_key_order() -> None:
    assert reg.cache_key("t", '{"a": 1, "b": 2}') == reg.cache_key("t", {"b": 2, "a": 1})
    assert reg.cache_key("t", {"a": 1}) != reg.cache_key("u", {"a": 1})
    old = reg.CachedResult("t", 1, stored_at=1000)
    assert reg.usable(old, 10_000, 0) and not reg.usable(old, 10_000, 5000)
    assert not reg.usable(None, 10_000, 0)


# ---- handleProtocolMismatch ------------------------------------------------------------------

def test_protocol_compatibility_is_the_same_version_or_the_matrix() -> None:
    matrix = {"2025-03-26": ("2024-11-05",)}
    assert m.protocols_compatible("2024-11-05", "2024-11-05", {})
    assert m.protocols_compatible("2025-03-26", "2024-11-05", matrix)
    assert not m.protocols_compatible("2024-11-05", "2025-03-26", matrix)
    assert not m.protocols_compatible(None, "2024-11-05", matrix)
    assert not m.protocols_compatible("2024-11-05", None, matrix)


def test_protocol_mismatch_routes_to_a_compatible_server_else_escalates() -> None:
    proto = plan(mode=m.PROTOCOL, client_protocol="2025-03-26")
    cands = [m.Candidate("s2", "s2.requests", "2024-01-01"),
             m.Candidate("s3", "s3.requests", "2025-03-26")]
    step = m.next_step(proto, failed_server="s1", candidates=cands, cached=None,
                       fallback=None, policy=POLICY)
    assert step == m.RouteToServer("s3", "s3.requests", "compatible_protocol")
    none_left = m.next_step(m.after_step(proto, "e", step), failed_server="s3",
                            candidates=cands,
                            cached=reg.CachedResult("get_weather", 1, 1), fallback=None,
                            policy=POLICY)
    assert isinstance(none_left, m.EscalateRouting)  # no cache/fallback for a protocol mismatch
    assert "compatible" in none_left.reason


def test_steps_survive_their_json_form() -> None:
    for step in (m.RouteToServer("s", "t", "r"), m.RouteToFallback("f"),
                 m.ReturnDegraded([1], m.USING_FALLBACK, None),
                 m.EscalateRouting("why", ("a",), "manual_intervention")):
        assert m.step_from_json(orjson.loads(orjson.dumps(m.step_to_json(step)))) == step
    p = m.after_step(plan(), "e1", m.RouteToServer("s", "t", "r"))
    assert m.Plan.from_json(orjson.loads(orjson.dumps(p.to_json()))) == p


def test_connection_lost_payload_has_the_source_fields() -> None:
    event = new_failure_event(kind=m.KIND, error_type="network_timeout", service="agent",
                              detail=("McpConnectionLost", {"server_id": "s1",
                                                            "last_successful_connection": 77}))
    entries = [entry("s1"), entry("s1", tool="get_time"), entry("s2", tool="other")]
    fields = m.connection_lost_fields(event, entries)
    assert fields == {"serverId": "s1", "errorType": "network_timeout",
                      "lastSuccessfulConnection": 77,
                      "affectedTools": ["get_time", "get_weather"]}


# ---- the strategy's wiring over a recording pipeline ----------------------------------------

class FakeRegistry:
    def __init__(self, entries: list[reg.ToolEntry], cached: dict[str, reg.CachedResult]):
        self._entries = entries
        self._cached = cached

    def entries(self) -> list[reg.ToolEntry]:
        return self._entries

    def cached(self, tool: str, arguments: Any) -> reg.CachedResult | None:
        return self._cached.get(reg.cache_key(tool, arguments))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def send(self, record: Any) -> None:
        self.sent.append(record)

    async def emit(self, event_type: str, incident_id: str, *, step_id: str, **fields: Any
                   ) -> None:
        self.events.append((event_type, {"step_id": step_id, **fields}))


def make_strategy(entries, cached=None, policy=POLICY) -> m.McpConnectionStrategy:
    strategy = m.McpConnectionStrategy.__new__(m.McpConnectionStrategy)
    strategy.pipeline = Recorder()
    strategy.policy = policy
    strategy.registry = FakeRegistry(entries, cached or {})  # type: ignore[assignment]
    strategy.plans = {}  # type: ignore[assignment]
    return strategy


def report_event(n: int, error_type: str, server: str, **detail: Any) -> dict[str, Any]:
    request = {"topic": f"{server}.requests", "partition": 0, "offset": n, "key": b"req-1",
               "value": b'{"tool": "get_weather"}',
               "headers": [{"key": "reply-to", "value": b"agent.replies"}]}
    return new_failure_event(
        kind=m.KIND, error_type=error_type, service="agent", work_item_id="req-1",
        event_id=f"e{n}", failed_record=request, dispatch_target=f"{server}.requests",
        detail=("McpConnectionLost", {"server_id": server, "tool_name": "get_weather",
                                      "tool_arguments_json": '{"city": "Oslo"}', **detail}))


def process(strategy, incidents: dict, event: dict[str, Any]) -> tuple[d.Decision, bool]:
    """What Pipeline.on_failure does with a report, up to the strategy's after_decision."""
    c = cls(event["error"]["type"])
    before = d.Incident.from_json(incidents.get("req-1"), "req-1")
    report = d.Report(event["event_id"], 1000, c, True, None,
                      dispatch_target_of(FailureEvent(event)))
    decision = d.decide(before, report, POLICIES.retry_for(c.type))
    if isinstance(decision, d.Duplicate):
        before, decision = d.replayed(before, event["event_id"])
        incident = before
    else:
        incident = d.record_report(before, report, decision, 5000)
        incidents["req-1"] = incident.to_json()
    record = RawRecord("recovery.failures", 0, 0, None, b"req-1", b"", [])
    ctx = StrategyContext(strategy.pipeline, FailureEvent(event), record, incident, c, decision,
                          incidents)
    return decision, asyncio.run(strategy.after_decision(ctx))


def test_timeouts_then_each_alternative_then_cache_then_completed() -> None:
    cached = {reg.cache_key("get_weather", {"city": "Oslo"}):
              reg.CachedResult("get_weather", {"temp": 3}, 99)}
    strategy = make_strategy([entry("s1"), entry("s2"), entry("s3", version="2.0")], cached)
    incidents: dict[str, Any] = {}
    for n in range(3):  # the generic retries: not this strategy's business
        decision, handled = process(strategy, incidents, report_event(n, "network_timeout",
                                                                      "s1"))
        assert isinstance(decision, d.Retry) and not handled
    decision, handled = process(strategy, incidents, report_event(3, "network_timeout", "s1"))
    assert isinstance(decision, d.AlternativeRoute) and handled
    [routed] = strategy.pipeline.sent
    assert routed.topic == "s3.requests" and routed.key == b"req-1"
    assert h.header_value(routed.headers, h.INCIDENT_ID) == "req-1"
    assert h.header_value(routed.headers, "reply-to") == "agent.replies"
    assert incidents["req-1"]["state"] == "rerouted"
    # s3 fails with another error: any failure moves on (the source's loop catches all).
    decision, handled = process(strategy, incidents, report_event(4, "authentication_failure",
                                                                  "s3"))
    assert isinstance(decision, d.Escalate) and handled
    assert strategy.pipeline.sent[-1].topic == "s2.requests"
    decision, handled = process(strategy, incidents, report_event(5, "network_timeout", "s2"))
    assert handled
    reply = strategy.pipeline.sent[-1]
    assert reply.topic == "agent.replies"
    assert h.header_value(reply.headers, m.DEGRADED_HEADER) == "using_cached_data"
    assert orjson.loads(reply.value)["result"] == {"temp": 3}
    types = [t for t, _ in strategy.pipeline.events]
    assert types == [m.TOOL_REROUTED, m.TOOL_REROUTED, m.DEGRADED_RESULT,
                     "recovery/recovery_completed"]
    assert strategy.pipeline.events[-1][1]["outcome"] == "completed"
    assert incidents["req-1"]["state"] == "completed"


def test_a_report_processed_again_sends_the_same_step_again() -> None:
    strategy = make_strategy([entry("s1"), entry("s2")])
    incidents: dict[str, Any] = {}
    for n in range(4):
        process(strategy, incidents, report_event(n, "network_timeout", "s1"))
    first = list(strategy.pipeline.sent)
    process(strategy, incidents, report_event(3, "network_timeout", "s1"))  # after a crash
    assert strategy.pipeline.sent == first * 2
    ids = [f["step_id"] for _, f in strategy.pipeline.events]
    assert ids == [ids[0], ids[0]]


def test_nothing_left_escalates_once_with_the_routing_failure() -> None:
    strategy = make_strategy([entry("s1"), entry("s2")])
    incidents: dict[str, Any] = {}
    for n in range(4):
        process(strategy, incidents, report_event(n, "network_timeout", "s1"))
    process(strategy, incidents, report_event(4, "network_timeout", "s2"))
    event_type, fields = strategy.pipeline.events[-1]
    assert event_type == "recovery/escalated" and fields["outcome"] == "escalated"
    payload = fields["payload"]
    assert payload["error"] == "ToolRoutingFailureError"
    assert payload["attemptedAlternatives"] == ["s2"]
    assert payload["recommendedAction"] == "manual_intervention"
    assert payload["toolRequest"]["toolName"] == "get_weather"
    assert incidents["req-1"]["state"] == "escalated"


def test_protocol_mismatch_wiring_routes_to_the_compatible_server() -> None:
    strategy = make_strategy([entry("s1", protocol="2025-03-26"),
                              entry("s2", protocol="2023-01-01"),
                              entry("s3", protocol="2024-11-05")])
    incidents: dict[str, Any] = {}
    decision, handled = process(strategy, incidents, report_event(
        0, "protocol_mismatch", "s1", client_protocol_version="2024-11-05",
        server_protocol_version="2025-03-26"))
    assert isinstance(decision, d.Escalate) and handled
    assert [r.topic for r in strategy.pipeline.sent] == ["s3.requests"]
    assert strategy.pipeline.events[-1][1]["payload"]["reason"] == "compatible_protocol"


def test_protocol_mismatch_without_a_compatible_server_is_escalated() -> None:
    strategy = make_strategy([entry("s1", protocol="2025-03-26")])
    _, handled = process(strategy, {}, report_event(
        0, "protocol_mismatch", "s1", client_protocol_version="2024-11-05"))
    assert handled and strategy.pipeline.sent == []
    assert strategy.pipeline.events[-1][0] == "recovery/escalated"


def test_authentication_failure_is_left_to_the_generic_escalation() -> None:
    strategy = make_strategy([entry("s1"), entry("s2")])
    decision, handled = process(strategy, {}, report_event(0, "authentication_failure", "s1"))
    assert isinstance(decision, d.Escalate) and not handled
    assert strategy.pipeline.sent == [] and strategy.pipeline.events == []
