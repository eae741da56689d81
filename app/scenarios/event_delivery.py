"""Scenario 3: message delivery failures (the source's EventBusFailureHandler), for
consumer_unavailable and topic_not_found; message_too_large is app/scenarios/
message_too_large.py.

The generic pipeline classifies the report and emits `communication/event_delivery_failed`
(this strategy adds the source's affectedConsumers, deliveryError and originalEvent). The
source's "careful recursion prevention" holds by construction: the service never reports
its own emissions as failures. Then, by the source's `recoverFromDeliveryFailure` switch:

- consumer_unavailable (`handleConsumerUnavailable`): the event is kept for each failed
  consumer. A report carrying the event and naming consumers other than its own consumer
  group is split into one report per consumer (`recovery/split_per_consumer`, outcome
  `split`; each child incident is `<incident>/<consumer>`, its target the consumer's
  redelivery topic), so every consumer gets its own dead letter, retries and outcome. Each
  follows `[retry.consumer_unavailable]`: the next try in 30 s (the 30 s retry tier), held
  without burning an attempt while the consumer's heartbeats say it is down,
  dead-lettered when the tries run out (the dead-letter event carries nextRetryMs 30000);
  the consumer-health watch (15 s checks, app/health.py) replays the consumer's dead
  letters when it is healthy again. Alternative delivery (`tryAlternativeDelivery`): where
  `[scenario.delivery.alternative_delivery]` names a topic for the consumer, the event goes
  there too at the first decision (`communication/alternative_delivery_attempted`).
- topic_configuration (`handleTopicNotFound`, not shown in the source): not retried
  (`[retry.topic_configuration]`); the topic is created from its topics/ definition when
  RECOVERY_CREATE_MISSING_TOPICS is on (`communication/topic_created`) and the event
  delivered to it; else the event goes to the fallback topic of
  `[scenario.delivery.fallback_topics]` (`communication/event_rerouted_to_fallback_topic`);
  either way the incident completes. Else it is escalated.
- anything else (`handleGenericDeliveryFailure`, not shown): the generic retries."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.failure_event import SUBJECT as FAILURE_SUBJECT
from app.contracts.records import OutRecord
from app.kafka.topics import TopicSpec, load_topic_specs
from app.pipeline import decide as d
from app.pipeline import outcomes as routing
from app.pipeline.strategy import BaseStrategy, StrategyContext
from app.policy.routing import DeliveryPolicy
from app.scenarios.shared.incidents import classification_of, detail_of, note_report

log = logging.getLogger(__name__)

KIND = "EVENT_DELIVERY_FAILED"
DETAIL = "EventDeliveryFailed"

CONSUMER_UNAVAILABLE = "consumer_unavailable"
MESSAGE_SIZE_LIMIT = "message_size_limit"
TOPIC_CONFIGURATION = "topic_configuration"
HANDLERS = {CONSUMER_UNAVAILABLE: "handleConsumerUnavailable",
            MESSAGE_SIZE_LIMIT: "handleMessageTooLarge",
            TOPIC_CONFIGURATION: "handleTopicNotFound"}
GENERIC_HANDLER = "handleGenericDeliveryFailure"

EVENT_DELIVERY_FAILED = "communication/event_delivery_failed"
SPLIT = "recovery/split_per_consumer"
SPLIT_OUTCOME = "split"
ALTERNATIVE_DELIVERY = "communication/alternative_delivery_attempted"
TOPIC_CREATED = "communication/topic_created"
REROUTED_TO_FALLBACK = "communication/event_rerouted_to_fallback_topic"

# error.details keys of a per-consumer report (the schema's free-form map, no new field).
PARENT_INCIDENT = "recovery.parent.incident"
PARENT_EVENT = "recovery.parent.event"
ALTERNATIVE_HEADER = h.PREFIX + "delivery.alternative"
CHILD_NAMESPACE = uuid.UUID("6f1c1f62-5a57-4c1e-9a43-1d2b8d0f7a10")


def handler_for(classification_type: str) -> str:
    """The source's recoverFromDeliveryFailure switch."""
    return HANDLERS.get(classification_type, GENERIC_HANDLER)


