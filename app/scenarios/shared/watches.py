"""Deadline watches for the scenarios: something the service waits for, with a time limit.
A cache refresh waits for the cache's verification reply (Scenario 5); a network partition
waits for its HEALED report, and escalates after 30 minutes (Scenario 6).

A watch lives in a table keyed by its id, written only by one agent over the single-
partition topic `recovery.watches`, whose records are JSON:

    {"op": "start", "watch": {...}}            the scenario starts a watch
    {"op": "resolve", "watch_id": ..., "result": {...}}   what was waited for happened
    {"op": "check", "watch_id": ...}           a timer's nudge once the deadline has passed

Clients answer requests by producing a `resolve` record there (the request names the topic
and the watch id). A timer sends `check` for every watch past its deadline (table writes need
a stream event). Whichever comes first ends the watch; the other finds nothing and is
ignored, so a late answer after expiry changes nothing. The decisions are pure (`step`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.contracts.watches import TOPIC, Watch, resolve_record, start_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    watch: Watch


@dataclass(frozen=True)
class Resolved:
    watch: Watch
    result: dict[str, Any]


@dataclass(frozen=True)
class Expired:
    watch: Watch


@dataclass(frozen=True)
class Ignored:
    reason: str


Step = Started | Resolved | Expired | Ignored


def step(current: dict[str, Any] | None, message: dict[str, Any], now_ms: int) -> Step:
    """What one record on the watches topic does to the watch it names."""
    op = message.get("op")
    if op == "start":
        if current is not None:
            return Ignored("already watching (a repeated start)")
        return Started(Watch.from_json(message["watch"]))
    if current is None:
        return Ignored(f"{op}: no such watch (ended before)")
    watch = Watch.from_json(current)
    if op == "resolve":
        return Resolved(watch, dict(message.get("result") or {}))
    if op == "check":
        if now_ms >= watch.deadline_ms:
            return Expired(watch)
        return Ignored("not due yet")
    return Ignored(f"unknown op {op!r}")


def overdue(watches: list[dict[str, Any]], now_ms: int) -> list[str]:
    return sorted(w["watch_id"] for w in watches if now_ms >= int(w["deadline_ms"]))


OnResolved = Callable[[Watch, dict[str, Any]], Awaitable[None]]
OnExpired = Callable[[Watch], Awaitable[None]]


class Watches:
    """The watches agent, table and timer; one per app, shared by the scenarios."""

    def __init__(self, app: Any, pipeline: Any):
        import faust

        self.app = app
        self.pipeline = pipeline
        self.topic_name = pipeline.settings.topic(TOPIC)
        self.handlers: dict[str, tuple[OnResolved, OnExpired]] = {}
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                               "key_serializer": "raw", "value_serializer": "raw"}
        self.topic = app.topic(self.topic_name, allow_empty=True, **raw)
        self.table = app.Table("scenario-watches", default=None, partitions=1,
                               schema=faust.Schema(key_type=str, key_serializer="raw",
                                                   value_serializer="json"))

        @app.agent(self.topic, name="scenario-watches")
        async def watch_agent(stream: Any) -> None:
            async for event in stream.events():
                await self.on_record(event.message.key, event.message.value)

        interval = pipeline.settings.scenario_watch_interval_ms / 1000

        @app.timer(interval)
        async def watch_timer() -> None:
            # Every worker nudges the watches it holds; a nudge for a watch that has ended
            # (or that another worker nudged first) is ignored.
            for watch_id in overdue([w for w in list(self.table.values()) if w], now()):
                await self.topic.send(key=watch_id.encode(),
                                      value=orjson.dumps({"op": "check", "watch_id": watch_id}))

    def register(self, kind: str, on_resolved: OnResolved, on_expired: OnExpired) -> None:
        self.handlers[kind] = (on_resolved, on_expired)

    async def start(self, watch: Watch) -> None:
        await self.pipeline.send(_out(self.topic_name, watch.watch_id, start_record(watch)))

    async def resolve(self, watch_id: str, result: dict[str, Any]) -> None:
        await self.pipeline.send(_out(self.topic_name, watch_id, resolve_record(watch_id,
                                                                               result)))

    def active(self, kind: str) -> list[Watch]:
        return [Watch.from_json(w) for w in list(self.table.values())
                if w and w.get("kind") == kind]

    async def on_record(self, key: bytes | None, value: bytes | None) -> None:
        try:
            message = orjson.loads(value or b"")
            watch_id = str(message.get("watch_id") or message["watch"]["watch_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            log.warning("ignoring malformed watch record %r", value[:200] if value else value)
            return
        try:
            outcome = step(self.table.get(watch_id), message, now())
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring watch record for %s: %s", watch_id, exc)
            return
        match outcome:
            case Started(watch=watch):
                self.table[watch_id] = watch.to_json()
            case Resolved(watch=watch, result=result):
                del self.table[watch_id]
                await self._call(watch, lambda on: on[0](watch, result))
            case Expired(watch=watch):
                del self.table[watch_id]
                await self._call(watch, lambda on: on[1](watch))
            case Ignored(reason=reason):
                log.debug("watch %s: %s", watch_id, reason)

    async def _call(self, watch: Watch,
                    call: Callable[[tuple[OnResolved, OnExpired]], Awaitable[None]]) -> None:
        handlers = self.handlers.get(watch.kind)
        if handlers is None:
            log.error("watch %s of kind %s has no handler (scenario not installed)",
                      watch.watch_id, watch.kind)
            return
        try:
            await call(handlers)
        except Exception:  # a handler's bug must not stop the watches of every scenario
            log.exception("watch %s (%s): handler failed", watch.watch_id, watch.kind)


def _out(topic: str, key: str, value: bytes) -> Any:
    from app.contracts.records import OutRecord

    return OutRecord(topic, key.encode(), value, [])


def now() -> int:
    return int(time.time() * 1000)


def ensure(app: Any, pipeline: Any) -> Watches:
    """The app's one Watches, created by the first scenario that needs it."""
    existing = getattr(app, "scenario_watches", None)
    if existing is None:
        existing = Watches(app, pipeline)
        app.scenario_watches = existing
    return existing
