"""Outcomes: what a decision sends. The records the service moves (retries, redeliveries,
dead letters, poison) keep the failed record's key, value and headers byte for byte and
append context; each is followed by its lifecycle step."""

from __future__ import annotations

from dataclasses import dataclass

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.clock import to_ms
from app.contracts.failure_event import FailureEvent
from app.contracts.lifecycle import step_id
from app.contracts.records import OutRecord, RawRecord
from app.contracts.topics import redelivery_topic
from app.pipeline import decide as d
from app.pipeline.classify import Classification
from app.pipeline.decide import Incident
from app.pipeline.retry.tiers import tier_for
from app.pipeline.services import Services
from app.pipeline.strategy import StrategyContext

MAX_MESSAGE_CHARS = 4_096
MAX_STACK_CHARS = 16_384


@dataclass(frozen=True)
class Original:
    """The record whose handling failed, and where it came from."""

    key: bytes | None
    value: bytes | None
    headers: h.Headers
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def original_of(event: FailureEvent, intake_record: RawRecord) -> Original:
    """The failed record carried by the report, or, when it carries none, the report
    itself, so that what is dead-lettered or poisoned is never nothing."""
    failed = event.failed_record
    if failed:
        timestamp = failed.get("timestamp")
        if timestamp is not None:
            timestamp = to_ms(timestamp)
        return Original(
            key=failed.get("key"), value=failed.get("value"),
            headers=[(x["key"], x.get("value")) for x in failed.get("headers", [])],
            topic=failed["topic"], partition=failed.get("partition", -1),
            offset=failed.get("offset", -1), timestamp_ms=timestamp,
        )
    return Original(intake_record.key, intake_record.value, intake_record.headers,
                    intake_record.topic, intake_record.partition, intake_record.offset,
                    intake_record.timestamp_ms)


def dispatch_target_of(event: FailureEvent) -> str | None:
    if event.dispatch_target:
        return event.dispatch_target
    group = event.consumer_group
    return redelivery_topic(group) if group else None


def context(
    event: FailureEvent, original: Original, incident: Incident,
    classification: Classification, **extra: object | None,
) -> dict[str, object | None]:
    stack = event.stack_trace
    values: dict[str, object | None] = {
        h.ORIGINAL_TOPIC: original.topic,
        h.ORIGINAL_PARTITION: original.partition,
        h.ORIGINAL_OFFSET: original.offset,
        h.ORIGINAL_TIMESTAMP: original.timestamp_ms,
        h.CONSUMER_GROUP: event.consumer_group,
        h.ERROR_TYPE: event.error.get("type"),
        h.ERROR_MESSAGE: event.message[:MAX_MESSAGE_CHARS],
        h.ERROR_STACKTRACE: stack[:MAX_STACK_CHARS] if stack else None,
        h.CLASSIFICATION: classification.header(),
        h.ATTEMPT: incident.attempts,
        h.FIRST_FAILURE: incident.first_failure_ms,
        h.LAST_FAILURE: incident.last_failure_ms,
        h.INCIDENT_ID: incident.incident_id,
        h.FAILURE_EVENT_ID: event.event_id,
    }
    values.update(extra)
    return values


def moved(topic: str, original: Original, ctx: dict[str, object | None]) -> OutRecord:
    return OutRecord(topic, original.key, original.value, h.with_context(original.headers, ctx))


def forwarded(topic: str, key: bytes | None, value: bytes | None, headers: h.Headers,
              **changes: object | None) -> OutRecord:
    """The same record on another hop, with some context headers changed."""
    return OutRecord(topic, key, value, h.with_context(headers, changes))


def redelivery(target: str, key: bytes | None, value: bytes | None,
               headers: h.Headers, **changes: object | None) -> OutRecord:
    """To the consumer: routing-only headers go; incident, attempt, origin and the due time
    stay, so the consumer wrapper can acknowledge the right incident and anyone can see how
    late the retry came."""
    kept = h.without(headers, (h.HELD, h.COMMAND, h.ORIGINAL_KEY, h.DISPATCH_TARGET))
    return OutRecord(target, key, value, h.with_context(kept, changes))


# The dead-letter event's hint of when the DLQ is tried again (Scenario 3's 30 s).
DEAD_LETTER_RETRY_MS = 30_000


def recommended_action(classification: Classification) -> str:
    if classification.category == "security":
        return "check the credentials of the failing connection; retrying cannot help"
    if classification.category == "configuration":
        return "fix the configuration named in the error, then replay the dead letters"
    return "inspect the incident history and the dead-letter topic; replay when fixed"


class Outcomes:
    """Sends the records and the lifecycle step a generic decision calls for."""

    def __init__(self, services: Services):
        self.services = services

    async def apply(self, ctx: StrategyContext, *, handled: bool) -> None:
        """`ctx` is the StrategyContext of the decision; `handled` says a strategy did the
        terminal step of an Escalate/AlternativeRoute itself."""
        services, topics = self.services, self.services.topics
        event, incident, classification = ctx.event, ctx.incident, ctx.classification
        incident_id, event_id = incident.incident_id, event.event_id
        common = {"failure_event_id": event_id, "classification": classification.as_record(),
                  "attempt": incident.attempts}
        original = original_of(event, ctx.record)
        headers = context(event, original, incident, classification)
        match ctx.decision:
            case d.Retry(retry_number=n, delay_ms=delay):
                due = services.clock.now_ms() + delay
                tier = tier_for(delay, list(topics.tiers))
                await services.send(moved(topics.tiers[tier], original, {
                    **headers, h.RETRY_DUE: due, h.DISPATCH_TARGET: incident.dispatch_target}))
                await services.emit(lifecycle.RETRY_SCHEDULED, incident_id,
                                    step_id=step_id(event_id, f"retry-{n}"),
                                    payload={"retry": n, "delayMs": delay, "dueAt": due,
                                             "target": incident.dispatch_target}, **common)
            case d.Poison(reason=reason):
                await services.send(moved(topics.poison, original, {**headers, h.REASON: reason}))
                await services.emit(lifecycle.POISONED, incident_id,
                                    step_id=step_id(event_id, "poisoned"), outcome="poisoned",
                                    payload={"reason": reason}, **common)
            case d.DeadLetter(reason=reason):
                await services.send(moved(topics.dlq, original, {**headers, h.REASON: reason}))
                await services.emit(lifecycle.DEAD_LETTERED, incident_id,
                                    step_id=step_id(event_id, "dead-lettered"),
                                    outcome="dead_lettered",
                                    payload={"reason": reason,
                                             "nextRetryMs": DEAD_LETTER_RETRY_MS}, **common)
            case d.Escalate(reason=reason) | d.AlternativeRoute(reason=reason) if not handled:
                await services.emit(lifecycle.ESCALATED, incident_id,
                                    step_id=step_id(event_id, "escalated"), outcome="escalated",
                                    payload={"reason": reason, "recommendedAction":
                                             recommended_action(classification)}, **common)