# ---- consumer_unavailable ---------------------------------------------------------------

def failed_consumers(event: dict[str, Any]) -> list[str]:
    detail = detail_of(event, DETAIL) or {}
    seen: list[str] = []
    for consumer in detail.get("failed_consumers") or []:
        if consumer and consumer not in seen:
            seen.append(str(consumer))
    return seen


def is_child(event: dict[str, Any]) -> bool:
    return PARENT_INCIDENT in ((event.get("error") or {}).get("details") or {})


def needs_split(event: dict[str, Any], classification_type: str) -> bool:
    """A consumer_unavailable report carrying the undelivered event and naming failed
    consumers other than just its own consumer group is split into one report per consumer.
    (Without the event there is nothing to keep for each consumer: the generic path
    dead-letters the report.)"""
    if event.get("kind") != KIND or classification_type != CONSUMER_UNAVAILABLE:
        return False
    if not event.get("failed_record"):
        return False
    consumers = failed_consumers(event)
    own = (event.get("source") or {}).get("consumer_group")
    return bool(consumers) and consumers != [own] and not is_child(event)


def child_incident(parent_incident: str, consumer: str) -> str:
    return f"{parent_incident}/{consumer}"


def child_event(parent: dict[str, Any], parent_incident: str, consumer: str,
                policy: DeliveryPolicy) -> dict[str, Any]:
    """The report for one consumer: the same failed record, this consumer's group and
    redelivery topic, a deterministic id (the same parent always gives the same child)."""
    detail = detail_of(parent, DETAIL) or {}
    error = dict(parent["error"])
    error["details"] = {**(error.get("details") or {}), PARENT_INCIDENT: parent_incident,
                        PARENT_EVENT: parent["event_id"]}
    return {
        **parent,
        "event_id": str(uuid.uuid5(CHILD_NAMESPACE, f"{parent['event_id']}/{consumer}")),
        "work_item_id": child_incident(parent_incident, consumer),
        "source": {**parent["source"], "consumer_group": consumer},
        "error": error,
        "dispatch_target": policy.redelivery_of(consumer),
        "detail": (f"io.recovery.v1.{DETAIL}", {**detail, "failed_consumers": [consumer]}),
    }


def alternative_topic(decision: d.Decision | None, incident: d.Incident,
                      policy: DeliveryPolicy, has_record: bool) -> str | None:
    """The source's tryAlternativeDelivery, at the first decision of a consumer's incident
    (its first retry, or its dead letter when it is not retried), where one is configured."""
    if not has_record or not incident.consumer_group:
        return None
    first = (isinstance(decision, d.Retry) and decision.retry_number == 1) or (
        isinstance(decision, d.DeadLetter) and incident.attempts == 0)
    return policy.alternative_delivery.get(incident.consumer_group) if first else None


# ---- topic_not_found --------------------------------------------------------------------

@dataclass(frozen=True)
class CreateTopic:
    spec: TopicSpec


@dataclass(frozen=True)
class UseFallback:
    topic: str


@dataclass(frozen=True)
class EscalateTopic:
    reason: str


TopicStep = CreateTopic | UseFallback | EscalateTopic


def missing_topic(event: dict[str, Any]) -> str | None:
    detail = detail_of(event, DETAIL) or {}
    return detail.get("target_topic") or (event.get("failed_record") or {}).get("topic")


def definition_of(topic: str, specs: list[TopicSpec], prefix: str) -> TopicSpec | None:
    """The topics/ definition of a topic, named as it is (or with the topic prefix)."""
    for spec in specs:
        if topic in (spec.name, prefix + spec.name):
            return replace(spec, name=topic)
    return None


def topic_step(topic: str | None, *, definition: TopicSpec | None, creation_allowed: bool,
               fallback: str | None, creation_error: str | None = None) -> TopicStep:
    if topic is None:
        return EscalateTopic("the report names no topic (EventDeliveryFailed.target_topic)")
    if creation_allowed and definition is not None and creation_error is None:
        return CreateTopic(definition)
    if fallback is not None and fallback != topic:
        return UseFallback(fallback)
    if creation_error is not None:
        why = f"creating {topic} failed: {creation_error}"
    elif definition is None:
        why = f"{topic} has no definition in topics/"
    else:
        why = f"{topic} is defined but creating missing topics is off"
    return EscalateTopic(f"{why}, and no fallback topic is configured")


