"""Scenario 5 (cache corruption, version conflicts): the resolver's strategies, every
branch of the cache decisions, the client cache's obedience, the deadline watches and the
policy data, without a broker."""

from __future__ import annotations

import itertools

import orjson
import pytest

from app.client import cache as cc
from app.pipeline.conflicts import (
    MANUAL,
    UnknownStrategy,
    Version,
    checksum,
    in_conflict,
    merge_values,
    resolve,
)
from app.policy.rules import PolicyError
from app.policy.state import parse_state_policies
from app.scenarios import cache_conflicts as sc
from app.scenarios.shared import watches as w

DB = Version("database", {"name": "Ada", "city": "London"}, 3, 1_000)
CACHE = Version("cache", {"name": "Ada L.", "email": "ada@x"}, 2, 2_000)


# ---- the resolver ------------------------------------------------------------------------

def test_last_write_wins_takes_the_later_write() -> None:
    resolution = resolve([DB, CACHE], "last_write_wins")
    assert (resolution.action, resolution.chosen, resolution.value) == (
        "use_cache_version", "cache", CACHE.value)
    # Written last but with a lower version number: it becomes a new, higher version.
    assert resolution.version == 4
    newer_db = Version("database", DB.value, 3, 3_000)
    assert resolve([newer_db, CACHE], "last_write_wins").action == "use_database_version"
    assert resolve([newer_db, CACHE], "last_write_wins").version == 3


def test_last_write_wins_ties_go_to_the_higher_version_then_the_first_named() -> None:
    a = Version("database", {"v": 1}, 5, 1_000)
    b = Version("cache", {"v": 2}, 6, 1_000)
    assert resolve([a, b], "last_write_wins").chosen == "cache"
    same = Version("cache", {"v": 2}, 5, 1_000)
    assert resolve([a, same], "last_write_wins").chosen == "database"
    assert resolve([same, a], "last_write_wins").chosen == "cache"
    untimed = [Version("database", 1, 2), Version("cache", 2, 9)]
    assert resolve(untimed, "last_write_wins").chosen == "cache"


@pytest.mark.parametrize(("strategy", "chosen"), [("use_database_version", "database"),
                                                  ("use_cache_version", "cache")])
def test_a_preferred_source_wins_whatever_the_times(strategy: str, chosen: str) -> None:
    resolution = resolve([DB, CACHE], strategy)
    assert (resolution.action, resolution.chosen) == (strategy, chosen)


def test_preferring_a_source_that_has_no_version_needs_a_person() -> None:
    assert resolve([DB, CACHE], "use_primary_version").action == MANUAL


def test_merge_is_field_level_later_write_wins_and_nested_objects_merge() -> None:
    resolution = resolve([DB, CACHE], "merge_versions")
    assert resolution.action == "merge_versions" and resolution.chosen == "merged"
    assert resolution.value == {"name": "Ada L.", "city": "London", "email": "ada@x"}
    assert resolution.version == 4
    nested = merge_values([{"a": {"x": 1, "y": 1}, "b": 1}, {"a": {"y": 2}, "b": {"z": 1}}])
    assert nested == {"a": {"x": 1, "y": 2}, "b": {"z": 1}}


def test_merge_is_deterministic_whatever_the_order_given() -> None:
    versions = [DB, CACHE, Version("edge", {"city": "Paris"}, 1, 1_500)]
    results = {orjson.dumps(resolve(list(p), "merge_versions").value,
                            option=orjson.OPT_SORT_KEYS)
               for p in itertools.permutations(versions)}
    assert len(results) == 1


def test_values_that_are_not_objects_cannot_be_merged() -> None:
    resolution = resolve([Version("database", 1, 1, 1), Version("cache", {"a": 1}, 1, 2)],
                         "merge_versions")
    assert resolution.manual and resolution.value is None


def test_manual_resolution_decides_nothing() -> None:
    resolution = resolve([DB, CACHE], "manual_resolution_required")
    assert resolution.manual and resolution.chosen is None


def test_unknown_strategies_and_empty_input_are_refused() -> None:
    with pytest.raises(UnknownStrategy):
        resolve([DB], "coin_flip")
    with pytest.raises(ValueError):
        resolve([], "last_write_wins")


def test_conflict_means_different_values() -> None:
    assert in_conflict([DB, CACHE])
    assert not in_conflict([DB, Version("cache", dict(reversed(DB.value.items())), 9, 1)])
    assert not in_conflict([DB])


