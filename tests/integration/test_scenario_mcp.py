"""Scenario 1 (MCP connection loss) through a real broker and a real worker: tool servers
announce their tools on the registry topic, unreachable servers are simulated by a caller
that reports a timeout for every request sent to them, a healthy one acknowledges."""

from __future__ import annotations

import threading
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer

from app.client import FailureReporter
from app.client.consumer import ensure_topic
from app.contracts import headers as h
from app.kafka.config import consumer_config, producer_config
from app.scenarios import mcp_connection as m
from app.scenarios.shared.tool_registry import ToolDirectoryClient, ToolEntry
from tests.integration.test_pipeline import client_settings, types_for
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration

POLICY = """
[retry.network_timeout]
attempts = 3
backoff = "exponential"
initial_ms = 200
multiplier = 2.0
max_ms = 800
on_exhausted = "alternative_route"

[scenario.mcp.alternatives]
get_stock = ["s6"]
[scenario.mcp.fallbacks]
get_quote = { result = { quote = "stay calm" } }
"""


@pytest.fixture
def mcp_env(applied_topics: dict[str, str], tmp_path) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    prefix = applied_topics["RECOVERY_TOPIC_PREFIX"]
    # s6 is known only from the policy: its request topic is given there too.
    policy.write_text(POLICY + f'[scenario.mcp.servers]\ns6 = "{prefix}s6.requests"\n')
    applied_topics.update(RECOVERY_POLICY_FILE=str(policy))
    return applied_topics


