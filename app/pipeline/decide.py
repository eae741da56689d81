"""What to do with a failure report, given the incident so far: pure and unit-tested.
app/pipeline/outcomes.py turns a decision into records and lifecycle steps."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from app.contracts.lifecycle import TERMINAL_OUTCOMES
from app.pipeline.classify import Classification
from app.pipeline.retry.backoff import delay_ms
from app.policy.rules import Exhausted, RetryPolicy

TERMINAL = TERMINAL_OUTCOMES  # a cycle's end state is named after its outcome
HISTORY_LIMIT = 20
SEEN_LIMIT = 50
# Decisions remembered with the incident, so a report processed again after a crash (its
# state saved, its outputs perhaps not) gets the very same outputs again.
RECENT_LIMIT = 5


@dataclass(frozen=True)
class Incident:
    incident_id: str
    state: str = "open"
    attempts: int = 0  # retries dispatched in the current cycle
    reports: int = 0
    cycle: int = 1
    first_failure_ms: int = 0
    last_failure_ms: int = 0
    classification: dict[str, str] | None = None
    consumer_group: str | None = None
    dispatch_target: str | None = None
    kind: str | None = None  # the failure kind reported (strategies are chosen by it)
    # Where the latest report was read (topic, partition, offset): the watchdog reads the
    # failed record from there again. And how often the watchdog re-dispatched this cycle.
    report_position: tuple[str, int, int] | None = None
    watchdog_redispatches: int = 0
    seen: tuple[str, ...] = ()
    history: tuple[tuple[int, str], ...] = ()
    # (event id, decision, attempts, first failure, last failure) of the latest reports
    recent: tuple[tuple[str, dict[str, Any], int, int, int], ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        data["seen"] = list(self.seen)
        data["history"] = [list(h) for h in self.history]
        data["recent"] = [list(r) for r in self.recent]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, incident_id: str) -> Incident:
        if not data:
            return cls(incident_id)
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["seen"] = tuple(values.get("seen", ()))
        values["history"] = tuple(tuple(h) for h in values.get("history", ()))
        values["recent"] = tuple(tuple(r) for r in values.get("recent", ()))
        if values.get("report_position") is not None:
            values["report_position"] = tuple(values["report_position"])
        return cls(**values)

    @property
    def unknown(self) -> bool:
        """Never reported here: an empty entry (or no entry) in the table."""
        return self.state == "open" and self.reports == 0

    @property
    def updated_ms(self) -> int:
        """When the incident last changed (its latest history step)."""
        return self.history[-1][0] if self.history else self.last_failure_ms

    def step(self, now_ms: int, what: str, **changes: Any) -> Incident:
        history = (*self.history, (now_ms, what))[-HISTORY_LIMIT:]
        return replace(self, history=history, **changes)


@dataclass(frozen=True)
class Duplicate:
    """The same report seen before (a redelivered input); nothing is done twice."""


@dataclass(frozen=True)
class Retry:
    retry_number: int
    delay_ms: int


@dataclass(frozen=True)
class Poison:
    reason: str


@dataclass(frozen=True)
class DeadLetter:
    reason: str


@dataclass(frozen=True)
class Escalate:
    reason: str


@dataclass(frozen=True)
class AlternativeRoute:
    """Retries ran out; a scenario strategy may route elsewhere (alternative server...)."""

    reason: str


Decision = Duplicate | Retry | Poison | DeadLetter | Escalate | AlternativeRoute
_DECISIONS: dict[str, type] = {
    "retry": Retry, "poison": Poison, "dead_letter": DeadLetter, "escalate": Escalate,
    "alternative_route": AlternativeRoute,
}


def decision_to_json(decision: Decision) -> dict[str, Any]:
    name = next(k for k, v in _DECISIONS.items() if isinstance(decision, v))
    return {"type": name, **decision.__dict__}


def decision_from_json(data: dict[str, Any]) -> Decision:
    values = dict(data)
    return _DECISIONS[values.pop("type")](**values)


def replayed(incident: Incident, event_id: str) -> tuple[Incident, Decision] | None:
    """For a report seen before: the incident as it stood right after that report, and the
    decision taken, so the same outputs can be sent again. None if it is no longer known."""
    for seen_id, decision, attempts, first, last in incident.recent:
        if seen_id == event_id:
            view = replace(incident, attempts=attempts, first_failure_ms=first,
                           last_failure_ms=last)
            return view, decision_from_json(decision)
    return None


@dataclass(frozen=True)
class Report:
    event_id: str
    occurred_at_ms: int
    classification: Classification
    can_redeliver: bool  # the report carries the failed record and where to send it
    consumer_group: str | None = None
    dispatch_target: str | None = None
    kind: str | None = None
    position: tuple[str, int, int] | None = None  # where the report was read
    extra: dict[str, Any] = field(default_factory=dict)


def must_quarantine(classification: Classification) -> bool:
    return (
        classification.recoverability == "non_recoverable"
        or classification.severity in ("CRITICAL", "FATAL")
    )


def on_exhausted(policy: RetryPolicy, reason: str) -> Decision:
    match policy.on_exhausted:
        case Exhausted.ESCALATE:
            return Escalate(reason)
        case Exhausted.ALTERNATIVE_ROUTE:
            return AlternativeRoute(reason)
        case Exhausted.POISON:
            return Poison(reason)
        case _:
            return DeadLetter(reason)


def decide(incident: Incident, report: Report, policy: RetryPolicy) -> Decision:
    if report.event_id in incident.seen:
        return Duplicate()
    classification = report.classification
    if must_quarantine(classification) and policy.on_exhausted != Exhausted.ESCALATE:
        return Poison(f"{classification.severity} {classification.recoverability} "
                      f"{classification.type}")
    if policy.attempts <= 0:
        return on_exhausted(policy, f"{classification.type} is not retried")
    if not report.can_redeliver:
        return DeadLetter("the failure report carries no record and no dispatch target to retry")
    attempts = 0 if incident.terminal else incident.attempts
    if attempts < policy.attempts:
        return Retry(attempts + 1, delay_ms(policy, attempts + 1))
    return on_exhausted(policy, f"{attempts} retries exhausted")


def record_report(incident: Incident, report: Report, decision: Decision, now_ms: int) -> Incident:
    """The incident after a report and the decision taken on it."""
    if isinstance(decision, Duplicate):
        return incident
    reopened = incident.terminal
    base = replace(
        incident,
        reports=incident.reports + 1,
        cycle=incident.cycle + 1 if reopened else incident.cycle,
        attempts=0 if reopened else incident.attempts,
        first_failure_ms=(incident.first_failure_ms if incident.first_failure_ms and not reopened
                          else report.occurred_at_ms),
        last_failure_ms=report.occurred_at_ms,
        classification=report.classification.as_record(),
        consumer_group=report.consumer_group or incident.consumer_group,
        dispatch_target=report.dispatch_target or incident.dispatch_target,
        kind=report.kind or incident.kind,
        report_position=report.position or incident.report_position,
        watchdog_redispatches=0,
        seen=(*incident.seen, report.event_id)[-SEEN_LIMIT:],
    )
    match decision:
        case Retry(retry_number=n):
            after = base.step(now_ms, f"retry {n} scheduled", state="retrying", attempts=n)
        case Poison():
            after = base.step(now_ms, "poisoned", state="poisoned")
        case DeadLetter():
            after = base.step(now_ms, "dead-lettered", state="dead_lettered")
        case Escalate():
            after = base.step(now_ms, "escalated", state="escalated")
        case _:
            after = base.step(now_ms, "alternative route", state="escalated")
    remembered = (report.event_id, decision_to_json(decision), after.attempts,
                  after.first_failure_ms, after.last_failure_ms)
    return replace(after, recent=(*after.recent, remembered)[-RECENT_LIMIT:])


def acknowledge(incident: Incident, now_ms: int) -> tuple[Incident, int | None]:
    """A successful redelivery. Returns the completed incident and its duration (None when
    the first failure's time is not known), or the incident itself, unchanged, and None when
    it was already finished (a repeated acknowledgement)."""
    if incident.terminal or incident.unknown:
        return incident, None
    duration = now_ms - incident.first_failure_ms if incident.first_failure_ms else None
    return incident.step(now_ms, "completed", state="completed"), duration