# ---- cache decisions ---------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "ctype", "corruption", "branch"), [
    ("CACHE_CORRUPTED", "data_inconsistency", None, sc.DATA_INCONSISTENCY),
    ("CACHE_CORRUPTED", "version_conflict", None, sc.VERSION_CONFLICT),
    ("VERSION_CONFLICT", "unknown", None, sc.VERSION_CONFLICT),
    ("CACHE_CORRUPTED", "serialization_error", None, sc.SERIALIZATION_ERROR),
    ("CACHE_CORRUPTED", "unknown", "DATA_INCONSISTENCY", sc.DATA_INCONSISTENCY),
    ("CACHE_CORRUPTED", "unknown", "SERIALIZATION_ERROR", sc.SERIALIZATION_ERROR),
    ("CACHE_CORRUPTED", "unknown", "ORPHANED_ENTRY", sc.ORPHANED),
    ("CACHE_CORRUPTED", "unknown", "OTHER", sc.GENERIC),
    ("CACHE_CORRUPTED", "unknown", None, sc.GENERIC),
])
def test_branch_by_classification_then_corruption_type(kind, ctype, corruption, branch) -> None:
    assert sc.branch_of(kind, ctype, corruption) == branch


def test_authoritative_value_from_the_event_first_then_the_state_topic() -> None:
    state = {"value": {"n": "state"}, "version": 7}
    carried = sc.authoritative_of({"authoritative_value_json": '{"n": "event"}'}, state)
    assert carried == sc.Authoritative({"n": "event"}, None, "event")
    assert sc.authoritative_of({}, state) == sc.Authoritative({"n": "state"}, 7, "state_topic")
    assert sc.authoritative_of({}, None) is None
    # JSON null carried by the event is a value (the database holds null).
    assert sc.authoritative_of({"authoritative_value_json": "null"}, None).value is None


def test_a_value_that_is_not_json_is_a_bad_report() -> None:
    with pytest.raises(sc.BadReport):
        sc.authoritative_of({"authoritative_value_json": "{nope"}, None)


def test_refresh_invalidates_then_sets_with_ttl_metadata_and_a_verification_request() -> None:
    auth = sc.Authoritative({"n": 1}, 4, "event")
    invalidate, refresh = sc.refresh_commands(
        "user:1", auth, event_id="e1", incident_id="i1", now_ms=100, ttl_ms=3_600_000,
        corruption="data_inconsistency", reply_topic="recovery.watches")
    assert (invalidate.command, refresh.command) == (cc.INVALIDATE, cc.SET)
    assert refresh.value == {"n": 1} and refresh.ttl_ms == 3_600_000 and refresh.version == 4
    assert refresh.metadata == {"refreshReason": "corruption_recovery", "refreshTime": 100,
                                "originalCorruption": "data_inconsistency"}
    assert refresh.checksum == checksum({"n": 1})
    assert (refresh.reply_topic, refresh.watch_id) == ("recovery.watches", "e1:verify")


def test_verification_needs_a_matching_answer() -> None:
    good = checksum({"n": 1})
    assert sc.verified(good, {"ok": True, "checksum": good})[0]
    assert not sc.verified(good, {"ok": False, "checksum": "other"})[0]
    assert not sc.verified(good, {"ok": True, "checksum": "other"})[0]
    valid, why = sc.verified(good, None)
    assert not valid and "timed out" in why


def test_still_inconsistent_disables_caching_for_five_minutes() -> None:
    command = sc.disable_command("k", event_id="e", incident_id="i", now_ms=1_000,
                                 duration_ms=300_000)
    assert (command.command, command.until_ms, command.reason, command.fallback_to_database) \
        == (cc.DISABLE, 301_000, "persistent_corruption", True)


def test_versions_of_a_version_conflict_report_database_first() -> None:
    detail = {"key": "k", "cache_version": 2, "database_version": 3,
              "cache_value_json": '{"a": 1}', "database_value_json": '{"a": 2}',
              "cache_updated_at": 20, "database_updated_at": 10}
    db, cache = sc.versions_of("VERSION_CONFLICT", detail)
    assert (db.source, db.value, db.version, db.updated_at_ms) == ("database", {"a": 2}, 3, 10)
    assert (cache.source, cache.value, cache.version, cache.updated_at_ms) == (
        "cache", {"a": 1}, 2, 20)
    db, cache = sc.versions_of("CACHE_CORRUPTED", {"cache_value_json": "1",
                                                   "authoritative_value_json": "2"})
    assert (db.value, cache.value) == (2, 1)


