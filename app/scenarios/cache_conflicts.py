"""Scenario 5: cache corruption and version conflicts (the source's CacheSyncFailureHandler).

Reports of kind CACHE_CORRUPTED and VERSION_CONFLICT are taken over from the generic
pipeline and handled by the corruption's type (the source's recoverFromCacheCorruption):

- data_inconsistency (`handleDataInconsistency`): the authoritative value, carried by the
  event (`authoritative_value_json`) or else the latest for the key on the compacted topic
  `recovery.state`. None anywhere: the orphaned cache entry is reported (escalated).
  Otherwise the cache is told to `invalidate` the entry and `set` it to the authoritative
  value (with the refresh TTL and metadata: refreshReason corruption_recovery), and to read it
  back and answer (verifyCacheIntegrity). No valid answer within RECOVERY_CACHE_VERIFY_
  TIMEOUT_MS: still inconsistent, so caching for the key is disabled for
  RECOVERY_CACHE_DISABLE_MS (5 min, fallbackToDatabase). Then
  `communication/cache_recovery_completed` (recoveryMethod database_refresh, success,
  cachingDisabled).
- version_conflict (`handleVersionConflict`): resolved by the configured strategy
  (app/scenarios/conflict_resolution.py): use_database_version sets the cache,
  use_cache_version updates the database (the state topic), merge_versions does both,
  manual_resolution_required escalates. Every resolution goes to the audit topic
  `recovery.audit`.
- serialization_error (the source leaves it undefined): refreshed like an inconsistency when
  an authoritative value is known, else invalidated.
- anything else (`handleGenericCacheCorruption`, undefined in the source): invalidated, so the
  next read goes to the database.

Caches obey the commands through the client API (app/client/cache.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from app.client import cache as cc
from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.records import OutRecord
from app.pipeline.conflicts import Resolution, Version, checksum, resolve
from app.pipeline.strategy import BaseStrategy, StrategyContext
from app.policy.state import CachePolicy
from app.scenarios.shared import watches as w
from app.scenarios.shared.incidents import detail_of, note_report

log = logging.getLogger(__name__)

KINDS = frozenset({"CACHE_CORRUPTED", "VERSION_CONFLICT"})
STATE_TOPIC = "recovery.state"
AUDIT_TOPIC = "recovery.audit"
VERIFY_WATCH = "cache_verify"

DATA_INCONSISTENCY = "data_inconsistency"
VERSION_CONFLICT = "version_conflict"
SERIALIZATION_ERROR = "serialization_error"
ORPHANED = "orphaned_entry"
GENERIC = "generic"

CACHE_CORRUPTED = "communication/cache_corrupted"
CACHE_REFRESH_REQUESTED = "communication/cache_refresh_requested"
CACHE_RECOVERY_COMPLETED = "communication/cache_recovery_completed"
ORPHANED_CACHE_ENTRY = "communication/orphaned_cache_entry"
VERSION_CONFLICT_RESOLVED = "communication/version_conflict_resolved"
AUDIT_TYPE = "version_conflict_resolution"

_CORRUPTION_BRANCH = {"DATA_INCONSISTENCY": DATA_INCONSISTENCY,
                      "VERSION_CONFLICT": VERSION_CONFLICT,
                      "SERIALIZATION_ERROR": SERIALIZATION_ERROR, "ORPHANED_ENTRY": ORPHANED}


class BadReport(ValueError):
    """A cache report that cannot be acted on (no key, a value that is not JSON)."""


def branch_of(kind: str, classification_type: str, corruption_type: str | None) -> str:
    """The source's switch on classification.type; the detail's corruption type decides
    when the error type was not one the classification rules know."""
    if kind == "VERSION_CONFLICT":
        return VERSION_CONFLICT
    if classification_type in (DATA_INCONSISTENCY, VERSION_CONFLICT, SERIALIZATION_ERROR):
        return classification_type
    return _CORRUPTION_BRANCH.get(corruption_type or "", GENERIC)


def parse_json(text: str | None, what: str) -> Any:
    try:
        return orjson.loads(text) if text is not None else None
    except orjson.JSONDecodeError as exc:
        raise BadReport(f"{what} is not JSON: {exc}") from None


@dataclass(frozen=True)
class Authoritative:
    value: Any
    version: int | None
    source: str  # "event" (carried by the report) or "state_topic"


def authoritative_of(detail: dict[str, Any], state_entry: dict[str, Any] | None
                     ) -> Authoritative | None:
    """The database's value: the one the report carries wins (it was read when the
    corruption was detected), else the state topic's latest."""
    carried = detail.get("authoritative_value_json")
    if carried is not None:
        return Authoritative(parse_json(carried, "authoritative_value_json"), None, "event")
    if state_entry is not None and "value" in state_entry:
        return Authoritative(state_entry["value"], state_entry.get("version"), "state_topic")
    return None


