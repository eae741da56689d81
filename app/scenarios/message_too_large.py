"""Scenario 3, message_too_large (communication-failures.md, handleMessageTooLarge): a record
its topic refused as too large is re-published through the oversize strategies, in the
source's order: compression, fragmentation, external storage (claim check).

Takes over EVENT_DELIVERY_FAILED reports whose detail cause is MESSAGE_TOO_LARGE. The
failed record travels with the report (compressed or as a claim-check reference when it is
too large for the failure-event topic itself: app/client/large_messages.py). Lifecycle
events after `recovery/failure_received` and `communication/event_delivery_failed`:

- `recovery/redelivered` (payload: strategy, target topic, records) then
  `recovery/recovery_completed`;
- `recovery/escalated` with the source's MessageTooLargeError fields (messageSize,
  sizeLimit, strategiesAttempted) when no strategy applies;
- `recovery/poisoned` when the attached record cannot be read (a forged reference, corrupt
  compressed bytes): it is quarantined, never followed.

A report seen again (redelivered after a crash) re-publishes the same records: the message
id, the fragment-set id and the claim-check key are derived from the report, and the step
ids are fixed, so readers that dedupe (the reassembling consumers do) see it once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.client.large_messages import TopicLimits
from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.clock import now_ms
from app.contracts.records import OutRecord
from app.oversize import headers as oh
from app.oversize import policy as op
from app.oversize.configured import limits_from_settings, policy_for, store_from_settings
from app.oversize.encoder import Encoded, MessageTooLarge, encode
from app.oversize.reassembly import Reassembler
from app.oversize.records import Incoming
from app.pipeline import outcomes as routing
from app.pipeline.decide import Incident
from app.pipeline.strategy import BaseStrategy, StrategyContext

log = logging.getLogger(__name__)
KIND = "EVENT_DELIVERY_FAILED"
CAUSE = "MESSAGE_TOO_LARGE"
MESSAGE_TOO_LARGE_ERROR = "MessageTooLargeError"


def detail_of(event: dict[str, Any]) -> dict[str, Any]:
    detail = event.get("detail")
    if isinstance(detail, tuple) and len(detail) == 2 and isinstance(detail[1], dict):
        return detail[1]
    return detail if isinstance(detail, dict) else {}


def is_message_too_large(event: dict[str, Any]) -> bool:
    return event.get("kind") == KIND and detail_of(event).get("cause") == CAUSE


def size_limit(reported: int | None, topic_limit: int | None, producer_limit: int,
               policy: op.TopicPolicy) -> int:
    """The limit the re-published records must fit: the smallest of what the report says,
    the topic's own (or configured) limit and what the worker's producer sends."""
    known = [x for x in (reported, policy.max_message_bytes or topic_limit) if x]
    return min([*known, producer_limit])


class MessageTooLargeStrategy(BaseStrategy):
    name = "message_too_large"
    kinds = frozenset({KIND})

    def __init__(self, app: Any, pipeline: Any):
        self.app = app
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self._store: Any = None
        self._limits: TopicLimits | None = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = store_from_settings(self.settings)
        return self._store

    def takes_over(self, event: dict[str, Any]) -> bool:
        return is_message_too_large(event)

    def producer_limit(self) -> int:
        conf = getattr(self.app, "conf", None)
        return int(getattr(conf, "producer_max_request_size", 1_000_000) or 1_000_000)

    def topic_limit(self, topic: str) -> int | None:
        if self._limits is None:
            self._limits = TopicLimits(self.settings)
        return self._limits.of(topic)

    async def handle(self, ctx: StrategyContext) -> None:
        event, pipeline = ctx.event, ctx.services
        event_id = event["event_id"]
        incident = ctx.incident
        detail = detail_of(event)
        common = {"failure_event_id": event_id, "classification": ctx.classification.as_record(),
                  "attempt": incident.attempts}
        original = routing.original_of(event, ctx.record)
        failed = event.get("failed_record")
        target = detail.get("target_topic") or (failed or {}).get("topic")
        facts = {"messageSize": detail.get("message_size"), "sizeLimit": detail.get("size_limit"),
                 "targetTopic": target}
        if not failed or failed.get("value") is None or not target:
            await self._escalate(ctx, common, facts, [], "the report carries no failed record "
                                 "or target topic to re-publish")
            return
        loop = asyncio.get_running_loop()
        # The attached record may itself be compressed or a claim check: read it back.
        unpacked = await loop.run_in_executor(None, self._unpack, original)
        if isinstance(unpacked, str):
            await self._poison(ctx, original, common, unpacked)
            return
        message_id = event.get("work_item_id") or event_id
        policy = policy_for(self.settings, target)
        topic_limit = await loop.run_in_executor(None, self.topic_limit, target)
        limit = size_limit(detail.get("size_limit"), topic_limit, self.producer_limit(), policy)
        payload = unpacked.value or b""
        try:
            encoded: Encoded = await loop.run_in_executor(
                None, lambda: encode(target, unpacked.key, payload, unpacked.headers,
                                     limit=limit, policy=policy, message_id=message_id,
                                     store=self.store))
        except MessageTooLarge as exc:
            await self._escalate(ctx, common, {**facts, "messageSize": exc.size,
                                               "sizeLimit": exc.limit},
                                 exc.strategies_attempted, str(exc))
            return
        for record in encoded.records:
            value = record.value
            await pipeline.send(OutRecord(
                record.topic, record.key,
                bytes(value) if isinstance(value, memoryview | bytearray) else value,
                record.headers))
        done = {**facts, "messageSize": len(payload), "sizeLimit": limit,
                "strategy": encoded.strategy or "none", "records": len(encoded.records),
                "codec": encoded.codec, "originalEventId": message_id,
                "strategiesAttempted": [a.strategy for a in encoded.attempts],
                "attempts": [str(a) for a in encoded.attempts]}
        await pipeline.emit(lifecycle.REDELIVERED, incident.incident_id,
                            step_id=lifecycle.step_id(event_id, "oversize-redelivered"),
                            payload={"target": target, **done}, **common)
        self._record(ctx, "completed", f"re-published by {encoded.strategy or 'none'}")
        await pipeline.emit(lifecycle.RECOVERY_COMPLETED, incident.incident_id,
                            step_id=lifecycle.step_id(event_id, "completed"), outcome="completed",
                            payload=done, **common)

    def _unpack(self, original: routing.Original) -> Any:
        record = Incoming(original.topic, original.partition, original.offset,
                          original.timestamp_ms, original.key, original.value,
                          original.headers)
        if oh.strategy_of(record.headers) == oh.FRAGMENTATION:
            return "a single fragment was attached; the whole message cannot be re-published"
        reader = Reassembler(limits_from_settings(self.settings), self.store)
        outcome = reader.process(record)
        if outcome.rejected:
            return outcome.rejected[0].reason
        return outcome.delivered[0]

    async def _escalate(self, ctx: StrategyContext, common: dict[str, Any],
                        facts: dict[str, Any], attempted: list[str], reason: str) -> None:
        self._record(ctx, "escalated", reason)
        await ctx.services.emit(
            lifecycle.ESCALATED, ctx.incident.incident_id,
            step_id=lifecycle.step_id(ctx.event.event_id, "escalated"), outcome="escalated",
            payload={"reason": reason, "error": MESSAGE_TOO_LARGE_ERROR,
                     "strategiesAttempted": attempted, **facts,
                     "recommendedAction": "raise the topic's max.message.bytes, enable a "
                                          "strategy or configure an object store"},
            **common)

    async def _poison(self, ctx: StrategyContext, original: routing.Original,
                      common: dict[str, Any], reason: str) -> None:
        self._record(ctx, "poisoned", reason)
        headers = routing.context(ctx.event, original, ctx.incident, ctx.classification)
        await ctx.services.send(routing.moved(ctx.services.topics.poison, original,
                                              {**headers, h.REASON: reason}))
        await ctx.services.emit(lifecycle.POISONED, ctx.incident.incident_id,
                                step_id=lifecycle.step_id(ctx.event.event_id, "poisoned"),
                                outcome="poisoned",
                                payload={"reason": reason}, **common)

    def _record(self, ctx: StrategyContext, state: str, what: str) -> None:
        """The incident's outcome, kept in the incidents table like the generic path's."""
        if ctx.incidents is None:
            return
        before: Incident = ctx.incident
        event_id = ctx.event["event_id"]
        seen = before.seen if event_id in before.seen else (*before.seen, event_id)[-50:]
        after = before.step(now_ms(), what, state=state, seen=seen,
                            reports=before.reports + (event_id not in before.seen),
                            classification=ctx.classification.as_record())
        ctx.incidents[before.incident_id] = after.to_json()


def install(app: Any, pipeline: Any) -> MessageTooLargeStrategy:
    return MessageTooLargeStrategy(app, pipeline)
