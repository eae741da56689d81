"""What the page and /api/overview show, as one plain dictionary built from the lag view,
the lag history, this worker's counters and its recent lifecycle events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.contracts import lifecycle
from app.lag.tracker import LagView
from app.worker import metrics


def overview(view: LagView | None, history: Mapping[str, Iterable[tuple[int, int]]], *,
             dlq_topic: str, poison_topic: str,
             recent: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    sizes = view.topic_sizes if view else {}
    return {
        "taken_at_ms": view.taken_at_ms if view else None,
        "dead_letters": sizes.get(dlq_topic),
        "poison": sizes.get(poison_topic),
        "dlq_topic": dlq_topic,
        "poison_topic": poison_topic,
        "counters": {
            "failure_events": metrics.total(lifecycle.FAILURE_RECEIVED),
            "retries_scheduled": metrics.total(lifecycle.RETRY_SCHEDULED),
            "recoveries_completed": metrics.total(lifecycle.RECOVERY_COMPLETED),
            "dead_lettered": metrics.total(lifecycle.DEAD_LETTERED),
            "poisoned": metrics.total(lifecycle.POISONED),
            "escalations": metrics.total(lifecycle.ESCALATED),
        },
        "groups": [{
            "group": g.group,
            "state": g.state,
            "status": g.status.value,
            "total_lag": g.total_lag,
            "max_time_lag_s": g.max_time_lag_s,
            "partitions": [{
                "topic": p.topic, "partition": p.partition, "committed": p.committed,
                "end": p.end, "lag": p.lag, "time_lag_s": p.time_lag_s,
                "status": p.status.value,
            } for p in g.partitions],
        } for g in (view.groups if view else [])],
        "history": {group: [[at, lag] for at, lag in points]
                    for group, points in history.items()},
        "recent_events": list(reversed(list(recent))),
        # From this worker's last watchdog scan of the partitions it holds.
        "open_incidents": {state: {"count": count, "oldest_s": round(oldest, 1)}
                           for state, (count, oldest) in sorted(metrics.OPEN_BY_STATE.items())},
        "errors": list(view.errors) if view else [],
    }
