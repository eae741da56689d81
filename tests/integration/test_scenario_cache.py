"""Scenario 5 (cache corruption and version conflicts) through a real broker, a real worker
and the client API's cache obeying the cache-control commands."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from app.client import FailureReporter
from app.client.cache import RecoveringCache
from app.scenarios import cache_conflicts as sc
from tests.integration.test_pipeline import caught_up, client_settings, types_for
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration

POLICY = """
[scenario.cache.key_strategies]
"merge:*" = "merge_versions"
"manual:*" = "manual_resolution_required"
"pin:*" = "use_database_version"
"""


@pytest.fixture
def cache_env(applied_topics: dict[str, str], tmp_path) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    applied_topics.update({"RECOVERY_SCENARIO_WATCH_INTERVAL_MS": "300",
                           "RECOVERY_CACHE_VERIFY_TIMEOUT_MS": "3000",
                           "RECOVERY_POLICY_FILE": str(policy)})
    return applied_topics


class CorruptingStore(dict):
    """A cache that cannot hold the right value for one key."""

    def __setitem__(self, key, value):
        super().__setitem__(key, "garbled" if key == "user:2" else value)


def outcomes(events: list[dict]) -> dict[str, str]:
    return {e["incident_id"]: e["event_type"] for e in events if e["outcome"]}


def payloads(events: list[dict], event_type: str) -> dict[str, dict]:
    return {e["incident_id"]: orjson.loads(e["payload_json"]) for e in events
            if e["event_type"] == event_type}


def inconsistency(reporter: FailureReporter, key: str, authoritative=None, cache=None):
    detail = {"cache_key": key, "corruption_type": "DATA_INCONSISTENCY",
              "detection_method": "checksum", "affected_entries": [key],
              "cache_value_json": orjson.dumps(cache).decode() if cache is not None else None,
              "authoritative_value_json": orjson.dumps(authoritative).decode()
              if authoritative is not None else None}
    reporter.report(kind="CACHE_CORRUPTED", error_type="data_inconsistency", service="profiles",
                    work_item_id=key, detail=("CacheCorrupted", detail))
    reporter.flush()


def test_inconsistent_entries_refreshed_verified_disabled_or_reported_orphaned(
        cache_env, worker_factory, topic_prefix):
    settings = client_settings(cache_env)
    bootstrap = settings.kafka_bootstrap_servers
    state_topic, events_topic = f"{topic_prefix}recovery.state", f"{topic_prefix}recovery.events"
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(state_topic, key=b"user:3", value=orjson.dumps(
        {"value": {"name": "Grace"}, "version": 7, "updated_at": 1}))
    producer.flush(10)
    worker_factory()
    cache = RecoveringCache(CorruptingStore({"user:1": {"name": "Ad@"}, "user:5": b"\xff"}),
                            settings=settings,
                            keys=lambda key: key.startswith("user:"))
    cache.start(0.2)
    reporter = FailureReporter(settings)
    reader = TopicReader(bootstrap, [events_topic])
    codec = locked_codec()
    try:
        inconsistency(reporter, "user:1", authoritative={"name": "Ada"}, cache={"name": "Ad@"})
        inconsistency(reporter, "user:2", authoritative={"name": "Bob"}, cache={"name": "B0b"})
        inconsistency(reporter, "user:404", cache={"name": "ghost"})
        # A key no cache holds: nobody verifies the refresh before the timeout.
        inconsistency(reporter, "team:1", authoritative={"name": "Core"})
        # A serialization error with nothing to refresh from: the entry is invalidated.
        reporter.report(kind="CACHE_CORRUPTED", error_type="serialization_error",
                        service="profiles", work_item_id="user:5",
                        detail=("CacheCorrupted", {"cache_key": "user:5",
                                                   "corruption_type": "SERIALIZATION_ERROR"}))
        # A report without a key cannot be acted on.
        reporter.report(kind="CACHE_CORRUPTED", error_type="data_inconsistency",
                        service="profiles", work_item_id="nokey")
        reporter.flush()
        everything = {"user:1", "user:2", "user:404", "team:1", "user:5", "nokey"}
        assert reader.wait_for(lambda ms: everything <= set(
            outcomes(lifecycle(codec, ms))), timeout=60), outcomes(
            lifecycle(codec, reader.messages))
        # Now that the worker is warm: no authoritative value in the report, so the state
        # topic's is used.
        inconsistency(reporter, "user:3", cache={"name": "Gr@ce"})
        assert reader.wait_for(lambda ms: "user:3" in outcomes(lifecycle(codec, ms)),
                               timeout=60)
    finally:
        reader.close()
        cache.close()
    events = lifecycle(codec, reader.messages)
    assert outcomes(events) == {"user:1": "recovery/recovery_completed",
                                "user:2": "recovery/escalated",
                                "user:404": "recovery/escalated",
                                "user:3": "recovery/recovery_completed",
                                "team:1": "recovery/escalated",
                                "user:5": "recovery/recovery_completed",
                                "nokey": "recovery/escalated"}
    assert types_for(events, "user:1") == [
        "recovery/failure_received", sc.CACHE_CORRUPTED, sc.CACHE_REFRESH_REQUESTED,
        sc.CACHE_RECOVERY_COMPLETED, "recovery/recovery_completed"]
    done = payloads(events, sc.CACHE_RECOVERY_COMPLETED)
    assert done["user:1"]["success"] and not done["user:1"]["cachingDisabled"]
    assert not done["user:2"]["success"] and done["user:2"]["cachingDisabled"]
    assert cache.store["user:1"] == {"name": "Ada"}
    assert cache.store["user:3"] == {"name": "Grace"}
    refresh = payloads(events, sc.CACHE_REFRESH_REQUESTED)
    assert refresh["user:1"]["authoritativeSource"] == "event"
    assert refresh["user:3"]["authoritativeSource"] == "state_topic"
    assert refresh["user:3"]["version"] == 7
    assert refresh["user:1"]["metadata"]["refreshReason"] == "corruption_recovery"
    # Still inconsistent after the refresh: caching off for the key, reads go to the database.
    assert cache.is_disabled("user:2") and "user:2" not in cache.store
    assert cache.get("user:2", load=lambda: {"name": "Bob"}) == {"name": "Bob"}
    [completed] = [e for e in events if e["incident_id"] == "user:2"
                   and e["event_type"] == sc.CACHE_RECOVERY_COMPLETED]
    at = int(completed["occurred_at"].timestamp() * 1000)
    assert 299_000 <= done["user:2"]["disabledUntil"] - at <= 300_000  # 5 minutes
    assert done["team:1"]["cachingDisabled"] and "timed out" in done["team:1"]["verification"]
    assert done["user:5"] == {"cacheKey": "user:5", "recoveryMethod": "invalidate",
                              "success": True, "cachingDisabled": False,
                              "originalCorruption": "serialization_error"}
    assert "user:5" not in cache.store
    assert "no cache key" in payloads(events, "recovery/escalated")["nokey"]["reason"]
    assert types_for(events, "user:404") == [
        "recovery/failure_received", sc.CACHE_CORRUPTED, sc.ORPHANED_CACHE_ENTRY,
        "recovery/escalated"]


def conflict(reporter: FailureReporter, key: str, db: dict, db_version: int, db_at: int,
             cache: dict, cache_version: int, cache_at: int) -> None:
    reporter.report(kind="VERSION_CONFLICT", error_type="version_conflict", service="profiles",
                    work_item_id=key, detail=("VersionConflict", {
                        "key": key, "cache_version": cache_version,
                        "database_version": db_version,
                        "cache_value_json": orjson.dumps(cache).decode(),
                        "database_value_json": orjson.dumps(db).decode(),
                        "cache_updated_at": cache_at, "database_updated_at": db_at}))


def test_version_conflicts_resolved_by_configured_strategy_and_audited(
        cache_env, worker_factory, topic_prefix):
    settings = client_settings(cache_env)
    bootstrap = settings.kafka_bootstrap_servers
    worker_factory()
    cache = RecoveringCache({}, settings=settings)
    cache.start(0.2)
    reporter = FailureReporter(settings)
    base = 1_700_000_000_000
    conflict(reporter, "profile:1", {"n": "old"}, 3, base, {"n": "new"}, 2, base + 10)
    conflict(reporter, "profile:2", {"n": "db"}, 5, base + 10, {"n": "cached"}, 4, base)
    conflict(reporter, "merge:1", {"a": 1, "b": 2}, 3, base, {"b": 3, "c": 4}, 3, base + 5)
    conflict(reporter, "manual:1", {"x": 1}, 1, base, {"x": 2}, 2, base + 5)
    conflict(reporter, "pin:1", {"p": "db"}, 1, base, {"p": "cache"}, 2, base + 5)
    reporter.flush()
    topics = {name: f"{topic_prefix}recovery.{name}" for name in ("events", "audit", "state")}
    reader = TopicReader(bootstrap, list(topics.values()))
    codec = locked_codec()
    keys = {"profile:1", "profile:2", "merge:1", "manual:1", "pin:1"}
    try:
        assert reader.wait_for(lambda ms: keys <= set(outcomes(lifecycle(
            codec, [m for m in ms if m.topic() == topics["events"]]))), timeout=60)
        assert reader.wait_for(lambda ms: cache.store.get("merge:1") is not None
                               and "pin:1" in cache.store, timeout=30)
        assert caught_up(cache_env, reader, list(topics.values()))
    finally:
        reader.close()
        cache.close()
    events = lifecycle(codec, reader.on(topics["events"]))
    assert outcomes(events) == {"profile:1": "recovery/recovery_completed",
                                "profile:2": "recovery/recovery_completed",
                                "merge:1": "recovery/recovery_completed",
                                "manual:1": "recovery/escalated",
                                "pin:1": "recovery/recovery_completed"}
    audit = {m.key().decode(): orjson.loads(m.value()) for m in reader.on(topics["audit"])}
    assert {k: a["resolution"] for k, a in audit.items()} == {
        "profile:1": "use_cache_version", "profile:2": "use_database_version",
        "merge:1": "merge_versions", "manual:1": "manual_resolution_required",
        "pin:1": "use_database_version"}
    assert audit["manual:1"]["conflictData"]["cache"] == {"value": {"x": 2}, "version": 2,
                                                          "updatedAt": base + 5}
    assert all(a["type"] == "version_conflict_resolution" for a in audit.values())
    # use_cache_version updates the database (the state topic); merge updates both.
    state = {m.key().decode(): orjson.loads(m.value()) for m in reader.on(topics["state"])}
    assert set(state) == {"profile:1", "merge:1"}
    assert state["profile:1"]["value"] == {"n": "new"} and state["profile:1"]["version"] == 4
    assert state["merge:1"]["value"] == {"a": 1, "b": 3, "c": 4}
    assert cache.store["merge:1"] == {"a": 1, "b": 3, "c": 4}
    assert cache.store["profile:2"] == {"n": "db"} and cache.store["pin:1"] == {"p": "db"}
    assert "profile:1" not in cache.store and "manual:1" not in cache.store
