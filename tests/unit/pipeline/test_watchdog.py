"""The incident watchdog's decisions, branch by branch, over an injected time."""

from __future__ import annotations

from app.pipeline.decide import Incident
from app.pipeline.watchdog import (
    UNACKNOWLEDGED,
    DeadLetter,
    Escalate,
    Redispatch,
    Wait,
    act,
    deadline,
    is_due,
    redispatched,
)
from app.policy.rules import RetryPolicy
from app.policy.watchdog import WatchdogPolicy

RETRY = RetryPolicy()  # 1 s, 2 s, 4 s
ACK_MS = 10_000
POLICY = WatchdogPolicy()


def retrying(attempts: int = 1, at: int = 100_000, **changes) -> Incident:
    return Incident("inc-1", state="retrying", attempts=attempts, reports=attempts,
                    history=((at, f"retry {attempts} scheduled"),), **changes)


def decide(incident: Incident, now: int, healthy: bool = True):
    return act(incident, now, retry=RETRY, ack_timeout_ms=ACK_MS, consumer_healthy=healthy,
               policy=POLICY)


def test_a_retrying_incident_is_due_after_its_retry_delay_plus_the_ack_timeout() -> None:
    incident = retrying(attempts=2)  # the second retry waits 2 s
    assert deadline(incident, RETRY, ACK_MS) == 100_000 + 2_000 + ACK_MS
    assert decide(incident, 100_000 + 2_000 + ACK_MS - 1) == Wait()
    assert decide(incident, 100_000 + 2_000 + ACK_MS) == Redispatch()


def test_after_one_redispatch_the_next_expiry_dead_letters() -> None:
    again = redispatched(retrying(), 200_000)
    assert again.watchdog_redispatches == 1 and again.updated_ms == 200_000
    assert deadline(again, RETRY, ACK_MS) == 200_000 + ACK_MS
    assert decide(again, 200_000 + ACK_MS - 1) == Wait()
    assert decide(again, 200_000 + ACK_MS) == DeadLetter(UNACKNOWLEDGED)


def test_a_held_retry_waits_while_its_consumer_is_down_up_to_the_held_limit() -> None:
    incident = retrying()
    overdue = 100_000 + 1_000 + ACK_MS
    assert decide(incident, overdue, healthy=False) == Wait()
    limit = 100_000 + POLICY.held_limit_ms
    result = decide(incident, limit, healthy=False)
    assert isinstance(result, DeadLetter) and result.reason.startswith(UNACKNOWLEDGED)
    assert "consumer unhealthy" in result.reason


def test_terminal_incidents_have_no_deadline() -> None:
    for state in ("completed", "dead_lettered", "poisoned", "escalated"):
        done = Incident("inc-1", state=state, reports=1, history=((1, state),))
        assert deadline(done, RETRY, ACK_MS) is None
        assert not is_due(done, 10**12, RETRY, ACK_MS, POLICY)
        assert decide(done, 10**12) == Wait()


def test_other_states_follow_the_policy() -> None:
    rerouted = Incident("inc-1", state="rerouted", reports=1, history=((1_000, "rerouted"),))
    assert decide(rerouted, 1_000 + ACK_MS) == Escalate("incident rerouted past its deadline")
    split = Incident("inc-1", state="split", reports=1, history=((1_000, "split"),))
    assert decide(split, 10**12) == Wait()  # its per-consumer children carry the outcome
    custom = WatchdogPolicy(actions={"split": "escalate"})
    assert isinstance(act(split, 10**12, retry=RETRY, ack_timeout_ms=ACK_MS,
                          consumer_healthy=True, policy=custom), Escalate)


def test_a_new_report_resets_the_redispatch_count() -> None:
    from app.pipeline import decide as d
    from app.pipeline.classify import Classification

    again = redispatched(retrying(), 200_000)
    report = d.Report("e-2", 210_000, Classification("ERROR", "processing", "x", "recoverable"),
                      True, "g", "g.redelivery", position=("recovery.failures", 1, 9))
    after = d.record_report(again, report, d.Retry(2, 2_000), 210_000)
    assert after.watchdog_redispatches == 0
    assert after.report_position == ("recovery.failures", 1, 9)
    assert Incident.from_json(after.to_json(), "inc-1") == after