@pytest.mark.parametrize(("strategy", "effects"), [
    ("use_database_version", sc.Effects(set_cache=True, update_database=False, escalate=False)),
    ("use_cache_version", sc.Effects(set_cache=False, update_database=True, escalate=False)),
    ("merge_versions", sc.Effects(set_cache=True, update_database=True, escalate=False)),
    ("manual_resolution_required", sc.Effects(set_cache=False, update_database=False,
                                              escalate=True))])
def test_each_resolution_does_what_the_source_says(strategy, effects) -> None:
    assert sc.effects_of(resolve([DB, CACHE], strategy)) == effects


def test_every_resolution_has_an_audit_record() -> None:
    resolution = resolve([DB, CACHE], "manual_resolution_required")
    audit = sc.audit_record("k", resolution, [DB, CACHE], incident_id="i", event_id="e",
                            now_ms=5)
    assert audit["type"] == "version_conflict_resolution" and audit["cacheKey"] == "k"
    assert audit["resolution"] == "manual_resolution_required" and audit["timestamp"] == 5
    assert audit["conflictData"]["database"] == {"value": DB.value, "version": 3,
                                                 "updatedAt": 1_000}


# ---- the client cache --------------------------------------------------------------------

def offline_cache(store=None) -> cc.RecoveringCache:
    return cc.RecoveringCache(store if store is not None else {}, listen=False)


def cmd(command: str, key: str = "k", cid: str = "c1", **fields) -> cc.CacheCommand:
    return cc.CacheCommand(cid, command, key, 1, **fields)


def test_set_then_answer_with_what_the_cache_now_holds() -> None:
    cache = offline_cache({"k": "bad"})
    reply = cache.apply(cmd(cc.SET, value={"a": 1}, checksum=checksum({"a": 1}),
                            reply_topic="recovery.watches", watch_id="w1", ttl_ms=10),
                        now_ms=100)
    assert cache.store["k"] == {"a": 1} and cache.expires_at["k"] == 110
    assert reply is not None and (reply.topic, reply.key) == ("recovery.watches", "w1")
    answer = orjson.loads(reply.value)
    assert answer == {"op": "resolve", "watch_id": "w1",
                      "result": {"key": "k", "checksum": checksum({"a": 1}), "ok": True}}


def test_a_cache_that_cannot_hold_the_value_says_so() -> None:
    class Broken(dict):
        def __setitem__(self, key, value):
            super().__setitem__(key, "garbled")

    reply = offline_cache(Broken()).apply(cmd(cc.SET, value=1, checksum=checksum(1),
                                              reply_topic="t", watch_id="w"))
    assert orjson.loads(reply.value)["result"]["ok"] is False


def test_invalidate_disable_enable_and_repeats() -> None:
    cache = offline_cache({"k": 1})
    assert cache.apply(cmd(cc.INVALIDATE, cid="i")) is None and "k" not in cache.store
    cache.put("k", 2, now_ms=0)
    cache.apply(cmd(cc.DISABLE, cid="d", until_ms=1_000), now_ms=0)
    assert "k" not in cache.store and cache.is_disabled("k", 500)
    assert cache.get("k", load=lambda: "from-db", now_ms=500) == "from-db"
    assert "k" not in cache.store  # nothing cached while disabled
    assert not cache.is_disabled("k", 1_000)  # five minutes are over
    assert cache.get("k", load=lambda: "db", now_ms=1_001) == "db" and cache.store["k"] == "db"
    cache.apply(cmd(cc.DISABLE, cid="d2", until_ms=9_000), now_ms=2_000)
    cache.apply(cmd(cc.ENABLE, cid="e"), now_ms=2_000)
    assert not cache.is_disabled("k", 2_001)
    cache.store["k"] = "kept"
    assert cache.apply(cmd(cc.INVALIDATE, cid="i")) is None and cache.store["k"] == "kept"


def test_get_respects_the_ttl() -> None:
    cache = offline_cache()
    cache.put("k", "v1", ttl_ms=100, now_ms=0)
    assert cache.get("k", load=lambda: "v2", now_ms=50) == "v1"
    assert cache.get("k", load=lambda: "v2", now_ms=150) == "v2"


@pytest.mark.parametrize("value", [b"", b"{}", b'{"command": "explode", "key": "k"}',
                                   b'{"command_id": "c", "command": "set", "key": 5}'])
def test_garbage_is_not_a_cache_command(value: bytes) -> None:
    with pytest.raises(ValueError):
        cc.CacheCommand.decode(value)