def refresh_commands(key: str, auth: Authoritative, *, event_id: str, incident_id: str,
                     now_ms: int, ttl_ms: int, corruption: str, reply_topic: str
                     ) -> tuple[cc.CacheCommand, cc.CacheCommand]:
    """Invalidate, then set to the authoritative value and answer on the watches topic."""
    invalidate = cc.CacheCommand(f"{event_id}:invalidate", cc.INVALIDATE, key, now_ms,
                                 incident_id, reason="corruption_recovery")
    refresh = cc.CacheCommand(
        f"{event_id}:refresh", cc.SET, key, now_ms, incident_id, value=auth.value,
        version=auth.version, ttl_ms=ttl_ms,
        metadata={"refreshReason": "corruption_recovery", "refreshTime": now_ms,
                  "originalCorruption": corruption},
        checksum=checksum(auth.value), reply_topic=reply_topic,
        watch_id=verify_watch_id(event_id), reason="corruption_recovery")
    return invalidate, refresh


def verify_watch_id(event_id: str) -> str:
    return f"{event_id}:verify"


def verified(expected_checksum: str, result: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether the cache's answer shows it holds the authoritative value."""
    if result is None:
        return False, "no answer from the cache before the verification timed out"
    if result.get("ok") and result.get("checksum") == expected_checksum:
        return True, "the cache holds the authoritative value"
    return False, f"the cache holds {result.get('checksum')!r}, not the authoritative value"


def disable_command(key: str, *, event_id: str, incident_id: str, now_ms: int,
                    duration_ms: int) -> cc.CacheCommand:
    return cc.CacheCommand(f"{event_id}:disable", cc.DISABLE, key, now_ms, incident_id,
                           until_ms=now_ms + duration_ms, reason="persistent_corruption",
                           fallback_to_database=True)


def versions_of(kind: str, detail: dict[str, Any]) -> list[Version]:
    """The database's and the cache's versions, database first (it wins a tie)."""
    if kind == "VERSION_CONFLICT":
        return [
            Version("database", parse_json(detail.get("database_value_json"),
                                           "database_value_json"),
                    int(detail["database_version"]), _ms(detail.get("database_updated_at"))),
            Version("cache", parse_json(detail.get("cache_value_json"), "cache_value_json"),
                    int(detail["cache_version"]), _ms(detail.get("cache_updated_at")))]
    return [Version("database", parse_json(detail.get("authoritative_value_json"),
                                           "authoritative_value_json")),
            Version("cache", parse_json(detail.get("cache_value_json"), "cache_value_json"))]


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


@dataclass(frozen=True)
class Effects:
    set_cache: bool
    update_database: bool
    escalate: bool


def effects_of(resolution: Resolution) -> Effects:
    """The source's `switch (resolution.action)`."""
    if resolution.manual:
        return Effects(False, False, True)
    if resolution.action == "merge_versions":
        return Effects(True, True, False)
    if resolution.chosen == "cache":
        return Effects(False, True, False)  # use_cache_version: database.update
    return Effects(True, False, False)  # use_database_version: cache.set


def audit_record(key: str, resolution: Resolution, versions: list[Version], *,
                 incident_id: str, event_id: str, now_ms: int) -> dict[str, Any]:
    return {"audit_id": f"{event_id}:audit", "type": AUDIT_TYPE, "cacheKey": key,
            "resolution": resolution.action, "strategy": resolution.strategy,
            "timestamp": now_ms, "incidentId": incident_id,
            "resolved": {"value": resolution.value, "version": resolution.version,
                         "chosen": resolution.chosen, "reason": resolution.reason},
            "conflictData": {v.source: {"value": v.value, "version": v.version,
                                        "updatedAt": v.updated_at_ms} for v in versions}}


def state_record(value: Any, version: int | None, now_ms: int, source: str) -> bytes:
    return orjson.dumps({"value": value, "version": version, "updated_at": now_ms,
                         "source": source})


class CacheConflictStrategy(BaseStrategy):
    name = "cache_conflicts"
    kinds = KINDS

    def __init__(self, app: Any, pipeline: Any, policy: CachePolicy):
        self.pipeline = pipeline
        self.policy = policy
        settings = pipeline.settings
        self.state_topic = settings.topic(STATE_TOPIC)
        self.audit_topic = settings.topic(AUDIT_TOPIC)
        self.cache_topic = settings.topic(cc.TOPIC)
        self.watches = w.ensure(app, pipeline)
        self.watches.register(VERIFY_WATCH, self.on_verified, self.on_unverified)
        self.state = app.GlobalTable("authoritative-state", default=None, schema=faust.Schema(
            key_type=str, key_serializer="raw", value_serializer="json"))
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                               "key_serializer": "raw", "value_serializer": "raw"}

        @app.agent(app.topic(self.state_topic, allow_empty=True, **raw), name="authoritative-state")
        async def state_agent(stream: Any) -> None:
            async for event in stream.events():
                self.on_state(event.message.key, event.message.value)

    def on_state(self, key: bytes | None, value: bytes | None) -> None:
        """The latest authoritative value per key ({"value", "version", "updated_at"})."""
        if not key:
            return
        name = key.decode(errors="replace")
        if value is None:
            self.state.pop(name, None)
            return
        try:
            entry = orjson.loads(value)
            if not isinstance(entry, dict) or "value" not in entry:
                raise ValueError("expected an object with a value")
        except (orjson.JSONDecodeError, ValueError) as exc:
            log.warning("ignoring state record for %s: %s", name, exc)
            return
        self.state[name] = entry

    def takes_over(self, event: dict[str, Any]) -> bool:
        return event["kind"] in KINDS

    async def handle(self, ctx: StrategyContext) -> None:
        event = ctx.event
        detail = detail_of(event, "VersionConflict") or detail_of(event, "CacheCorrupted") or {}
        key = detail.get("key") or detail.get("cache_key")
        branch = branch_of(event["kind"], ctx.classification.type, detail.get("corruption_type"))
        try:
            if not key:
                raise BadReport("the report names no cache key")
            if branch == VERSION_CONFLICT:
                await self.version_conflict(ctx, key, detail)
            elif branch == ORPHANED:
                await self.orphaned(ctx, key, detail)
            elif branch in (DATA_INCONSISTENCY, SERIALIZATION_ERROR):
                auth = authoritative_of(detail, self.state.get(key))
                if auth is None and branch == DATA_INCONSISTENCY:
                    await self.orphaned(ctx, key, detail)
                elif auth is None:
                    await self.invalidate_only(ctx, key, branch)
                else:
                    await self.refresh(ctx, key, auth, branch)
            else:
                await self.invalidate_only(ctx, key, branch)
        except (BadReport, KeyError, TypeError, ValueError) as exc:
            await self.finish(ctx, "escalated", "bad report", lifecycle.ESCALATED,
                              {"reason": f"cannot act on the cache report: {exc}",
                               "recommendedAction": "fix the reporting service's cache report"})

    # ---- data inconsistency ----------------------------------------------------------------

    async def refresh(self, ctx: StrategyContext, key: str, auth: Authoritative,
                      corruption: str) -> None:
        event_id, incident_id = ctx.event["event_id"], ctx.incident.incident_id
        now = lifecycle.now_ms()
        invalidate, refresh = refresh_commands(
            key, auth, event_id=event_id, incident_id=incident_id, now_ms=now,
            ttl_ms=self.policy.refresh_ttl_ms, corruption=corruption,
            reply_topic=self.watches.topic_name)
        self.note(ctx, "verifying", "cache refreshed; waiting for its verification")
        timeout = self.pipeline.settings.cache_verify_timeout_ms
        await self.emit(ctx, CACHE_REFRESH_REQUESTED, "refresh",
                        {"cacheKey": key, "authoritativeSource": auth.source,
                         "version": auth.version, "checksum": refresh.checksum,
                         "ttlMs": refresh.ttl_ms, "metadata": refresh.metadata,
                         "verifyTimeoutMs": timeout})
        await self.watches.start(w.Watch(
            refresh.watch_id or "", VERIFY_WATCH, incident_id, now, now + timeout,
            {"cacheKey": key, "checksum": refresh.checksum, "eventId": event_id,
             "classification": ctx.classification.as_record(), "corruption": corruption}))
        await self.command(invalidate)
        await self.command(refresh)

    async def on_verified(self, watch: w.Watch, result: dict[str, Any]) -> None:
        await self.verification_done(watch, result)

    async def on_unverified(self, watch: w.Watch) -> None:
        await self.verification_done(watch, None)

    async def verification_done(self, watch: w.Watch, result: dict[str, Any] | None) -> None:
        data = watch.data
        key, event_id = data["cacheKey"], data["eventId"]
        valid, why = verified(data["checksum"], result)
        now = lifecycle.now_ms()
        disabled_until = None
        if not valid:
            disable = disable_command(key, event_id=event_id, incident_id=watch.incident_id,
                                      now_ms=now,
                                      duration_ms=self.pipeline.settings.cache_disable_ms)
            disabled_until = disable.until_ms
            await self.command(disable)
        common = {"failure_event_id": event_id, "classification": data.get("classification")}
        await self.pipeline.emit(
            CACHE_RECOVERY_COMPLETED, watch.incident_id,
            step_id=lifecycle.step_id(event_id, "cache-recovery"),
            payload={"cacheKey": key, "recoveryMethod": "database_refresh", "success": valid,
                     "cachingDisabled": not valid, "disabledUntil": disabled_until,
                     "fallbackToDatabase": not valid, "verification": why}, **common)
        if valid:
            # The incident completes the generic way (recovery/recovery_completed).
            await self.pipeline.send(OutRecord(self.pipeline.topics.commands,
                                               watch.incident_id.encode(), b"",
                                               [(h.COMMAND, b"ack")]))
        else:
            await self.pipeline.emit(
                lifecycle.ESCALATED, watch.incident_id,
                step_id=lifecycle.step_id(event_id, "escalated"),
                outcome="escalated",
                payload={"reason": "persistent_corruption", "cacheKey": key,
                         "cachingDisabledUntil": disabled_until,
                         "recommendedAction": "find why the cache cannot hold the "
                                              "authoritative value; reads use the database "
                                              "meanwhile"}, **common)

    async def orphaned(self, ctx: StrategyContext, key: str, detail: dict[str, Any]) -> None:
        await self.emit(ctx, ORPHANED_CACHE_ENTRY, "orphaned",
                        {"cacheKey": key, "affectedEntries": list(detail.get("affected_entries")
                                                                  or []),
                         "cacheValue": parse_json(detail.get("cache_value_json"),
                                                  "cache_value_json")})
        await self.finish(ctx, "escalated", "orphaned cache entry", lifecycle.ESCALATED,
                          {"reason": "orphaned_cache_entry", "cacheKey": key,
                           "recommendedAction": "delete the cache entry or restore its "
                                                "database record"})

    async def invalidate_only(self, ctx: StrategyContext, key: str, corruption: str) -> None:
        event_id = ctx.event["event_id"]
        await self.command(cc.CacheCommand(f"{event_id}:invalidate", cc.INVALIDATE, key,
                                           lifecycle.now_ms(), ctx.incident.incident_id,
                                           reason=f"{corruption}_recovery"))
        await self.emit(ctx, CACHE_RECOVERY_COMPLETED, "cache-recovery",
                        {"cacheKey": key, "recoveryMethod": "invalidate", "success": True,
                         "cachingDisabled": False, "originalCorruption": corruption})
        await self.finish(ctx, "completed", "cache entry invalidated",
                          lifecycle.RECOVERY_COMPLETED, {"action": "invalidated"})

    # ---- version conflict ------------------------------------------------------------------

    async def version_conflict(self, ctx: StrategyContext, key: str,
                               detail: dict[str, Any]) -> None:
        event_id, incident_id = ctx.event["event_id"], ctx.incident.incident_id
        versions = versions_of(ctx.event["kind"], detail)
        resolution = resolve(versions, self.policy.strategy_for(key))
        effects = effects_of(resolution)
        now = lifecycle.now_ms()
        if effects.set_cache:
            await self.command(cc.CacheCommand(
                f"{event_id}:resolved", cc.SET, key, now, incident_id, value=resolution.value,
                version=resolution.version, checksum=checksum(resolution.value),
                reason=resolution.action))
        if effects.update_database:
            await self.pipeline.send(OutRecord(
                self.state_topic, key.encode(),
                state_record(resolution.value, resolution.version, now, resolution.action), []))
        await self.pipeline.send(OutRecord(
            self.audit_topic, key.encode(),
            orjson.dumps(audit_record(key, resolution, versions, incident_id=incident_id,
                                      event_id=event_id, now_ms=now)), []))
        await self.emit(ctx, VERSION_CONFLICT_RESOLVED, "resolved",
                        {"cacheKey": key, **{k: v for k, v in resolution.as_record().items()
                                             if k != "action"},
                         "resolution": resolution.action})
        if effects.escalate:
            await self.finish(ctx, "escalated", "manual resolution required",
                              lifecycle.ESCALATED,
                              {"reason": "manual_resolution_required", "cacheKey": key,
                               "recommendedAction": "choose the right version; the conflict "
                                                    "is in the audit topic"})
        else:
            await self.finish(ctx, "completed", f"version conflict: {resolution.action}",
                              lifecycle.RECOVERY_COMPLETED, {"resolution": resolution.action})

    # ---- plumbing --------------------------------------------------------------------------

    def note(self, ctx: StrategyContext, state: str, what: str) -> None:
        noted = note_report(ctx.incident, ctx.event, ctx.classification, lifecycle.now_ms(),
                            state=state, what=what)
        if noted is not ctx.incident:
            ctx.incidents[ctx.incident.incident_id] = noted.to_json()

    async def finish(self, ctx: StrategyContext, state: str, what: str, event_type: str,
                     payload: dict[str, Any]) -> None:
        self.note(ctx, state, what)
        outcome = "completed" if event_type == lifecycle.RECOVERY_COMPLETED else "escalated"
        await self.emit(ctx, event_type, outcome, payload, outcome=outcome)

    async def emit(self, ctx: StrategyContext, event_type: str, step: str,
                   payload: dict[str, Any], outcome: str | None = None) -> None:
        event_id = ctx.event["event_id"]
        await self.pipeline.emit(event_type, ctx.incident.incident_id,
                                 step_id=lifecycle.step_id(event_id, step),
                                 failure_event_id=event_id,
                                 classification=ctx.classification.as_record(),
                                 outcome=outcome, payload=payload)

    async def command(self, command: cc.CacheCommand) -> None:
        await self.pipeline.send(OutRecord(self.cache_topic, command.key.encode(),
                                           command.encode(), []))


def install(app: Any, pipeline: Any) -> CacheConflictStrategy:
    policy = pipeline.state_policies.cache
    return CacheConflictStrategy(app, pipeline, policy)
