"""Coordinated recovery (Cross-Communication Pattern Recovery) through a real broker and a
real worker: several failure patterns at once make one plan, critical steps first."""

from __future__ import annotations

import orjson
import pytest

from app.client import FailureReporter
from app.client import control as ctl
from app.scenarios import coordinated as co
from tests.integration.test_pipeline import caught_up, client_settings
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration


@pytest.fixture
def coordination_env(applied_topics: dict[str, str]) -> dict[str, str]:
    applied_topics.update({"RECOVERY_SCENARIO_WATCH_INTERVAL_MS": "300",
                           "RECOVERY_COORDINATION_WINDOW_MS": "60000",
                           "RECOVERY_COORDINATION_SETTLE_MS": "1000",
                           "RECOVERY_HEALTH_CHECK_INTERVAL_MS": "500",
                           "RECOVERY_HEARTBEAT_STALE_MS": "3000"})
    return applied_topics


def of_type(events: list[dict], event_type: str) -> list[dict]:
    return [e for e in events if e["event_type"] == event_type]


def orphaned_cache_entry(reporter: FailureReporter, key: str) -> None:
    reporter.report(kind="CACHE_CORRUPTED", error_type="data_inconsistency", service="s",
                    work_item_id=key, detail=("CacheCorrupted", {
                        "cache_key": key, "corruption_type": "DATA_INCONSISTENCY"}))


def test_open_partition_fails_the_required_critical_step_and_stops_the_plan(
        coordination_env, worker_factory, topic_prefix):
    settings = client_settings(coordination_env)
    worker_factory()
    reporter = FailureReporter(settings)
    orphaned_cache_entry(reporter, "user:1")
    orphaned_cache_entry(reporter, "user:2")  # same pattern: still one pattern active
    reporter.report(kind="NETWORK_PARTITION", error_type="network_partition", service="mesh",
                    work_item_id="split-1", detail=("NetworkPartition", {
                        "partition_id": "eu-1", "phase": "DETECTED",
                        "can_operate_autonomously": True}))
    reporter.flush()
    events_topic = f"{topic_prefix}recovery.events"
    reader = TopicReader(settings.kafka_bootstrap_servers, [events_topic])
    codec = locked_codec()
    try:
        assert reader.wait_for(lambda ms: of_type(lifecycle(codec, ms), co.COMPLETED),
                               timeout=60)
        # Nothing else is planned within the window: every input the worker had (the
        # coordination topic included) is processed, and its events are read to the end.
        assert caught_up(coordination_env, reader, [events_topic])
    finally:
        reader.close()
    events = lifecycle(codec, reader.messages)
    [planned] = of_type(events, co.PLANNED)
    plan = orjson.loads(planned["payload_json"])
    assert [s["name"] for s in plan["critical_steps"]] == ["verify_partitions_healed"]
    assert [s["name"] for s in plan["normal_steps"]] == ["verify_cache_consistency"]
    # The second cache failure came within the observer's throttle interval: counted, and
    # named once the interval passed (it may come after the plan was made). The two keys
    # sit on different partitions, so either may reach the worker first.
    named = plan["analysis"]["state_sync"]["incidents"]
    assert named and set(named) <= {"user:1", "user:2"}
    assert plan["analysis"]["network"]["maxSeverity"] == "CRITICAL"
    [completed] = of_type(events, co.COMPLETED)
    result = orjson.loads(completed["payload_json"])
    # A plan is not a failure's incident: no outcome of its own, its verdict is `success`.
    assert completed["outcome"] is None and completed["incident_id"] == planned["incident_id"]
    assert result["success"] is False and result["phase"] == "critical_stabilization"
    assert result["failedStep"]["name"] == "verify_partitions_healed"
    # The plan stopped: the normal step never ran.
    assert [(r["step"], r["success"]) for r in result["results"]] == [
        ("verify_partitions_healed", False)]
    assert result["results"][0]["detail"] == {"openPartitions": ["eu-1"]}
    assert "systemIntegrity" not in result


def test_stable_system_completes_the_plan_with_integrity_verified(
        coordination_env, worker_factory, topic_prefix):
    settings = client_settings(coordination_env)
    worker_factory()
    reporter = FailureReporter(settings)
    group = f"{topic_prefix}indexers"
    reporter.heartbeat(group, status="healthy", events_processed=5)
    reporter.report(kind="CONSUMER_CRASHED", error_type="slow", severity="WARNING",
                    service="indexer", consumer_group=group, work_item_id="minor-1")
    reporter.report(kind="VERSION_CONFLICT", error_type="version_conflict", service="s",
                    work_item_id="k1", detail=("VersionConflict", {
                        "key": "k1", "cache_version": 1, "database_version": 2,
                        "cache_value_json": "1", "database_value_json": "2"}))
    reporter.flush()
    events_topic = f"{topic_prefix}recovery.events"
    reader = TopicReader(settings.kafka_bootstrap_servers, [events_topic])
    codec = locked_codec()
    try:
        assert reader.wait_for(lambda ms: of_type(lifecycle(codec, ms), co.COMPLETED),
                               timeout=60)
    finally:
        reader.close()
    events = lifecycle(codec, reader.messages)
    plan = orjson.loads(of_type(events, co.PLANNED)[0]["payload_json"])
    assert [s["name"] for s in plan["critical_steps"]] == ["stabilize_consumers"]
    assert [s["name"] for s in plan["normal_steps"]] == ["verify_cache_consistency"]
    [completed] = of_type(events, co.COMPLETED)
    result = orjson.loads(completed["payload_json"])
    assert completed["outcome"] is None
    assert result["success"] is True and result["phase"] == "completed"
    assert [(r["step"], r["success"]) for r in result["results"]] == [
        ("stabilize_consumers", True), ("verify_cache_consistency", True)]
    assert result["systemIntegrity"] == {"isHealthy": True, "openPartitions": [],
                                         "unhealthyConsumers": [],
                                         "pendingCacheVerifications": []}


def test_a_down_consumer_is_restarted_in_safe_mode_by_the_plan(
        coordination_env, worker_factory, topic_prefix):
    settings = client_settings(coordination_env)
    worker_factory()
    reporter = FailureReporter(settings)
    group = f"{topic_prefix}mailers"
    reporter.heartbeat(group, status="failed", events_processed=5)
    reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="handler_exception",
                    service="mailer", consumer_group=group, work_item_id="mail-1")
    reporter.report(kind="MCP_CONNECTION_LOST", error_type="authentication_failure",
                    service="agent", work_item_id="tool-1",
                    detail=("McpConnectionLost", {"server_id": "mcp-1"}))
    reporter.flush()
    topics = [f"{topic_prefix}recovery.events", f"{topic_prefix}recovery.control"]
    reader = TopicReader(settings.kafka_bootstrap_servers, topics)
    codec = locked_codec()
    try:
        assert reader.wait_for(lambda ms: of_type(lifecycle(
            codec, [m for m in ms if m.topic() == topics[0]]), co.COMPLETED) and any(
            m.topic() == topics[1] for m in ms), timeout=60)
    finally:
        reader.close()
    result = orjson.loads(of_type(lifecycle(codec, reader.on(topics[0])),
                                  co.COMPLETED)[0]["payload_json"])
    assert result["phase"] == "critical_stabilization"
    assert result["failedStep"]["name"] == "stabilize_consumers"
    detail = result["results"][0]["detail"]
    assert detail == {"unhealthyConsumers": [group], "restartedInSafeMode": [group]}
    [command] = [ctl.ControlCommand.decode(m.value()) for m in reader.on(topics[1])]
    assert command.command == ctl.RESTART_SAFE_MODE and command.target == group
