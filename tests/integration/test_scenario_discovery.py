"""Scenario 2 (tool discovery failures) through a real broker and a real worker: each
discovery strategy, in the source's order, ending in a routed request or ToolNotFound."""

from __future__ import annotations

import threading
import uuid

import orjson
import pytest
from confluent_kafka import Consumer

from app.client import FailureReporter
from app.client.consumer import ensure_topic
from app.contracts import headers as h
from app.kafka.config import consumer_config
from app.scenarios import tool_discovery as t
from app.scenarios.shared.tool_registry import QUERIES_TOPIC, TOPIC, ToolDirectoryClient, ToolEntry
from tests.integration.test_pipeline import caught_up, client_settings, types_for
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration


@pytest.fixture
def discovery_env(applied_topics: dict[str, str], tmp_path) -> dict[str, str]:
    prefix = applied_topics["RECOVERY_TOPIC_PREFIX"]
    policy = tmp_path / "policy.toml"
    policy.write_text(f"""
[scenario.discovery]
query_timeout_ms = 6000
confirmation_timeout_ms = 12000
[scenario.discovery.wrapper_topics]
getter = "{prefix}getters.requests"
""")
    applied_topics.update({"RECOVERY_SCENARIO_WATCH_INTERVAL_MS": "300",
                           "RECOVERY_POLICY_FILE": str(policy)})
    return applied_topics


