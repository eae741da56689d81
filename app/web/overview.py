"""What the page and /api/overview show, as one plain dictionary built from the lag view,
the lag history, this worker's counters and its recent lifecycle events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app import metrics
from app.lag.tracker import LagView


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
            "failure_events": metrics.total(metrics.FAILURE_EVENTS),
            "retries_scheduled": metrics.total(metrics.RETRIES_SCHEDULED),
            "recoveries_completed": metrics.total(metrics.RECOVERIES_COMPLETED),
            "dead_lettered": metrics.total(metrics.DEAD_LETTERS),
            "poisoned": metrics.total(metrics.POISON),
            "escalations": metrics.total(metrics.ESCALATIONS),
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
        "errors": list(view.errors) if view else [],
    }
