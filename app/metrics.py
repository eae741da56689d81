"""Prometheus metrics of the worker, served on its web port at /metrics.

Counters count what this worker process did (lifecycle events it emitted); gauges for lag
and topic sizes are read from the last lag view at scrape time, so a group that disappears
stops being reported. Names follow Prometheus conventions: a ``recovery_`` namespace, base
units in the name (``_seconds``, ``_messages``), ``_total`` on counters.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app import lifecycle
from app.lag.status import Status
from app.lag.tracker import LagView

# The *_created series double every counter for little use here.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry(auto_describe=True)

FAILURE_EVENTS = Counter("recovery_failure_events", "Failure events received.",
                         registry=REGISTRY)
RETRIES_SCHEDULED = Counter("recovery_retries_scheduled", "Retries scheduled.",
                            registry=REGISTRY)
REDELIVERIES = Counter("recovery_redeliveries", "Records redelivered to a consumer.",
                       registry=REGISTRY)
RECOVERIES_COMPLETED = Counter("recovery_recoveries_completed",
                               "Incidents that ended in recovery_completed.", registry=REGISTRY)
DEAD_LETTERS = Counter("recovery_dead_letters", "Incidents dead-lettered.", registry=REGISTRY)
POISON = Counter("recovery_poison", "Incidents quarantined in the poison topic.",
                 registry=REGISTRY)
ESCALATIONS = Counter("recovery_escalations", "Incidents and consumers escalated.",
                      registry=REGISTRY)
LIFECYCLE_EVENTS = Counter("recovery_lifecycle_events", "Lifecycle events emitted, by type.",
                           ["event_type"], registry=REGISTRY)
FRAGMENT_SETS_IN_PROGRESS = Gauge(
    "recovery_fragment_sets_in_progress",
    "Fragmented messages whose fragments have not all arrived yet.", registry=REGISTRY)
LAG_COLLECTION_SECONDS = Gauge("recovery_lag_collection_duration_seconds",
                               "How long the last lag snapshot took.", registry=REGISTRY)
LAG_COLLECTION_ERRORS = Counter("recovery_lag_collection_errors",
                                "Lag snapshots that failed.", registry=REGISTRY)

# What each counted event type increments (besides recovery_lifecycle_events_total).
BY_EVENT_TYPE: dict[str, Counter] = {
    lifecycle.FAILURE_RECEIVED: FAILURE_EVENTS,
    lifecycle.RETRY_SCHEDULED: RETRIES_SCHEDULED,
    lifecycle.REDELIVERED: REDELIVERIES,
    lifecycle.RECOVERY_COMPLETED: RECOVERIES_COMPLETED,
    lifecycle.DEAD_LETTERED: DEAD_LETTERS,
    lifecycle.POISONED: POISON,
    lifecycle.ESCALATED: ESCALATIONS,
}

# The last lifecycle events this worker emitted, newest last, for the web page.
RECENT_EVENTS: deque[dict[str, Any]] = deque(maxlen=50)


def observe_lifecycle_event(event: dict[str, Any]) -> None:
    """Called for every lifecycle event the worker emits (Pipeline.emit)."""
    event_type = event["event_type"]
    LIFECYCLE_EVENTS.labels(event_type).inc()
    counter = BY_EVENT_TYPE.get(event_type)
    if counter is not None:
        counter.inc()
    RECENT_EVENTS.append({key: event.get(key) for key in (
        "event_type", "incident_id", "occurred_at", "attempt", "outcome")})


def total(counter: Counter) -> int:
    """The current value of an unlabelled counter."""
    return int(next(s.value for s in counter.collect()[0].samples if s.name.endswith("_total")))


def set_fragment_sets_in_progress(count: int) -> None:
    """For the fragment reassembly: how many fragment sets are open now."""
    FRAGMENT_SETS_IN_PROGRESS.set(count)


class LagMetrics(Collector):
    """Lag gauges from the last view, produced at scrape time."""

    def __init__(self, view: Callable[[], LagView | None]):
        self.view = view

    def describe(self) -> list:
        return []  # no fixed set: series come and go with the groups

    def collect(self) -> Iterator[GaugeMetricFamily]:
        view = self.view()
        if view is None:
            return
        labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily("recovery_consumer_lag_messages",
                                "Offset lag: end offset minus committed offset.", labels=labels)
        time_lag = GaugeMetricFamily(
            "recovery_consumer_lag_seconds",
            "Estimated time lag: how long ago the end of the log was at the committed offset.",
            labels=labels)
        committed = GaugeMetricFamily("recovery_consumer_committed_offset",
                                      "Committed offset of the group.", labels=labels)
        end = GaugeMetricFamily("recovery_partition_end_offset",
                                "End offset (high watermark) of the partition.",
                                labels=["topic", "partition"])
        group_lag = GaugeMetricFamily("recovery_consumer_group_lag_messages",
                                      "Offset lag summed over the group's partitions.",
                                      labels=["group"])
        group_time_lag = GaugeMetricFamily("recovery_consumer_group_lag_seconds",
                                           "Largest estimated time lag of the group.",
                                           labels=["group"])
        status = GaugeMetricFamily(
            "recovery_consumer_group_status",
            "Group status by the lag rules: 1 for the group's current status, 0 for the others.",
            labels=["group", "status"])
        status_code = GaugeMetricFamily(
            "recovery_consumer_group_status_code",
            "Group status as a number: 0 OK, 1 WARN, 2 ERR, 3 STOP, 4 STALL, 5 REWIND.",
            labels=["group"])
        ends_seen: set[tuple[str, int]] = set()
        for group in view.groups:
            group_lag.add_metric([group.group], group.total_lag)
            if group.max_time_lag_s is not None:
                group_time_lag.add_metric([group.group], group.max_time_lag_s)
            for each in Status:
                status.add_metric([group.group, each.value], 1.0 if each is group.status else 0.0)
            status_code.add_metric([group.group], group.status.code)
            for row in group.partitions:
                key = [row.group, row.topic, str(row.partition)]
                committed.add_metric(key, row.committed)
                if row.lag is not None:
                    lag.add_metric(key, row.lag)
                if row.time_lag_s is not None:
                    time_lag.add_metric(key, row.time_lag_s)
                if row.end is not None and (row.topic, row.partition) not in ends_seen:
                    ends_seen.add((row.topic, row.partition))
                    end.add_metric([row.topic, str(row.partition)], row.end)
        yield from (lag, time_lag, committed, end, group_lag, group_time_lag, status,
                    status_code)
        stored = GaugeMetricFamily("recovery_topic_messages",
                                   "Records a topic holds now (end minus start offsets).",
                                   labels=["topic"])
        for topic, size in sorted(view.topic_sizes.items()):
            stored.add_metric([topic], size)
        yield stored


_lag_collector: LagMetrics | None = None


def register_lag(view: Callable[[], LagView | None]) -> LagMetrics:
    """Export the lag gauges from ``view`` (replacing an earlier app's, in tests)."""
    global _lag_collector
    if _lag_collector is not None:
        REGISTRY.unregister(_lag_collector)
    _lag_collector = LagMetrics(view)
    REGISTRY.register(_lag_collector)
    return _lag_collector


def render() -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(REGISTRY)
