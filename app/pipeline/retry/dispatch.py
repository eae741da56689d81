"""The retry tiers' stage: wait until a parked record is due, then park it again (not due
yet), hold it (its consumer is down) or dispatch it to its target (the consumer's
redelivery topic, a tool server's request topic)."""

from __future__ import annotations

import logging

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.lifecycle import step_id
from app.contracts.records import RawRecord
from app.pipeline.outcomes import forwarded, redelivery
from app.pipeline.retry import tiers
from app.pipeline.services import Services

log = logging.getLogger(__name__)


class RetryStage:
    def __init__(self, services: Services):
        self.services = services

    def wake_of(self, tier_ms: int, record: RawRecord) -> int:
        """When the tier looks at this record again (tiers.wake_at)."""
        due = h.header_int(record.headers, h.RETRY_DUE) or 0
        enqueued = record.timestamp_ms or self.services.clock.now_ms()
        return tiers.wake_at(enqueued, tier_ms, due)

    def batch_order(self, tier_ms: int, records: list[RawRecord]) -> list[int]:
        """A batch of this tier's records in the order they come due (tiers.wake_order)."""
        return tiers.wake_order([((r.topic, r.partition), self.wake_of(tier_ms, r))
                                 for r in records])

    async def on_retry(self, tier_ms: int, record: RawRecord) -> None:
        services, clock, names = self.services, self.services.clock, self.services.topics
        due = h.header_int(record.headers, h.RETRY_DUE) or 0
        await clock.sleep_ms(self.wake_of(tier_ms, record) - clock.now_ms())
        group = h.header_value(record.headers, h.CONSUMER_GROUP)
        now = clock.now_ms()
        step = tiers.plan(due, now, services.consumer_healthy(group, now),
                          list(names.tiers), services.settings.hold_retry_ms)
        incident_id = h.header_value(record.headers, h.INCIDENT_ID) or ""
        attempt = h.header_int(record.headers, h.ATTEMPT) or 0
        match step:
            case tiers.Park(tier_ms=tier, due_ms=due_at):
                await services.send(forwarded(names.tiers[tier], record.key, record.value,
                                              record.headers, **{h.RETRY_DUE: due_at}))
            case tiers.Hold(tier_ms=tier, due_ms=due_at):
                first_hold = h.header_value(record.headers, h.HELD) is None
                await services.send(forwarded(names.tiers[tier], record.key, record.value,
                                              record.headers,
                                              **{h.RETRY_DUE: due_at, h.HELD: "1"}))
                if first_hold:
                    await services.emit(lifecycle.RETRY_HELD, incident_id,
                                        step_id=step_id(incident_id, "held", attempt=attempt),
                                        attempt=attempt,
                                        payload={"consumerGroup": group, "nextCheckAt": due_at})
            case tiers.Dispatch():
                await self.dispatch(record, incident_id, attempt, due)

    async def dispatch(self, record: RawRecord, incident_id: str, attempt: int,
                       due: int) -> None:
        services, names = self.services, self.services.topics
        target = h.header_value(record.headers, h.DISPATCH_TARGET)
        if not target:
            log.error("retry for %s has no dispatch target; dropped to DLQ", incident_id)
            await services.send(forwarded(names.dlq, record.key, record.value, record.headers,
                                          **{h.REASON: "no dispatch target"}))
            return
        if not await services.topic_exists(target):
            reason = f"dispatch target topic {target} does not exist"
            log.error("retry for %s: %s; sent to the DLQ", incident_id, reason)
            await services.send(forwarded(names.dlq, record.key, record.value, record.headers,
                                          **{h.REASON: reason}))
            await services.emit(lifecycle.DEAD_LETTERED, incident_id,
                                step_id=step_id(incident_id, "dead-lettered", attempt=attempt),
                                attempt=attempt, outcome="dead_lettered",
                                payload={"reason": reason, "target": target})
            return
        await services.send(redelivery(target, record.key, record.value, record.headers))
        await services.emit(lifecycle.REDELIVERED, incident_id,
                            step_id=step_id(incident_id, "redelivered", attempt=attempt),
                            attempt=attempt,
                            payload={"target": target,
                                     "lateMs": services.clock.now_ms() - due})
