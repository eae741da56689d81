"""Consumer health from heartbeats, and the recovery watch of Scenario 4 (15 s checks,
5 minute window): pure functions over plain values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from app.contracts import lifecycle

HEALTHY = "healthy"
FAILED = "failed"


@dataclass(frozen=True)
class WatchSettings:
    check_interval_ms: int = 15_000
    window_ms: int = 300_000
    # Heartbeats older than this make a consumer unhealthy (three missed 15 s beats).
    stale_after_ms: int = 45_000


@dataclass(frozen=True)
class ConsumerHealth:
    group: str
    status: str = HEALTHY
    events_processed: int = 0
    last_seen_ms: int = 0
    watch_started_ms: int | None = None
    watch_replayed: bool = False  # its dead letters were replayed during this watch
    # Scenario 4: a watch started on purpose after a restart-in-safe-mode command (reason,
    # the command's id, the crash incident), and the id of the last control command the
    # consumer reported obeying in its heartbeats.
    watch_reason: str | None = None
    watch_control_id: str | None = None
    watch_incident_id: str | None = None
    control_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, group: str) -> ConsumerHealth | None:
        if not data:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def is_healthy(health: ConsumerHealth | None, now_ms: int, settings: WatchSettings) -> bool:
    """A consumer that never sent a heartbeat is not held: it may simply not use the client
    API, and holding its retries forever would lose them in all but name."""
    if health is None:
        return True
    return health.status == HEALTHY and now_ms - health.last_seen_ms <= settings.stale_after_ms


def on_heartbeat(
    health: ConsumerHealth | None, group: str, status: str, events_processed: int, now_ms: int,
    control_id: str | None = None,
) -> ConsumerHealth:
    current = health or ConsumerHealth(group)
    return replace(current, status=status, events_processed=events_processed, last_seen_ms=now_ms,
                   control_id=control_id)


SAFE_MODE_RESTART = "safe_mode_restart"


def start_watch(health: ConsumerHealth | None, group: str, now_ms: int, *, reason: str,
                control_id: str | None = None, incident_id: str | None = None
                ) -> ConsumerHealth:
    """A watch started on purpose (Scenario 4: right after the restart-in-safe-mode
    command), not at the first unhealthy check. A repeated start of the same watch (a
    report processed again after a crash) keeps the watch already running."""
    current = health or ConsumerHealth(group, last_seen_ms=0)
    if current.watch_started_ms is not None and current.watch_control_id == control_id:
        return current
    return replace(current, watch_started_ms=now_ms, watch_replayed=False, watch_reason=reason,
                   watch_control_id=control_id, watch_incident_id=incident_id)


@dataclass(frozen=True)
class WatchOutcome:
    event_type: str | None  # lifecycle event to emit, if any
    health: ConsumerHealth
    replay_dead_letters: bool = False


CONFIRMED = lifecycle.CONSUMER_RECOVERY_CONFIRMED
DEGRADED = lifecycle.CONSUMER_DEGRADED
UNHEALTHY = lifecycle.CONSUMER_UNHEALTHY
ESCALATED = lifecycle.ESCALATED


def check(health: ConsumerHealth, now_ms: int, settings: WatchSettings) -> WatchOutcome:
    """One periodic check. A watch starts when the consumer is first seen unhealthy. When it
    is healthy again its dead letters are replayed to it (once); the watch ends confirmed
    when it is healthy and has processed events (the source's rule), degraded when the window
    closes with it up but idle, and escalated when the window closes with it still down."""
    healthy = is_healthy(health, now_ms, settings)
    if health.watch_started_ms is None:
        if healthy:
            return WatchOutcome(None, health)
        watched = replace(health, watch_started_ms=now_ms, watch_replayed=False)
        return WatchOutcome(UNHEALTHY, watched)
    replay = healthy and not health.watch_replayed
    current = replace(health, watch_replayed=True) if replay else health
    ended = replace(health, watch_started_ms=None, watch_replayed=False, watch_reason=None,
                    watch_control_id=None, watch_incident_id=None)
    if health.watch_reason == SAFE_MODE_RESTART:
        # The source's monitorConsumerRecovery: failed again -> escalate at once; confirmed
        # only by a consumer that has restarted (it reports obeying the restart command,
        # and its event count starts again from zero) and processed events since.
        if health.status == FAILED:
            return WatchOutcome(ESCALATED, ended)
        restarted = health.control_id == health.watch_control_id
        if healthy and restarted and health.events_processed > 0:
            return WatchOutcome(CONFIRMED, ended, replay_dead_letters=replay)
    elif healthy and health.events_processed > 0:
        return WatchOutcome(CONFIRMED, ended, replay_dead_letters=replay)
    if now_ms - health.watch_started_ms >= settings.window_ms:
        return WatchOutcome(DEGRADED if healthy else ESCALATED, ended)
    return WatchOutcome(None, current, replay_dead_letters=replay)