def delivery_failed_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The source's communication/event_delivery_failed payload fields."""
    detail = detail_of(event, DETAIL) or {}
    failed = event.get("failed_record") or {}
    return {
        "affectedConsumers": failed_consumers(event),
        "deliveryError": {"type": event["error"]["type"], "cause": detail.get("cause"),
                          "targetTopic": detail.get("target_topic"),
                          "messageSize": detail.get("message_size"),
                          "sizeLimit": detail.get("size_limit")},
        "originalEvent": {"eventType": detail.get("event_type"), "topic": failed.get("topic"),
                          "partition": failed.get("partition"),
                          "offset": failed.get("offset")},
    }


# ---- wiring -----------------------------------------------------------------------------

def create_topic(settings: Any, spec: TopicSpec) -> None:
    from confluent_kafka.admin import AdminClient

    from app.kafka.config import admin_config
    from app.kafka.topics import apply_topics

    apply_topics(AdminClient(admin_config(settings)), [spec], timeout=15)


class EventDeliveryStrategy(BaseStrategy):
    name = "event_delivery"
    kinds = frozenset({KIND})

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.policy = pipeline.scenario_policies.delivery
        self.failures_topic = pipeline.settings.topic("recovery.failures")

    def reported_fields(self, event: dict[str, Any]) -> dict[str, Any]:
        return delivery_failed_fields(event) if event["kind"] == KIND else {}

    def takes_over(self, event: dict[str, Any]) -> bool:
        return needs_split(event, classification_of(self.pipeline, event).type)

    async def handle(self, ctx: StrategyContext) -> None:
        """Splits a report per failed consumer; each child goes through the pipeline."""
        event, incident = ctx.event, ctx.incident
        event_id, incident_id = event["event_id"], incident.incident_id
        consumers = failed_consumers(event)
        noted = note_report(incident, event, ctx.classification, lifecycle.now_ms(),
                            state="split", what=f"split per consumer: {', '.join(consumers)}")
        if noted is not incident:
            ctx.incidents[incident_id] = noted.to_json()
        children = []
        for consumer in consumers:
            child = child_event(event.raw, incident_id, consumer, self.policy)
            children.append(child["work_item_id"])
            await self.pipeline.send(OutRecord(
                self.failures_topic, child["work_item_id"].encode(),
                self.pipeline.codec.encode(FAILURE_SUBJECT, child), []))
        # The parent's own outcome: "split"; each child then ends in one of the usual ones.
        await self.pipeline.emit(SPLIT, incident_id, step_id=lifecycle.step_id(event_id, "split"),
                                 failure_event_id=event_id, outcome=SPLIT_OUTCOME,
                                 classification=ctx.classification.as_record(),
                                 payload={"consumers": consumers, "childIncidents": children,
                                          "handler": handler_for(ctx.classification.type)})

    async def after_decision(self, ctx: StrategyContext) -> bool:
        if ctx.event["kind"] != KIND:
            return False
        if ctx.classification.type == CONSUMER_UNAVAILABLE:
            await self.alternative_delivery(ctx)
            return False
        if ctx.classification.type == TOPIC_CONFIGURATION and isinstance(ctx.decision,
                                                                         d.Escalate):
            return await self.topic_not_found(ctx)
        return False

    async def alternative_delivery(self, ctx: StrategyContext) -> None:
        event, incident = ctx.event, ctx.incident
        topic = alternative_topic(ctx.decision, incident, self.policy,
                                  bool(event.get("failed_record")))
        if topic is None:
            return
        original = routing.original_of(event, ctx.record)
        headers = routing.context(event, original, incident, ctx.classification,
                                  **{ALTERNATIVE_HEADER: "1"})
        await self.pipeline.send(routing.moved(topic, original, headers))
        await self.pipeline.emit(ALTERNATIVE_DELIVERY, incident.incident_id,
                                 step_id=lifecycle.step_id(event["event_id"],
                                                           "alternative-delivery"),
                                 failure_event_id=event["event_id"],
                                 classification=ctx.classification.as_record(),
                                 attempt=incident.attempts,
                                 payload={"consumer": incident.consumer_group,
                                          "alternativeTopic": topic,
                                          "originalTopic": original.topic})

    async def topic_not_found(self, ctx: StrategyContext) -> bool:
        event, incident = ctx.event, ctx.incident
        topic = missing_topic(event)
        specs = load_topic_specs(self.settings.topics_dir)
        definition = definition_of(topic, specs, self.settings.topic_prefix) if topic else None
        fallback = self.policy.fallback_for(topic) if topic else None
        step = topic_step(topic, definition=definition,
                          creation_allowed=self.settings.create_missing_topics,
                          fallback=fallback)
        common = {"failure_event_id": event["event_id"],
                  "classification": ctx.classification.as_record(),
                  "attempt": incident.attempts}
        event_id, incident_id = event["event_id"], incident.incident_id
        if isinstance(step, CreateTopic):
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, create_topic, self.settings, step.spec)
            except Exception as exc:  # authorization, invalid config, cluster down...
                log.warning("creating missing topic %s failed: %s", topic, exc)
                step = topic_step(topic, definition=definition, creation_allowed=True,
                                  fallback=fallback, creation_error=str(exc))
            else:
                await self.pipeline.emit(TOPIC_CREATED, incident_id,
                                         step_id=lifecycle.step_id(event_id, "topic-created"),
                                         payload={"topicName": topic,
                                                  "partitions": step.spec.partitions,
                                                  "replicationFactor":
                                                      step.spec.replication_factor,
                                                  "config": step.spec.config}, **common)
        if isinstance(step, EscalateTopic):
            self.record(ctx, "escalated", step.reason)
            await self.pipeline.emit(lifecycle.ESCALATED, incident_id,
                                     step_id=lifecycle.step_id(event_id, "escalated"),
                                     outcome="escalated",
                                     payload={"reason": step.reason, "topicName": topic,
                                              "handler": "handleTopicNotFound",
                                              "recommendedAction":
                                                  "create the topic or configure a fallback "
                                                  "topic, then replay the failure"},
                                     **common)
            return True
        target = step.spec.name if isinstance(step, CreateTopic) else step.topic
        assert topic is not None
        delivered = False
        if event.get("failed_record"):
            original = routing.original_of(event, ctx.record)
            await self.pipeline.send(routing.redelivery(
                target, original.key, original.value,
                h.with_context(original.headers, routing.context(
                    event, original, incident, ctx.classification))))
            delivered = True
        if isinstance(step, UseFallback):
            await self.pipeline.emit(REROUTED_TO_FALLBACK, incident_id,
                                     step_id=lifecycle.step_id(event_id, "fallback-topic"),
                                     payload={"topicName": topic, "fallbackTopic": target,
                                              "delivered": delivered}, **common)
        else:
            await self.pipeline.emit(lifecycle.REDELIVERED, incident_id,
                                     step_id=lifecycle.step_id(event_id, "redelivered"),
                                     payload={"target": target, "delivered": delivered},
                                     **common)
        action = "topic_created" if isinstance(step, CreateTopic) else "fallback_topic"
        self.record(ctx, "completed", action)
        first = incident.first_failure_ms
        await self.pipeline.emit(lifecycle.RECOVERY_COMPLETED, incident_id,
                                 step_id=lifecycle.step_id(incident_id, "completed",
                                                           cycle=incident.cycle),
                                 outcome="completed",
                                 duration_ms=lifecycle.now_ms() - first if first else None,
                                 payload={"action": action, "target": target,
                                          "delivered": delivered}, **common)
        return True

    def record(self, ctx: StrategyContext, state: str, what: str) -> None:
        ctx.incidents[ctx.incident.incident_id] = ctx.incident.step(
            lifecycle.now_ms(), what, state=state).to_json()


def install(app: Any, pipeline: Any) -> EventDeliveryStrategy:
    return EventDeliveryStrategy(pipeline)
