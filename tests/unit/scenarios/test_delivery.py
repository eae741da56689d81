"""Scenario 3 (message delivery failures: consumer_unavailable, topic_not_found), without a
broker. message_too_large has its own tests (tests/unit/test_oversize_worker.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, LockedSchemaIds
from app.contracts import headers as h
from app.contracts.failure_event import FailureEvent, new_failure_event
from app.kafka.topics import TopicSpec, load_topic_specs
from app.pipeline import decide as d
from app.pipeline import health
from app.pipeline.classify import Classification, classify
from app.pipeline.intake import RawRecord
from app.pipeline.retry.tiers import Dispatch, Hold, plan
from app.pipeline.strategy import StrategyContext
from app.policy.routing import DeliveryPolicy
from app.policy.rules import Exhausted, load_policies
from app.scenarios import event_delivery as ev
from app.settings import REPO_ROOT, Settings

POLICIES = load_policies()
RECORD = {"topic": "orders", "partition": 1, "offset": 7, "key": b"o-1", "value": b"{}",
          "headers": [{"key": "trace", "value": b"t"}]}


def delivery_event(error_type: str = "consumer_unavailable", *, consumers=("billing",),
                   group: str | None = None, record: dict | None = RECORD,
                   cause: str = "CONSUMER_UNAVAILABLE", target: str | None = None,
                   event_id: str = "e1") -> dict[str, Any]:
    return new_failure_event(
        kind=ev.KIND, error_type=error_type, service="bus", work_item_id="evt-1",
        consumer_group=group, event_id=event_id, failed_record=record,
        detail=("EventDeliveryFailed", {"cause": cause, "failed_consumers": list(consumers),
                                        "target_topic": target, "event_type": "order/created"}))


def cls(error_type: str) -> Classification:
    return classify(POLICIES.rules, kind=ev.KIND, error_type=error_type)


@pytest.mark.parametrize(("error_type", "expected", "handler"), [
    ("consumer_unavailable", ("ERROR", "transient", "consumer_unavailable", "recoverable"),
     "handleConsumerUnavailable"),
    ("message_too_large", ("ERROR", "configuration", "message_size_limit", "recoverable"),
     "handleMessageTooLarge"),
    ("topic_not_found", ("CRITICAL", "configuration", "topic_configuration",
                         "partially_recoverable"), "handleTopicNotFound"),
    ("broker_hiccup", ("ERROR", "unknown", "delivery_failure", "partially_recoverable"),
     "handleGenericDeliveryFailure"),
])
def test_classification_and_handler_per_error_type(error_type, expected, handler) -> None:
    c = cls(error_type)
    assert (c.severity, c.category, c.type, c.recoverability) == expected
    assert ev.handler_for(c.type) == handler


# ---- consumer_unavailable -------------------------------------------------------------------

def test_consumer_unavailable_next_retry_in_30_s_then_dead_letter() -> None:
    policy = POLICIES.retry_for("consumer_unavailable")
    incident = d.Incident("i")
    for n in range(1, 4):
        report = d.Report(f"e{n}", 1, cls("consumer_unavailable"), True, "billing",
                          "billing.redelivery")
        decision = d.decide(incident, report, policy)
        assert decision == d.Retry(n, 30_000)
        incident = d.record_report(incident, report, decision, 2)
    last = d.Report("e4", 1, cls("consumer_unavailable"), True, "billing", "billing.redelivery")
    assert isinstance(d.decide(incident, last, policy), d.DeadLetter)
    assert policy.on_exhausted == Exhausted.DEAD_LETTER


def test_a_due_retry_is_held_while_the_consumer_is_down_and_sent_when_healthy() -> None:
    watch = health.WatchSettings()
    down = health.ConsumerHealth("billing", status="failed", last_seen_ms=1000)
    up = health.ConsumerHealth("billing", status="healthy", last_seen_ms=1000)
    tiers = [1000, 2000, 4000, 30_000]
    held = plan(5000, 5000, health.is_healthy(down, 5000, watch), tiers, 30_000)
    assert held == Hold(30_000, 35_000)  # looked at again in 30 s, no attempt burned
    assert plan(5000, 5000, health.is_healthy(up, 5000, watch), tiers, 30_000) == Dispatch()


def test_the_health_watch_replays_dead_letters_when_the_consumer_recovers() -> None:
    watch = health.WatchSettings()
    down = health.ConsumerHealth("billing", status="failed", last_seen_ms=0)
    started = health.check(down, 15_000, watch)
    assert started.event_type == health.UNHEALTHY and not started.replay_dead_letters
    back = health.on_heartbeat(started.health, "billing", "healthy", 5, 30_000)
    outcome = health.check(back, 30_000, watch)
    assert outcome.replay_dead_letters and outcome.event_type == health.CONFIRMED


@pytest.mark.parametrize(("consumers", "group", "expected"), [
    (("billing", "mailer"), None, True),
    (("billing",), None, True),
    (("billing",), "billing", False),  # the generic path handles its own group
    (("mailer",), "billing", True),
    ((), "billing", False),
])
def test_split_per_consumer(consumers, group, expected) -> None:
    assert ev.needs_split(delivery_event(consumers=consumers, group=group),
                          "consumer_unavailable") is expected


def test_no_split_for_other_types_children_or_reports_without_the_event() -> None:
    event = delivery_event(consumers=("a", "b"))
    assert not ev.needs_split(event, "delivery_failure")
    assert not ev.needs_split(delivery_event(consumers=("a", "b"), record=None),
                              "consumer_unavailable")
    child = ev.child_event(event, "evt-1", "a", DeliveryPolicy())
    child["detail"] = ("io.recovery.v1.EventDeliveryFailed", {"failed_consumers": ["x", "y"]})
    assert not ev.needs_split(child, "consumer_unavailable")


def test_child_reports_are_deterministic_and_target_their_consumer() -> None:
    event = delivery_event(consumers=("billing", "mailer", "billing"))
    assert ev.failed_consumers(event) == ["billing", "mailer"]
    policy = DeliveryPolicy(redelivery_topics={"mailer": "mail.retry"})
    billing = ev.child_event(event, "evt-1", "billing", policy)
    mailer = ev.child_event(event, "evt-1", "mailer", policy)
    assert billing["work_item_id"] == "evt-1/billing"
    assert billing["source"]["consumer_group"] == "billing"
    assert billing["dispatch_target"] == "billing.redelivery"
    assert mailer["dispatch_target"] == "mail.retry"
    assert billing["detail"][1]["failed_consumers"] == ["billing"]
    assert billing["failed_record"] == RECORD
    assert billing["error"]["details"][ev.PARENT_INCIDENT] == "evt-1"
    assert billing["event_id"] == ev.child_event(event, "evt-1", "billing", policy)["event_id"]
    assert billing["event_id"] != mailer["event_id"] != event["event_id"]
    codec = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO_ROOT / "schemas")))
    decoded = codec.decode(codec.encode("failure-event", billing), "failure-event")
    assert decoded["work_item_id"] == "evt-1/billing"


def test_alternative_delivery_at_the_first_decision_where_configured() -> None:
    policy = DeliveryPolicy(alternative_delivery={"billing": "billing.webhook"})
    incident = d.Incident("i", consumer_group="billing", attempts=1)
    assert ev.alternative_topic(d.Retry(1, 30_000), incident, policy, True) == "billing.webhook"
    assert ev.alternative_topic(d.Retry(2, 30_000), incident, policy, True) is None
    fresh = d.Incident("i", consumer_group="billing", attempts=0)
    assert ev.alternative_topic(d.DeadLetter("x"), fresh, policy, True) == "billing.webhook"
    assert ev.alternative_topic(d.Retry(1, 30_000), incident, policy, False) is None
    other = d.Incident("i", consumer_group="mailer", attempts=1)
    assert ev.alternative_topic(d.Retry(1, 30_000), other, policy, True) is None


def test_delivery_failed_payload_has_the_source_fields() -> None:
    fields = ev.delivery_failed_fields(delivery_event(consumers=("a", "b"), target="orders"))
    assert fields["affectedConsumers"] == ["a", "b"]
    assert fields["deliveryError"]["type"] == "consumer_unavailable"
    assert fields["deliveryError"]["cause"] == "CONSUMER_UNAVAILABLE"
    assert fields["originalEvent"] == {"eventType": "order/created", "topic": "orders",
                                       "partition": 1, "offset": 7}


# ---- topic_not_found ------------------------------------------------------------------------

def test_topic_not_found_is_not_retried_nor_poisoned() -> None:
    policy = POLICIES.retry_for("topic_configuration")
    report = d.Report("e", 1, cls("topic_not_found"), True, None, "orders")
    assert isinstance(d.decide(d.Incident("i"), report, policy), d.Escalate)


SPEC = TopicSpec("orders.v2", 6, 3, {"retention.ms": "1000"})


def test_definition_found_by_name_or_prefixed_name() -> None:
    assert ev.definition_of("orders.v2", [SPEC], "p.") == SPEC
    assert ev.definition_of("p.orders.v2", [SPEC], "p.") == TopicSpec(
        "p.orders.v2", 6, 3, {"retention.ms": "1000"})
    assert ev.definition_of("other", [SPEC], "p.") is None
    specs = load_topic_specs(REPO_ROOT / "topics")
    assert ev.definition_of("recovery.audit", specs, "") is not None


def test_missing_topic_from_the_detail_else_the_failed_record() -> None:
    assert ev.missing_topic(delivery_event("topic_not_found", target="orders.v2")) == "orders.v2"
    assert ev.missing_topic(delivery_event("topic_not_found")) == "orders"
    assert ev.missing_topic(delivery_event("topic_not_found", record=None)) is None


@pytest.mark.parametrize(("definition", "allowed", "fallback", "error", "expected"), [
    (SPEC, True, "dead.orders", None, ev.CreateTopic(SPEC)),
    (SPEC, False, "dead.orders", None, ev.UseFallback("dead.orders")),
    (None, True, "dead.orders", None, ev.UseFallback("dead.orders")),
    (SPEC, True, "dead.orders", "denied", ev.UseFallback("dead.orders")),
    (SPEC, False, None, None, "creating missing topics is off"),
    (None, True, None, None, "no definition in topics/"),
    (SPEC, True, None, "denied", "creating orders.v2 failed: denied"),
    (None, True, "orders.v2", None, "no definition"),  # a fallback to itself is no fallback
])
def test_topic_step(definition, allowed, fallback, error, expected) -> None:
    step = ev.topic_step("orders.v2", definition=definition, creation_allowed=allowed,
                         fallback=fallback, creation_error=error)
    if isinstance(expected, str):
        assert isinstance(step, ev.EscalateTopic) and expected in step.reason
    else:
        assert step == expected


def test_fallback_topic_per_topic_or_any() -> None:
    policy = DeliveryPolicy(fallback_topics={"orders": "orders.fallback", "*": "parking"})
    assert policy.fallback_for("orders") == "orders.fallback"
    assert policy.fallback_for("invoices") == "parking"
    assert DeliveryPolicy().fallback_for("orders") is None
    assert ev.topic_step(None, definition=None, creation_allowed=True,
                         fallback="x").reason.startswith("the report names no topic")


# ---- the strategy's wiring over a recording pipeline ----------------------------------------

class Recorder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO_ROOT / "schemas")))
        self.sent: list[Any] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def send(self, record: Any) -> None:
        self.sent.append(record)

    async def emit(self, event_type: str, incident_id: str, *, step_id: str, **fields: Any
                   ) -> None:
        self.events.append((event_type, {"step_id": step_id, **fields}))


def make_strategy(tmp_path: Path, policy: DeliveryPolicy, **settings: Any
                  ) -> ev.EventDeliveryStrategy:
    strategy = ev.EventDeliveryStrategy.__new__(ev.EventDeliveryStrategy)
    strategy.pipeline = Recorder(Settings(topic_prefix="p.", **settings))
    strategy.settings = strategy.pipeline.settings
    strategy.policy = policy
    strategy.failures_topic = "p.recovery.failures"
    return strategy


def ctx_for(strategy, event, decision, incident) -> StrategyContext:
    record = RawRecord("p.recovery.failures", 0, 3, None, b"evt-1", b"", [])
    return StrategyContext(strategy.pipeline, FailureEvent(event), record, incident,
                           cls(event["error"]["type"]), decision, {})


def test_wiring_split_sends_one_report_per_consumer(tmp_path: Path) -> None:
    strategy = make_strategy(tmp_path, DeliveryPolicy())
    event = delivery_event(consumers=("billing", "mailer"))
    ctx = ctx_for(strategy, event, None, d.Incident("evt-1"))
    asyncio.run(strategy.handle(ctx))
    assert [(r.topic, r.key) for r in strategy.pipeline.sent] == [
        ("p.recovery.failures", b"evt-1/billing"), ("p.recovery.failures", b"evt-1/mailer")]
    child = strategy.pipeline.codec.decode(strategy.pipeline.sent[1].value, "failure-event")
    assert child["source"]["consumer_group"] == "mailer"
    [(event_type, fields)] = strategy.pipeline.events
    assert event_type == ev.SPLIT and fields["outcome"] == "split"
    assert fields["payload"]["childIncidents"] == ["evt-1/billing", "evt-1/mailer"]
    assert ctx.incidents["evt-1"]["state"] == "split"


def test_wiring_alternative_delivery_keeps_the_record_and_goes_on(tmp_path: Path) -> None:
    strategy = make_strategy(tmp_path, DeliveryPolicy(alternative_delivery={"billing": "hook"}))
    event = delivery_event(group="billing")
    incident = d.Incident("evt-1", consumer_group="billing", attempts=1)
    handled = asyncio.run(strategy.after_decision(ctx_for(strategy, event, d.Retry(1, 30_000),
                                                          incident)))
    assert handled is False  # the generic retry is still sent
    [alt] = strategy.pipeline.sent
    assert (alt.topic, alt.key, alt.value) == ("hook", b"o-1", b"{}")
    assert alt.headers[0] == ("trace", b"t")
    assert h.header_value(alt.headers, ev.ALTERNATIVE_HEADER) == "1"
    assert strategy.pipeline.events[0][0] == ev.ALTERNATIVE_DELIVERY


def test_wiring_missing_topic_to_fallback_completes(tmp_path: Path) -> None:
    strategy = make_strategy(tmp_path, DeliveryPolicy(fallback_topics={"*": "parking"}))
    event = delivery_event("topic_not_found", target="orders.v9", cause="TOPIC_NOT_FOUND")
    ctx = ctx_for(strategy, event, d.Escalate("x"), d.Incident("evt-1", first_failure_ms=1))
    assert asyncio.run(strategy.after_decision(ctx)) is True
    [delivered] = strategy.pipeline.sent
    assert delivered.topic == "parking" and delivered.value == b"{}"
    assert h.header_value(delivered.headers, h.ORIGINAL_TOPIC) == "orders"
    types = [t for t, _ in strategy.pipeline.events]
    assert types == [ev.REROUTED_TO_FALLBACK, "recovery/recovery_completed"]
    assert ctx.incidents["evt-1"]["state"] == "completed"


def test_wiring_missing_topic_nowhere_to_go_escalates(tmp_path: Path) -> None:
    strategy = make_strategy(tmp_path, DeliveryPolicy(), create_missing_topics=True)
    event = delivery_event("topic_not_found", target="orders.v9", cause="TOPIC_NOT_FOUND")
    ctx = ctx_for(strategy, event, d.Escalate("x"), d.Incident("evt-1"))
    assert asyncio.run(strategy.after_decision(ctx)) is True
    assert strategy.pipeline.sent == []
    [(event_type, fields)] = strategy.pipeline.events
    assert event_type == "recovery/escalated" and "no definition" in fields["payload"]["reason"]
    assert ctx.incidents["evt-1"]["state"] == "escalated"


def test_wiring_ignores_other_decisions_and_kinds(tmp_path: Path) -> None:
    strategy = make_strategy(tmp_path, DeliveryPolicy(fallback_topics={"*": "parking"}))
    generic = delivery_event("broker_hiccup")
    assert not asyncio.run(strategy.after_decision(ctx_for(strategy, generic, d.Retry(1, 1000),
                                                           d.Incident("evt-1"))))
    assert strategy.pipeline.sent == [] and strategy.pipeline.events == []
    assert strategy.reported_fields({"kind": "MCP_CONNECTION_LOST"}) == {}