# ---- deadline watches ------------------------------------------------------------------

WATCH = w.Watch("w1", "cache_verify", "i1", 0, 1_000, {"k": 1})


def start() -> dict:
    return {"op": "start", "watch": WATCH.to_json()}


def test_watch_started_resolved_or_expired_once() -> None:
    assert w.step(None, start(), 0) == w.Started(WATCH)
    assert isinstance(w.step(WATCH.to_json(), start(), 0), w.Ignored)
    resolved = w.step(WATCH.to_json(), {"op": "resolve", "watch_id": "w1",
                                        "result": {"ok": True}}, 10)
    assert resolved == w.Resolved(WATCH, {"ok": True})
    assert isinstance(w.step(WATCH.to_json(), {"op": "check", "watch_id": "w1"}, 999),
                      w.Ignored)
    assert w.step(WATCH.to_json(), {"op": "check", "watch_id": "w1"}, 1_000) == w.Expired(WATCH)
    # After the watch ended (table entry gone): a late answer or check changes nothing.
    assert isinstance(w.step(None, {"op": "resolve", "watch_id": "w1"}, 5), w.Ignored)
    assert isinstance(w.step(None, {"op": "check", "watch_id": "w1"}, 5_000), w.Ignored)
    assert isinstance(w.step(WATCH.to_json(), {"op": "dance", "watch_id": "w1"}, 5), w.Ignored)


def test_only_overdue_watches_are_nudged() -> None:
    watches = [WATCH.to_json(), {**WATCH.to_json(), "watch_id": "w2", "deadline_ms": 5_000}]
    assert w.overdue(watches, 999) == []
    assert w.overdue(watches, 1_000) == ["w1"]
    assert w.overdue(watches, 5_000) == ["w1", "w2"]


# ---- policy data -------------------------------------------------------------------------

def test_cache_strategy_by_key_glob_else_the_default() -> None:
    policies = parse_state_policies({}, {"scenario": {"cache": {
        "version_conflict_strategy": "use_database_version",
        "key_strategies": {"session:*": "merge_versions"}}}})
    assert policies.cache.strategy_for("session:9") == "merge_versions"
    assert policies.cache.strategy_for("user:9") == "use_database_version"
    assert parse_state_policies({}, {}).cache.strategy_for("x") == "last_write_wins"


@pytest.mark.parametrize("extra", [
    {"cache": {"version_conflict_strategy": "coin_flip"}},
    {"cache": {"key_strategies": {"a*": "nope"}}},
    {"cache": {"refresh_ttl_ms": -1}},
    {"cache": {"colour": "blue"}},
    {"partition": {"conflict_strategy": "coin_flip"}},
    {"coordination": {"min_patterns": 0}},
    {"coordination": {"critical_patterns": "network"}},
])
def test_bad_policy_data_is_refused_with_its_name(extra) -> None:
    with pytest.raises(PolicyError):
        parse_state_policies({}, {"scenario": extra})


class CapturingProducer:
    def __init__(self):
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic, key, value):
        self.sent.append((topic, key, value))

    def poll(self, timeout):
        return 0


def test_commands_for_keys_the_cache_does_not_hold_are_ignored() -> None:
    producer = CapturingProducer()
    cache = cc.RecoveringCache({}, listen=False, producer=producer,
                               keys=lambda key: key.startswith("user:"))
    set_team = cmd(cc.SET, key="team:1", value=1, checksum=checksum(1), reply_topic="t",
                   watch_id="w")
    cache._on_message(set_team.encode())
    assert cache.store == {} and producer.sent == []
    cache._on_message(replace_key(set_team, "user:1").encode())
    assert cache.store == {"user:1": 1} and len(producer.sent) == 1


def replace_key(command: cc.CacheCommand, key: str) -> cc.CacheCommand:
    from dataclasses import replace

    return replace(command, key=key, command_id=f"{command.command_id}:{key}")


def test_a_store_that_fails_answers_not_ok() -> None:
    class Failing(dict):
        def __setitem__(self, key, value):
            raise OSError("disk full")

    producer = CapturingProducer()
    cache = cc.RecoveringCache(Failing(), listen=False, producer=producer)
    cache._on_message(cmd(cc.SET, value=1, checksum=checksum(1), reply_topic="t",
                          watch_id="w").encode())
    [(topic, key, value)] = producer.sent
    assert (topic, key) == ("t", b"w")
    assert orjson.loads(value)["result"] == {"key": "k", "ok": False, "checksum": None,
                                             "error": "disk full"}