class ToolServers:
    """Servers in `down` time out (the caller reports each request it sent them); the
    others answer, and the caller acknowledges the incident."""

    def __init__(self, settings, prefix: str, down: set[str], up: set[str]):
        self.prefix = prefix
        self.down, self.up = down, up
        self.reporter = FailureReporter(settings)
        self.consumer = Consumer(consumer_config(settings, f"servers-{uuid.uuid4()}"))
        self.consumer.subscribe([f"{prefix}{s}.requests" for s in down | up])
        self.served: list[tuple[str, str]] = []  # (server, incident)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def server_of(self, message: Message) -> str:
        return message.topic()[len(self.prefix):].removesuffix(".requests")

    def run(self) -> None:
        while not self.stop.is_set():
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                continue
            server = self.server_of(message)
            incident = h.header_value(message.headers(), h.INCIDENT_ID) or message.key().decode()
            self.served.append((server, incident))
            request = orjson.loads(message.value())
            if server in self.up:
                self.reporter.acknowledge(incident)
            else:
                self.reporter.report(
                    kind=m.KIND, error_type="network_timeout", service="agent",
                    message=f"{server} did not answer in time", record=message,
                    work_item_id=incident, dispatch_target=message.topic(),
                    detail=("McpConnectionLost", {
                        "server_id": server, "tool_name": request["tool"],
                        "tool_arguments_json": orjson.dumps(request["arguments"]).decode(),
                        "timeout_ms": 30000}))
            self.reporter.flush()

    def __enter__(self) -> ToolServers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def test_mcp_connection_loss_paths(mcp_env, worker_factory, topic_prefix):
    settings = client_settings(mcp_env)
    bootstrap = settings.kafka_bootstrap_servers
    servers = {f"s{n}" for n in range(1, 8)}
    replies = f"{topic_prefix}agent.replies"
    for topic in [f"{topic_prefix}{s}.requests" for s in servers] + [replies]:
        ensure_topic(bootstrap, topic, partitions=1)
    directory = ToolDirectoryClient(settings)
    for server, tool, version, protocol in [
            ("s1", "get_weather", "1.0", "2025-03-26"), ("s2", "get_weather", "1.0", "2024-11-05"),
            ("s3", "get_weather", "2.0", "2025-03-26"), ("s4", "get_time", "1.0", None),
            ("s5", "get_stock", "1.0", None), ("s7", "get_quote", "1.0", None)]:
        directory.announce(ToolEntry(server, tool, version, f"{tool} tool",
                                     f"{topic_prefix}{server}.requests", protocol))
    directory.remember_result("get_time", {"zone": "UTC"}, {"time": "12:00"})
    directory.flush()
    worker_factory()
    # Alternatives are looked up when decided: start once the worker has read the registry
    # and the results (their global tables' changelogs hold the last records sent).
    app_id = mcp_env["RECOVERY_APP_ID"]
    changelogs = [f"{app_id}-tool-registry-changelog", f"{app_id}-tool-results-changelog"]
    loaded = TopicReader(bootstrap, changelogs)
    assert loaded.wait_for(lambda ms: {m.topic() for m in ms} == set(changelogs)
                           and any(b"s7/get_quote" in (m.key() or b"") for m in ms), timeout=60)
    loaded.close()

    producer = Producer(producer_config(settings))

    def request(incident: str, server: str, tool: str, arguments: dict) -> None:
        producer.produce(f"{topic_prefix}{server}.requests", key=incident.encode(),
                         value=orjson.dumps({"tool": tool, "arguments": arguments}),
                         headers=[("reply-to", replies.encode())])

    codec = locked_codec()
    events_topic = f"{topic_prefix}recovery.events"
    reader = TopicReader(bootstrap, [events_topic, replies])

    def events() -> list[dict]:
        return lifecycle(codec, reader.on(events_topic))

    def outcomes() -> dict[str, dict]:
        return {e["incident_id"]: e for e in events() if e["outcome"]}

    with ToolServers(settings, topic_prefix, down=servers - {"s2"}, up={"s2"}) as fake:
        request("weather-1", "s1", "get_weather", {"city": "Oslo"})  # s1, s3 down; s2 answers
        request("time-1", "s4", "get_time", {"zone": "UTC"})  # no alternative: cached result
        request("stock-1", "s5", "get_stock", {"sym": "X"})  # configured alternative s6 down
        request("quote-1", "s7", "get_quote", {})  # fixed fallback result
        producer.flush(10)
        # The protocol report is decided at once: send it once the registry is surely read.
        assert reader.wait_for(lambda ms: m.TOOL_REROUTED in types_for(events(), "weather-1"),
                               timeout=60)
        reporter = FailureReporter(settings)
        reporter.report(kind=m.KIND, error_type="authentication_failure", service="agent",
                        work_item_id="auth-1", message="401",
                        detail=("McpConnectionLost", {"server_id": "s1",
                                                      "tool_name": "get_weather"}))
        reporter.report(kind=m.KIND, error_type="protocol_mismatch", service="agent",
                        work_item_id="proto-1", message="unsupported protocol version",
                        failed_record={"topic": f"{topic_prefix}s1.requests", "key": b"proto-1",
                                       "value": b'{"tool": "get_weather", "arguments": {}}',
                                       "headers": []},
                        dispatch_target=f"{topic_prefix}s1.requests",
                        detail=("McpConnectionLost", {
                            "server_id": "s1", "tool_name": "get_weather",
                            "client_protocol_version": "2024-11-05",
                            "server_protocol_version": "2025-03-26"}))
        reporter.flush()
        wanted = {"weather-1", "time-1", "stock-1", "quote-1", "auth-1", "proto-1"}
        done = reader.wait_for(lambda ms: wanted <= set(outcomes()), timeout=90)
        served = list(fake.served)
    reader.close()
    assert done, (outcomes().keys(), [(e["incident_id"], e["event_type"]) for e in events()])
    final = outcomes()

    # network timeout: 3 retries to s1, then s3 (newest version), then s2, which answers.
    steps = types_for(events(), "weather-1")
    assert steps.count("recovery/retry_scheduled") == 3
    assert steps.count(m.MCP_CONNECTION_LOST) >= 5
    assert final["weather-1"]["event_type"] == "recovery/recovery_completed"
    rerouted = [orjson.loads(e["payload_json"]) for e in events()
                if e["incident_id"] == "weather-1" and e["event_type"] == m.TOOL_REROUTED]
    assert [r["toServer"] for r in rerouted] == ["s3", "s2"]
    assert [s for s, i in served if i == "weather-1"] == ["s1", "s1", "s1", "s1", "s3", "s2"]
    lost = [orjson.loads(e["payload_json"]) for e in events()
            if e["incident_id"] == "weather-1" and e["event_type"] == m.MCP_CONNECTION_LOST]
    assert [x["serverId"] for x in lost][-2:] == ["s1", "s3"]
    assert lost[-1]["affectedTools"] == ["get_weather"]
    assert lost[-1]["errorType"] == "network_timeout"

    # no alternative: the cached result, marked degraded, goes back to the caller.
    assert final["time-1"]["event_type"] == "recovery/recovery_completed"
    [reply] = [msg for msg in reader.on(replies) if msg.key() == b"time-1"]
    body = orjson.loads(reply.value())
    assert body["result"] == {"time": "12:00"} and body["degraded"] is True
    assert h.header_value(reply.headers(), m.DEGRADED_HEADER) == "using_cached_data"

    # fixed fallback implementation.
    assert final["quote-1"]["event_type"] == "recovery/recovery_completed"
    quote = [orjson.loads(e["payload_json"]) for e in events()
             if e["incident_id"] == "quote-1" and e["event_type"] == m.DEGRADED_RESULT][0]
    assert quote["degradationReason"] == "using_fallback_implementation"
    assert quote["result"] == {"quote": "stay calm"}

    # everything failed: escalated with the alternatives attempted.
    assert final["stock-1"]["event_type"] == "recovery/escalated"
    escalation = orjson.loads(final["stock-1"]["payload_json"])
    assert escalation["error"] == "ToolRoutingFailureError"
    assert escalation["attemptedAlternatives"] == ["s6"]
    assert escalation["recommendedAction"] == "manual_intervention"

    # authentication: escalated, never retried nor routed.
    assert final["auth-1"]["event_type"] == "recovery/escalated"
    assert not {"recovery/retry_scheduled", m.TOOL_REROUTED} & set(types_for(events(),
                                                                             "auth-1"))

    # protocol mismatch: straight to the server speaking the client's version (s2).
    assert final["proto-1"]["event_type"] == "recovery/recovery_completed"
    assert "recovery/retry_scheduled" not in types_for(events(), "proto-1")
    assert [s for s, i in served if i == "proto-1"] == ["s2"]
    # exactly one terminal outcome each
    for incident in wanted:
        assert len([e for e in events() if e["incident_id"] == incident and e["outcome"]]) == 1
