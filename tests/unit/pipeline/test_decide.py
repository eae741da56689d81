import random

import pytest

from app.pipeline.classify import Classification
from app.pipeline.decide import (
    AlternativeRoute,
    DeadLetter,
    Duplicate,
    Escalate,
    Incident,
    Poison,
    Report,
    Retry,
    acknowledge,
    decide,
    record_report,
)
from app.pipeline.retry.backoff import delay_ms, tier_for
from app.policy.rules import Exhausted, RetryPolicy, load_policies

POLICIES = load_policies()
TRANSIENT = Classification("ERROR", "transient", "network_timeout", "recoverable")
DEFAULT = RetryPolicy()


def report(event_id: str = "e1", classification: Classification = TRANSIENT,
           can_redeliver: bool = True, at: int = 1000) -> Report:
    return Report(event_id, at, classification, can_redeliver, "billing", "billing.redelivery")


def test_default_backoff_is_1_2_4_seconds() -> None:
    assert [delay_ms(DEFAULT, n) for n in (1, 2, 3)] == [1000, 2000, 4000]


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy(initial_ms=1000, multiplier=10, max_ms=5000)
    assert [delay_ms(policy, n) for n in (1, 2, 3)] == [1000, 5000, 5000]


def test_fixed_backoff_and_jitter_bounds() -> None:
    assert delay_ms(RetryPolicy(backoff="fixed", initial_ms=30000), 3) == 30000
    jittery = RetryPolicy(initial_ms=1000, jitter=0.5)
    values = {delay_ms(jittery, 1, random.Random(seed)) for seed in range(20)}
    assert all(1000 <= v <= 1500 for v in values) and len(values) > 1


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        delay_ms(DEFAULT, 0)


@pytest.mark.parametrize(("remaining", "tier"),
                         [(500, 1000), (1000, 1000), (1999, 1000), (2000, 2000), (3500, 2000),
                          (4000, 4000), (29000, 4000), (45000, 30000)])
def test_tier_is_the_largest_not_above_the_remaining_wait(remaining: int, tier: int) -> None:
    assert tier_for(remaining, [30000, 1000, 4000, 2000]) == tier


def test_three_retries_then_dead_letter() -> None:
    incident = Incident("i")
    decisions = []
    for n in range(4):
        decision = decide(incident, report(f"e{n}"), DEFAULT)
        decisions.append(decision)
        incident = record_report(incident, report(f"e{n}"), decision, 2000 + n)
    assert decisions[:3] == [Retry(1, 1000), Retry(2, 2000), Retry(3, 4000)]
    assert isinstance(decisions[3], DeadLetter)
    assert incident.state == "dead_lettered" and incident.reports == 4


def test_a_repeated_report_is_a_duplicate_and_changes_nothing() -> None:
    incident = record_report(Incident("i"), report("e1"), Retry(1, 1000), 5)
    assert decide(incident, report("e1"), DEFAULT) == Duplicate()
    assert record_report(incident, report("e1"), Duplicate(), 6) == incident


@pytest.mark.parametrize(
    "classification",
    [Classification("ERROR", "x", "t", "non_recoverable"),
     Classification("CRITICAL", "x", "t", "recoverable"),
     Classification("FATAL", "x", "t", "partially_recoverable")],
)
def test_non_recoverable_critical_and_fatal_go_to_poison(classification: Classification) -> None:
    assert isinstance(decide(Incident("i"), report(classification=classification), DEFAULT), Poison)


def test_authentication_is_escalated_never_retried() -> None:
    auth = Classification("CRITICAL", "security", "authentication", "non_recoverable")
    assert isinstance(decide(Incident("i"), report(classification=auth),
                             POLICIES.retry_for("authentication")), Escalate)


def test_network_timeout_exhausted_asks_for_an_alternative_route() -> None:
    policy = POLICIES.retry_for("network_timeout")
    incident = Incident("i", state="retrying", attempts=3)
    assert isinstance(decide(incident, report("e9"), policy), AlternativeRoute)


def test_exhausted_to_poison_and_escalate() -> None:
    incident = Incident("i", state="retrying", attempts=1)
    assert isinstance(decide(incident, report(), RetryPolicy(attempts=1,
                                                             on_exhausted=Exhausted.POISON)),
                      Poison)
    assert isinstance(decide(incident, report(), RetryPolicy(attempts=1,
                                                             on_exhausted=Exhausted.ESCALATE)),
                      Escalate)


def test_nothing_to_redeliver_is_dead_lettered() -> None:
    assert isinstance(decide(Incident("i"), report(can_redeliver=False), DEFAULT), DeadLetter)


def test_a_new_failure_after_an_outcome_reopens_a_fresh_cycle() -> None:
    done = Incident("i", state="dead_lettered", attempts=3, reports=4, first_failure_ms=1)
    decision = decide(done, report("new", at=99), DEFAULT)
    assert decision == Retry(1, 1000)
    reopened = record_report(done, report("new", at=99), decision, 100)
    assert (reopened.cycle, reopened.attempts, reopened.first_failure_ms) == (2, 1, 99)


def test_acknowledge_completes_once_with_duration() -> None:
    incident = record_report(Incident("i"), report(at=1000), Retry(1, 1000), 1000)
    completed, duration = acknowledge(incident, 4500)
    assert completed.state == "completed" and duration == 3500
    again, none = acknowledge(completed, 5000)
    assert again == completed and none is None


def test_acknowledge_for_an_unknown_incident_does_nothing() -> None:
    assert acknowledge(Incident("i"), 10) == (Incident("i"), None)


def test_incident_survives_json_round_trip() -> None:
    incident = record_report(Incident("i"), report(), Retry(1, 1000), 7)
    assert Incident.from_json(incident.to_json(), "i") == incident


def test_a_replayed_report_gets_the_same_decision_and_state_back() -> None:
    incident = record_report(Incident("i"), report("e1", at=1000), Retry(1, 1000), 1500)
    incident = record_report(incident, report("e2", at=2000), Retry(2, 2000), 2500)
    from app.pipeline.decide import replayed

    view, decision = replayed(Incident.from_json(incident.to_json(), "i"), "e1")
    assert decision == Retry(1, 1000)
    assert (view.attempts, view.first_failure_ms, view.last_failure_ms) == (1, 1000, 1000)
    assert replayed(incident, "never-seen") is None
