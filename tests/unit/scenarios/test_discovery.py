"""Scenario 2 (tool discovery failures): each strategy of the source's progressive discovery
and the order between them, without a broker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from app.contracts import headers as h
from app.contracts.failure_event import FailureEvent, new_failure_event
from app.pipeline import decide as d
from app.pipeline.classify import classify
from app.pipeline.intake import RawRecord
from app.pipeline.strategy import StrategyContext
from app.policy.routing import DiscoveryPolicy, McpPolicy
from app.policy.rules import Exhausted, load_policies
from app.scenarios import tool_discovery as t
from app.scenarios.shared import tool_registry as reg
from app.scenarios.shared import watches as w

POLICY = DiscoveryPolicy()
SERVERS = McpPolicy()


def entry(server: str, tool: str, description: str = "", version: str = "1.0",
          topic: str | None = None) -> reg.ToolEntry:
    return reg.ToolEntry(server, tool, version, description, topic, "2024-11-05")


WEATHER = entry("s2", "get_weather", "Current weather for a city")
EMAIL = entry("s3", "send_email", "Send an email to a person")


def test_discovery_is_classified_and_not_retried() -> None:
    policies = load_policies()
    c = classify(policies.rules, kind=t.KIND, error_type="not_found")
    assert c.type == "tool_discovery"
    policy = policies.retry_for(c.type)
    assert policy.attempts == 0 and policy.on_exhausted == Exhausted.ESCALATE


# ---- strategy 1: registry -----------------------------------------------------------------

def test_registry_lookup_finds_the_newest_version_at_its_request_topic() -> None:
    entries = [entry("s1", "get_weather", version="1.2"), entry("s4", "get_weather",
                                                                 version="1.10", topic="t4")]
    step = t.first_step("get_weather", entries, POLICY, SERVERS)
    assert isinstance(step, t.Discovered) and step.strategy == t.REGISTRY_REFRESH
    assert step.topic == "t4" and step.descriptor["serverId"] == "s4"


def test_registry_entry_without_a_topic_uses_the_server_topic_pattern() -> None:
    step = t.first_step("get_weather", [WEATHER], POLICY, SERVERS)
    assert isinstance(step, t.Discovered) and step.topic == "s2.requests"


def test_not_in_the_registry_queries_the_servers() -> None:
    assert t.first_step("get_forecast", [WEATHER], POLICY, SERVERS) == t.QueryServers(5000)


def test_a_report_without_a_tool_name_is_not_found_at_once() -> None:
    assert isinstance(t.first_step(None, [WEATHER], POLICY, SERVERS), t.NotFound)


# ---- strategy 2: server query ---------------------------------------------------------------

def test_a_server_answer_counts_only_for_the_tool_asked_for() -> None:
    answer = {"tool": entry("s7", "get_forecast", topic="s7.req").to_json()}
    assert t.query_answer("get_forecast", answer) == entry("s7", "get_forecast", topic="s7.req")
    assert t.query_answer("get_weather", answer) is None
    assert t.query_answer("get_forecast", {"tool": {"bogus": 1}}) is None
    assert t.query_answer("get_forecast", {}) is None


def test_query_record_names_the_reply_topic_and_watch() -> None:
    query = orjson.loads(t.query_record("q1", "get_forecast", "d", "p.recovery.watches", 9))
    assert query == {"watch_id": "q1", "tool": "get_forecast", "description": "d",
                     "reply_topic": "p.recovery.watches", "deadline": 9}


# ---- strategy 3: semantic matching ----------------------------------------------------------

def test_similarity_ranks_by_name_and_description() -> None:
    near = t.similarity("fetch_weather", "current weather in a city", WEATHER.tool,
                        WEATHER.description)
    far = t.similarity("fetch_weather", "current weather in a city", EMAIL.tool,
                       EMAIL.description)
    assert near > 0.6 > far
    assert t.similarity("x", "", "x", "") == 1.0
    assert t.tokens("getWeather for_city") == {"get", "weather", "for", "city"}


def test_semantic_matches_exclude_the_exact_name_and_keep_the_newest_version() -> None:
    entries = [WEATHER, entry("s5", "get_weather", "Current weather for a city", "2.0"), EMAIL,
               entry("s6", "fetch_weather", "x")]
    matches = t.semantic_matches("fetch_weather", "current weather in a city", entries, 0.5, 3)
    assert [m.entry.tool for m in matches] == ["get_weather"]
    assert matches[0].entry.server_id == "s5"


def test_after_the_query_a_similar_tool_is_suggested_for_confirmation() -> None:
    step = t.after_failed(t.SERVER_QUERY, "fetch_weather", "current weather in a city", [],
                          [WEATHER, EMAIL], POLICY)
    assert isinstance(step, t.AskConfirmation)
    assert step.suggested["tool"] == "get_weather" and step.timeout_ms == 300_000


def test_confirmation_must_be_an_explicit_yes() -> None:
    assert t.confirmed({"confirmed": True})
    assert not t.confirmed({"confirmed": False}) and not t.confirmed({})
    assert not t.confirmed({"confirmed": "yes"})


# ---- strategy 4: dynamic wrapper ------------------------------------------------------------

@pytest.mark.parametrize(("tool", "kind"), [("get_forecast", "getter"), ("set_alarm", "setter"),
                                            ("calculate_tax", "calculator"),
                                            ("send_sms", "sender")])
def test_dynamic_wrapper_by_name_pattern(tool: str, kind: str) -> None:
    policy = DiscoveryPolicy(wrapper_topics={kind: f"{kind}.requests"})
    step = t.wrapper_step(tool, policy)
    assert step is not None and step.strategy == t.DYNAMIC_WRAPPING
    assert step.descriptor["kind"] == kind and step.descriptor["dynamic"] is True
    assert step.topic == f"{kind}.requests"
    assert step.descriptor["subject"] == tool.split("_", 1)[1]


def test_no_wrapper_for_an_unknown_pattern_or_an_unserved_kind() -> None:
    assert t.wrapper_step("delete_user", DiscoveryPolicy(wrapper_topics={"getter": "g"})) is None
    assert t.wrapper_step("get_forecast", DiscoveryPolicy()) is None


def test_semantic_refused_falls_through_to_the_wrapper() -> None:
    policy = DiscoveryPolicy(wrapper_topics={"getter": "getters"})
    step = t.after_failed(t.SEMANTIC_MATCHING, "get_forecast", "", [], [WEATHER], policy)
    assert isinstance(step, t.Discovered) and step.strategy == t.DYNAMIC_WRAPPING


def test_nothing_similar_goes_straight_to_the_wrapper_after_the_query() -> None:
    policy = DiscoveryPolicy(wrapper_topics={"sender": "senders"})
    step = t.after_failed(t.SERVER_QUERY, "send_fax", "", [], [WEATHER], policy)
    assert isinstance(step, t.Discovered) and step.topic == "senders"


# ---- ToolNotFound ---------------------------------------------------------------------------

def test_all_strategies_failed_is_tool_not_found_with_recommendations() -> None:
    step = t.after_failed(t.SEMANTIC_MATCHING, "get_forcast", "", ["registry", "mcp-a"],
                          [WEATHER, entry("s9", "get_forecast")], POLICY)
    assert isinstance(step, t.NotFound)
    assert step.strategies_attempted == ("registry_refresh", "server_query",
                                         "semantic_matching", "dynamic_wrapping")
    advice = " | ".join(step.recommendations)
    assert "announce it on recovery.tool-registry" in advice
    assert "did you mean get_forecast" in advice
    assert "wrapper_topics] getter" in advice
    assert "registry, mcp-a" in advice


def test_steps_survive_their_json_form() -> None:
    for step in (t.Discovered("registry_refresh", {"name": "x"}, "t", "x"), t.QueryServers(5),
                 t.AskConfirmation({"tool": "x"}, 0.7, (("y", 0.6),), 10),
                 t.NotFound(("a",), ("b",))):
        assert t.step_from_json(orjson.loads(orjson.dumps(t.step_to_json(step)))) == step


def test_discovery_failed_payload_has_the_source_fields() -> None:
    event = new_failure_event(kind=t.KIND, error_type="tool_missing", service="runner",
                              occurred_at=1234,
                              detail=("ToolDiscoveryFailed", {
                                  "tool_name": "x", "error_type": "service_unavailable",
                                  "searched_locations": ["registry"]}))
    assert t.discovery_failed_fields(event) == {
        "toolName": "x", "errorType": "service_unavailable", "searchedLocations": ["registry"],
        "timestamp": 1234}


def test_requests_survive_packing() -> None:
    packed = t.pack_request(b"k", b"\x00v", [("a", b"1"), ("b", None)])
    assert t.unpack_request(orjson.loads(orjson.dumps(packed))) == (
        b"k", b"\x00v", [("a", b"1"), ("b", None)])


# ---- the strategy's wiring over recording fakes ---------------------------------------------

class Recorder:
    topics = SimpleNamespace(commands="p.recovery.incident-commands")

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def send(self, record: Any) -> None:
        self.sent.append(record)

    async def emit(self, event_type: str, incident_id: str, *, step_id: str, **fields: Any
                   ) -> None:
        self.events.append((event_type, {"step_id": step_id, **fields}))


class FakeWatches:
    topic_name = "p.recovery.watches"

    def __init__(self) -> None:
        self.started: list[w.Watch] = []

    async def start(self, watch: w.Watch) -> None:
        self.started.append(watch)


class FakeRegistry:
    def __init__(self, entries: list[reg.ToolEntry]):
        self._entries = entries
        self.registered: list[reg.ToolEntry] = []

    def entries(self) -> list[reg.ToolEntry]:
        return self._entries

    async def register(self, entry_: reg.ToolEntry) -> None:
        self.registered.append(entry_)


def make_strategy(entries: list[reg.ToolEntry], policy: DiscoveryPolicy = POLICY
                  ) -> t.ToolDiscoveryStrategy:
    strategy = t.ToolDiscoveryStrategy.__new__(t.ToolDiscoveryStrategy)
    strategy.pipeline = Recorder()
    strategy.policy = policy
    strategy.servers = SERVERS
    strategy.registry = FakeRegistry(entries)  # type: ignore[assignment]
    strategy.watches = FakeWatches()  # type: ignore[assignment]
    strategy.queries_topic = "p.recovery.tool-queries"
    strategy.started = {}  # type: ignore[assignment]
    return strategy


def discovery_report(tool: str, description: str = "") -> dict[str, Any]:
    return new_failure_event(
        kind=t.KIND, error_type="not_found", service="runner", work_item_id="call-1",
        event_id="e1",
        failed_record={"topic": "tools.requests", "partition": 0, "offset": 4, "key": b"c1",
                       "value": b'{"tool": "%s"}' % tool.encode(), "headers": []},
        detail=("ToolDiscoveryFailed", {"tool_name": tool, "error_type": "not_found",
                                        "searched_locations": ["registry"],
                                        "description": description}))


def run_report(strategy: t.ToolDiscoveryStrategy, event: dict[str, Any],
               incidents: dict[str, Any]) -> bool:
    policies = load_policies()
    c = classify(policies.rules, kind=t.KIND, error_type="not_found")
    incident = d.Incident("call-1", state="escalated", reports=1, first_failure_ms=1)
    record = RawRecord("recovery.failures", 0, 0, None, b"call-1", b"", [])
    ctx = StrategyContext(strategy.pipeline, FailureEvent(event), record, incident, c,
                          d.Escalate("x"), incidents)
    return asyncio.run(strategy.after_decision(ctx))


def test_wiring_registry_hit_routes_announces_and_acknowledges() -> None:
    strategy = make_strategy([WEATHER])
    incidents: dict[str, Any] = {}
    assert run_report(strategy, discovery_report("get_weather"), incidents)
    routed, ack = strategy.pipeline.sent
    assert routed.topic == "s2.requests" and routed.key == b"c1"
    assert h.header_value(routed.headers, t.RESOLVED_TOOL_HEADER) == "get_weather"
    assert h.header_value(routed.headers, h.INCIDENT_ID) == "call-1"
    assert ack.topic == Recorder.topics.commands and ack.key == b"call-1"
    assert h.header_value(ack.headers, h.COMMAND) == "ack"
    [(event_type, fields)] = strategy.pipeline.events
    assert event_type == t.TOOL_DISCOVERED and fields["payload"]["strategy"] == "registry_refresh"
    assert incidents["call-1"]["state"] == "discovering"  # completed by the acknowledgement


def test_wiring_query_then_semantic_confirmation_then_route() -> None:
    strategy = make_strategy([WEATHER])
    incidents: dict[str, Any] = {}
    assert run_report(strategy, discovery_report("fetch_weather", "current weather in a city"),
                      incidents)
    [query_watch] = strategy.watches.started
    assert query_watch.kind == t.QUERY_WATCH and query_watch.deadline_ms - \
        query_watch.started_ms == 5000
    [query] = strategy.pipeline.sent
    assert query.topic == "p.recovery.tool-queries"
    assert strategy.pipeline.events[0][0] == t.SERVERS_QUERIED
    # Nobody answers: the semantic match is suggested and waits for a confirmation.
    asyncio.run(strategy.on_query_expired(query_watch))
    confirm_watch = strategy.watches.started[-1]
    assert confirm_watch.kind == t.CONFIRM_WATCH
    event_type, fields = strategy.pipeline.events[-1]
    assert event_type == t.SEMANTIC_MATCH_FOUND
    assert fields["payload"]["requiresUserConfirmation"] is True
    assert fields["payload"]["suggestedTool"] == "get_weather"
    assert fields["payload"]["confirmationId"] == confirm_watch.watch_id
    assert len(strategy.pipeline.sent) == 1  # nothing routed before the confirmation
    asyncio.run(strategy.on_confirmation(confirm_watch, {"confirmed": True, "by": "ann"}))
    routed, ack = strategy.pipeline.sent[1:]
    assert routed.topic == "s2.requests"
    assert h.header_value(routed.headers, t.RESOLVED_TOOL_HEADER) == "get_weather"
    assert h.header_value(ack.headers, h.COMMAND) == "ack"
    discovered = strategy.pipeline.events[-1][1]["payload"]
    assert discovered["strategy"] == "semantic_matching"
    assert discovered["tool"]["confirmedBy"] == "ann"
    assert discovered["strategiesAttempted"] == ["registry_refresh", "server_query",
                                                  "semantic_matching"]


def test_wiring_server_answer_registers_the_tool_and_routes() -> None:
    strategy = make_strategy([])
    run_report(strategy, discovery_report("get_forecast"), {})
    [watch] = strategy.watches.started
    found = entry("s7", "get_forecast", topic="s7.req")
    asyncio.run(strategy.on_query_answered(watch, {"tool": found.to_json()}))
    assert strategy.registry.registered == [found]
    assert strategy.pipeline.sent[1].topic == "s7.req"
    assert strategy.pipeline.events[-1][1]["payload"]["strategy"] == "server_query"


def test_wiring_refused_match_without_wrapper_is_tool_not_found() -> None:
    strategy = make_strategy([WEATHER])
    run_report(strategy, discovery_report("fetch_weather", "current weather in a city"), {})
    asyncio.run(strategy.on_query_expired(strategy.watches.started[0]))
    asyncio.run(strategy.on_confirmation(strategy.watches.started[1], {"confirmed": False}))
    types = [e for e, _ in strategy.pipeline.events]
    assert types[-2:] == [t.SEMANTIC_MATCH_DECLINED, "recovery/escalated"]
    payload = strategy.pipeline.events[-1][1]["payload"]
    assert payload["error"] == "ToolNotFoundError" and payload["toolName"] == "fetch_weather"
    assert strategy.pipeline.events[-1][1]["outcome"] == "escalated"


def test_wiring_unconfirmed_match_times_out_into_the_dynamic_wrapper() -> None:
    strategy = make_strategy([entry("s2", "get_weather_now", "Current weather for a city")],
                             DiscoveryPolicy(wrapper_topics={"getter": "getters.requests"}))
    run_report(strategy, discovery_report("get_weather", "current weather in a city"), {})
    asyncio.run(strategy.on_query_expired(strategy.watches.started[0]))
    asyncio.run(strategy.on_unconfirmed(strategy.watches.started[1]))
    declined = [f for e, f in strategy.pipeline.events if e == t.SEMANTIC_MATCH_DECLINED]
    assert declined[0]["payload"]["reason"] == "timeout"
    assert strategy.pipeline.sent[-2].topic == "getters.requests"
    payload = strategy.pipeline.events[-1][1]["payload"]
    assert payload["strategy"] == "dynamic_wrapping" and payload["tool"]["kind"] == "getter"


def test_wiring_same_report_again_repeats_the_first_step_only() -> None:
    strategy = make_strategy([])
    incidents: dict[str, Any] = {}
    run_report(strategy, discovery_report("get_forecast"), incidents)
    run_report(strategy, discovery_report("get_forecast"), incidents)
    first, second = strategy.watches.started
    assert first == second  # a repeated start of the same watch is ignored by the watches
    ids = [f["step_id"] for _, f in strategy.pipeline.events]
    assert ids[0] == ids[1]


# ---- the registry topic ---------------------------------------------------------------------

def test_registry_records_announce_withdraw_or_are_invalid() -> None:
    key, value = reg.announce_record(entry("s1", "get_weather", "d", topic="s1.req"))
    parsed = reg.parse_registry_record(key, value)
    assert isinstance(parsed, reg.Announce) and parsed.entry.request_topic == "s1.req"
    assert key == b"s1/get_weather"
    assert reg.parse_registry_record(*reg.withdraw_record("s1", "get_weather")) == reg.Withdraw(
        "s1/get_weather")
    assert reg.parse_registry_record(b"s1/x", None) == reg.Withdraw("s1/x")
    for bad in (b"{not json", b"[1]", b'{"server_id": "s1"}', b'{"op": "drop", "server_id": '
                b'"s", "tool": "t"}'):
        assert isinstance(reg.parse_registry_record(b"k", bad), reg.Invalid)
    assert isinstance(reg.parse_registry_record(None, None), reg.Invalid)


def test_registry_updates_keep_the_latest_announcement() -> None:
    newer = reg.Announce(reg.ToolEntry("s1", "t", "2.0", announced_at=20))
    older = reg.Announce(reg.ToolEntry("s1", "t", "1.0", announced_at=10))
    assert reg.registry_update(None, newer) == ("s1/t", newer.entry.to_json())
    assert reg.registry_update(newer.entry.to_json(), older) is None
    assert reg.registry_update(newer.entry.to_json(), reg.Withdraw("s1/t")) == ("s1/t", None)
    assert reg.registry_update(None, reg.Withdraw("s1/t")) is None


def test_result_records_parse_or_are_invalid() -> None:
    key, value = reg.result_record("get_weather", {"city": "Oslo"}, {"temp": 3}, stored_at=5)
    parsed = reg.parse_result_record(value)
    assert parsed == (key.decode(), reg.CachedResult("get_weather", {"temp": 3}, 5))
    assert isinstance(reg.parse_result_record(b'{"tool": "x"}'), reg.Invalid)
    assert isinstance(reg.parse_result_record(b"nope"), reg.Invalid)
    assert isinstance(reg.parse_result_record(b'{"tool": "x", "result": 1, "stored_at": "a"}'),
                      reg.Invalid)


def test_wiring_report_without_a_tool_name_is_escalated_at_once() -> None:
    strategy = make_strategy([WEATHER])
    event = discovery_report("x")
    event["detail"] = ("io.recovery.v1.ToolDiscoveryFailed", {"tool_name": "",
                                                              "error_type": "not_found"})
    incidents: dict[str, Any] = {}
    assert run_report(strategy, event, incidents)
    [(event_type, fields)] = strategy.pipeline.events
    assert event_type == "recovery/escalated" and fields["outcome"] == "escalated"
    assert incidents["call-1"]["state"] == "escalated"
    assert strategy.watches.started == [] and strategy.pipeline.sent == []
