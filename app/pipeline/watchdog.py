"""The incident watchdog: what to do with an incident still open past its deadline. Pure
over the incident, the policies and the time; the worker's timer asks `is_due` for each
incident it holds and sends a `watchdog` command for those that are, and the incident agent
decides with `act` (again: the state may have moved on since the timer looked).

A retrying incident's deadline is its latest retry's due time plus the ack timeout: by then
the retry should have been redelivered and the service should have acknowledged it. While
its consumer is unhealthy the retry is held on purpose, so the deadline waits, but never
beyond held_limit_ms after the incident last changed. Past the deadline: the retry is sent
once more (same ids), and if that is not acknowledged within the ack timeout either, the
failed record is dead-lettered with reason "unacknowledged redelivery". Other states follow
the `[watchdog.states]` policy (escalate, or none where a scenario's own watch owns them).

Bound: a retrying incident reaches a terminal outcome within
    retry delay + 2 x ack timeout + the watchdog interval (consumer healthy), or
    held_limit_ms + ack timeout + the watchdog interval (consumer down),
after its last change."""

from __future__ import annotations

from dataclasses import dataclass

from app.pipeline.decide import DeadLetter, Escalate, Incident
from app.pipeline.retry.backoff import delay_ms
from app.policy.rules import RetryPolicy
from app.policy.watchdog import ESCALATE, NONE, REDISPATCH_THEN_DEAD_LETTER, WatchdogPolicy

UNACKNOWLEDGED = "unacknowledged redelivery"


@dataclass(frozen=True)
class Redispatch:
    """Send the retry to its target once more, with the same ids."""


@dataclass(frozen=True)
class Wait:
    """Not due (or held on purpose): nothing to do now."""


WatchdogAction = Redispatch | DeadLetter | Escalate | Wait


def deadline(incident: Incident, retry: RetryPolicy, ack_timeout_ms: int) -> int | None:
    """When the incident is overdue; None for a terminal incident (no deadline)."""
    if incident.terminal:
        return None
    if incident.state == "retrying" and incident.attempts > 0:
        if incident.watchdog_redispatches:
            return incident.updated_ms + ack_timeout_ms
        return incident.updated_ms + delay_ms(retry, incident.attempts) + ack_timeout_ms
    return incident.updated_ms + ack_timeout_ms


def is_due(incident: Incident, now_ms: int, retry: RetryPolicy, ack_timeout_ms: int,
           policy: WatchdogPolicy) -> bool:
    if incident.terminal or policy.action_for(incident.state) == NONE:
        return False
    due = deadline(incident, retry, ack_timeout_ms)
    return due is not None and now_ms >= due


def act(incident: Incident, now_ms: int, *, retry: RetryPolicy, ack_timeout_ms: int,
        consumer_healthy: bool, policy: WatchdogPolicy) -> WatchdogAction:
    if not is_due(incident, now_ms, retry, ack_timeout_ms, policy):
        return Wait()
    action = policy.action_for(incident.state)
    if action == REDISPATCH_THEN_DEAD_LETTER:
        held_for = now_ms - incident.updated_ms
        if not consumer_healthy and held_for < policy.held_limit_ms:
            return Wait()  # held for a consumer that is down; the health watch is on it
        if incident.watchdog_redispatches == 0 and consumer_healthy:
            return Redispatch()
        return DeadLetter(UNACKNOWLEDGED if consumer_healthy else
                            f"{UNACKNOWLEDGED}: consumer unhealthy for {held_for} ms")
    if action == ESCALATE:
        return Escalate(f"incident {incident.state} past its deadline")
    return Wait()


def redispatched(incident: Incident, now_ms: int) -> Incident:
    return incident.step(now_ms, "watchdog: retry sent again",
                         watchdog_redispatches=incident.watchdog_redispatches + 1)