class QueryAnswerer:
    """A tool server that offers get_forecast: it answers discovery queries for it."""

    def __init__(self, settings, entry: ToolEntry):
        self.entry = entry
        self.client = ToolDirectoryClient(settings)
        self.consumer = Consumer(consumer_config(settings, f"server-{uuid.uuid4()}"))
        self.assigned = threading.Event()
        self.consumer.subscribe([settings.topic(QUERIES_TOPIC)],
                                on_assign=lambda consumer, parts: self.assigned.set())
        self.queries: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                continue
            query = orjson.loads(message.value())
            self.queries.append(query)
            if query["tool"] == self.entry.tool:
                self.client.answer_query(query, self.entry)
                self.client.flush()

    def __enter__(self) -> QueryAnswerer:
        # A server that is still joining its group when the query comes would answer after
        # the worker's query window: the test starts reporting once the server reads.
        self.thread.start()
        assert self.assigned.wait(60), "the tool server was never assigned the query topic"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def test_progressive_tool_discovery(discovery_env, worker_factory, topic_prefix):
    settings = client_settings(discovery_env)
    bootstrap = settings.kafka_bootstrap_servers
    targets = {name: f"{topic_prefix}{name}.requests" for name in ("s2", "s7", "getters")}
    for topic in targets.values():
        ensure_topic(bootstrap, topic, partitions=1)
    directory = ToolDirectoryClient(settings)
    # s9 offered a newer get_weather, then withdrew it: s2's is the one left.
    directory.announce(ToolEntry("s9", "get_weather", "9.0", "Current weather for a city",
                                 f"{topic_prefix}s9.requests"))
    directory.withdraw("s9", "get_weather")
    directory.announce(ToolEntry("s2", "get_weather", "1.0", "Current weather for a city",
                                 targets["s2"]))
    directory.flush()
    worker_factory()
    codec = locked_codec()
    events_topic = f"{topic_prefix}recovery.events"
    registry_topic = settings.topic(TOPIC)
    reader = TopicReader(bootstrap, [events_topic, registry_topic, *targets.values()])

    def events() -> list[dict]:
        return lifecycle(codec, reader.on(events_topic))

    def payloads(incident: str, event_type: str) -> list[dict]:
        return [orjson.loads(e["payload_json"]) for e in events()
                if e["incident_id"] == incident and e["event_type"] == event_type]

    # The registry lookup is decided at once: report once the worker has read the registry
    # (its global table's changelog holds the entry).
    changelog = f"{discovery_env['RECOVERY_APP_ID']}-tool-registry-changelog"
    loaded = TopicReader(bootstrap, [changelog])
    assert loaded.wait_for(lambda ms: any(b"s2/get_weather" in (m.key() or b"") for m in ms),
                           timeout=60)
    loaded.close()
    reporter = FailureReporter(settings)

    def missing(incident: str, tool: str, description: str = "") -> None:
        reporter.report(
            kind=t.KIND, error_type="not_found", service="runner", work_item_id=incident,
            message=f"{tool} is not registered",
            failed_record={"topic": f"{topic_prefix}tools.requests", "key": incident.encode(),
                           "value": orjson.dumps({"tool": tool}), "headers": []},
            detail=("ToolDiscoveryFailed", {"tool_name": tool, "error_type": "not_found",
                                            "searched_locations": ["local registry"],
                                            "description": description}))

    forecast = ToolEntry("s7", "get_forecast", "3.1", "Weather forecast", targets["s7"])
    with QueryAnswerer(settings, forecast) as server:
        missing("registry-1", "get_weather")  # 1: in the registry
        missing("query-1", "get_forecast")  # 2: a server answers the query
        missing("semantic-1", "fetch_weather", "weather for a city")  # 3: confirmed match
        missing("refused-1", "fetch_weather", "weather for a city")  # 3 refused, no wrapper
        missing("wrapper-1", "get_weather_report", "weather for a city")  # 3 unanswered, 4
        missing("none-1", "launch_rocket")  # nothing: ToolNotFound
        reporter.flush()

        def suggested(incident: str) -> list[dict]:
            return payloads(incident, t.SEMANTIC_MATCH_FOUND)

        assert reader.wait_for(lambda ms: suggested("semantic-1") and suggested("refused-1"),
                               timeout=60), [(e["incident_id"], e["event_type"])
                                             for e in events()]
        # Nothing is routed before a confirmation.
        assert not [m for m in reader.on(targets["s2"]) if m.key() == b"semantic-1"]
        directory.confirm_match(suggested("semantic-1")[0]["confirmationId"], True, by="ann")
        directory.confirm_match(suggested("refused-1")[0]["confirmationId"], False, by="bob")
        directory.flush()
        wanted = {"registry-1", "query-1", "semantic-1", "refused-1", "wrapper-1", "none-1"}
        done = reader.wait_for(lambda ms: wanted <= {e["incident_id"] for e in events()
                                                      if e["outcome"]}, timeout=60)
        queries = list(server.queries)
    assert caught_up(discovery_env, reader, [events_topic, registry_topic, *targets.values()])
    reader.close()
    assert done, [(e["incident_id"], e["event_type"]) for e in events()]
    outcome = {e["incident_id"]: e["event_type"] for e in events() if e["outcome"]}

    # every report is announced with the source's fields
    [failed] = payloads("query-1", t.TOOL_DISCOVERY_FAILED)
    assert failed["toolName"] == "get_forecast" and failed["searchedLocations"] == [
        "local registry"]

    def routed(topic: str, incident: str):
        found = [m for m in reader.on(topic) if m.key() == incident.encode()]
        assert len(found) == 1, (topic, incident)
        return found[0]

    # 1. registry
    assert outcome["registry-1"] == "recovery/recovery_completed"
    [found] = payloads("registry-1", t.TOOL_DISCOVERED)
    assert found["strategy"] == "registry_refresh" and found["tool"]["serverId"] == "s2"
    routed(targets["s2"], "registry-1")
    assert t.SERVERS_QUERIED not in types_for(events(), "registry-1")
    # 2. server query: answered, routed and registered on the server's behalf
    assert outcome["query-1"] == "recovery/recovery_completed"
    assert payloads("query-1", t.TOOL_DISCOVERED)[0]["strategy"] == "server_query"
    routed(targets["s7"], "query-1")
    assert any(m.key() == b"s7/get_forecast" for m in reader.on(registry_topic))
    assert {q["tool"] for q in queries} >= {"get_forecast", "fetch_weather", "launch_rocket"}
    # 3. semantic match, confirmed: routed to the suggested tool
    [match] = payloads("semantic-1", t.SEMANTIC_MATCH_FOUND)
    assert match["suggestedTool"] == "get_weather" and match["requiresUserConfirmation"]
    assert outcome["semantic-1"] == "recovery/recovery_completed"
    message = routed(targets["s2"], "semantic-1")
    assert h.header_value(message.headers(), t.RESOLVED_TOOL_HEADER) == "get_weather"
    assert payloads("semantic-1", t.TOOL_DISCOVERED)[0]["tool"]["confirmedBy"] == "ann"
    # 3 refused, and no wrapper for fetch_*: ToolNotFound
    assert payloads("refused-1", t.SEMANTIC_MATCH_DECLINED)[0]["reason"] == "refused"
    assert outcome["refused-1"] == "recovery/escalated"
    # 3 unanswered, then 4: the getter wrapper
    assert payloads("wrapper-1", t.SEMANTIC_MATCH_DECLINED)[0]["reason"] == "timeout"
    assert outcome["wrapper-1"] == "recovery/recovery_completed"
    wrapped = payloads("wrapper-1", t.TOOL_DISCOVERED)[0]
    assert wrapped["strategy"] == "dynamic_wrapping" and wrapped["tool"]["kind"] == "getter"
    routed(targets["getters"], "wrapper-1")
    # nothing found
    assert outcome["none-1"] == "recovery/escalated"
    [escalated] = payloads("none-1", "recovery/escalated")
    assert escalated["error"] == "ToolNotFoundError"
    assert escalated["strategiesAttempted"] == ["registry_refresh", "server_query",
                                                "semantic_matching", "dynamic_wrapping"]
    assert escalated["recommendations"]
    for incident in wanted:
        assert len([e for e in events() if e["incident_id"] == incident and e["outcome"]]) == 1
