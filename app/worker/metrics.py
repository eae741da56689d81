"""Prometheus metrics of the worker, served on its web port at /metrics.

Counters count the lifecycle events the worker emitted, kept in a Faust table by the input
partition they came from (app/lifecycle_counts.py): they survive a restart and move with
their partitions, so summing a counter over all workers gives the cluster's total. Gauges for lag
and topic sizes are read from the last lag view at scrape time, so a group that disappears
stops being reported. Names follow Prometheus conventions: a ``recovery_`` namespace, base
units in the name (``_seconds``, ``_messages``), ``_total`` on counters.
"""

from __future__ import annotations

from collections import Counter as CounterOf
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.contracts import lifecycle
from app.lag.status import Status
from app.lag.tracker import LagView

# The *_created series double every counter for little use here.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry(auto_describe=True)

FRAGMENT_SETS_IN_PROGRESS = Gauge(
    "recovery_fragment_sets_in_progress",
    "Fragmented messages whose fragments have not all arrived yet.", registry=REGISTRY)
LAG_COLLECTION_SECONDS = Gauge("recovery_lag_collection_duration_seconds",
                               "How long the last lag snapshot took.", registry=REGISTRY)
LAG_COLLECTION_ERRORS = Counter("recovery_lag_collection_errors",
                                "Lag snapshots that failed.", registry=REGISTRY)
OPEN_INCIDENTS = Gauge("recovery_open_incidents",
                       "Incidents not yet terminal on this worker's partitions, by state.",
                       ["state"], registry=REGISTRY)
OPEN_INCIDENT_AGE = Gauge("recovery_open_incident_oldest_seconds",
                          "Age of the oldest open incident by state (since its last change).",
                          ["state"], registry=REGISTRY)
WATCHDOG_CHECKS = Counter("recovery_watchdog_checks",
                          "Overdue incidents the watchdog sent for a decision.",
                          registry=REGISTRY)

OUTPUT_DELIVERY_FAILURES = Counter(
    "recovery_output_delivery_failures",
    "Outputs the broker refused (sent again; their input stays uncommitted meanwhile).",
    ["topic"], registry=REGISTRY)
COMMIT_REPAIRS = Gauge(
    "recovery_commit_repairs",
    "Input partitions whose stuck commit the worker repaired, by kind (commit_ahead: Faust "
    "believed an offset committed that the group did not have; raise_to_group: Faust's "
    "committed offset was stale below the group's; read_again: a hole read again).",
    ["kind"], registry=REGISTRY)
OUTPUTS_UNDELIVERED = Gauge(
    "recovery_outputs_undelivered_messages",
    "Refused outputs waiting to be sent again (their batch's input is held).",
    registry=REGISTRY)

# The last watchdog scan: state -> (count, oldest age in seconds), for the page.
OPEN_BY_STATE: dict[str, tuple[int, float]] = {}


def set_open_incidents(by_state: dict[str, tuple[int, float]]) -> None:
    for state in set(OPEN_BY_STATE) - set(by_state):
        OPEN_INCIDENTS.labels(state).set(0)
        OPEN_INCIDENT_AGE.labels(state).set(0)
    for state, (count, oldest_s) in by_state.items():
        OPEN_INCIDENTS.labels(state).set(count)
        OPEN_INCIDENT_AGE.labels(state).set(oldest_s)
    OPEN_BY_STATE.clear()
    OPEN_BY_STATE.update(by_state)

# The counters by event type: name (``_total`` is added on export) and help text. Each is
# also counted in recovery_lifecycle_events_total{event_type=...}.
COUNTED: dict[str, tuple[str, str]] = {
    lifecycle.FAILURE_RECEIVED: ("recovery_failure_events", "Failure events received."),
    lifecycle.RETRY_SCHEDULED: ("recovery_retries_scheduled", "Retries scheduled."),
    lifecycle.REDELIVERED: ("recovery_redeliveries", "Records redelivered to a consumer."),
    lifecycle.RECOVERY_COMPLETED: ("recovery_recoveries_completed",
                                   "Incidents that ended in recovery_completed."),
    lifecycle.DEAD_LETTERED: ("recovery_dead_letters", "Incidents dead-lettered."),
    lifecycle.POISONED: ("recovery_poison", "Incidents quarantined in the poison topic."),
    lifecycle.ESCALATED: ("recovery_escalations", "Incidents and consumers escalated."),
}


class LifecycleCounts(Protocol):
    """Where the lifecycle-event counts are kept: this process's memory by default, the
    worker's Faust table (app/lifecycle_counts.py) once the worker installs it."""

    def add(self, event_type: str) -> None: ...

    def totals(self) -> Mapping[str, int]: ...


class MemoryCounts:
    def __init__(self) -> None:
        self.counts: CounterOf[str] = CounterOf()

    def add(self, event_type: str) -> None:
        self.counts[event_type] += 1

    def totals(self) -> Mapping[str, int]:
        return self.counts


_counts: LifecycleCounts = MemoryCounts()


def use_counts(counts: LifecycleCounts) -> None:
    global _counts
    _counts = counts


# The last lifecycle events this worker emitted, newest last, for the web page.
RECENT_EVENTS: deque[dict[str, Any]] = deque(maxlen=50)


def observe_lifecycle_event(event: dict[str, Any]) -> None:
    """Called for every lifecycle event the worker emits (Pipeline.emit)."""
    _counts.add(event["event_type"])
    RECENT_EVENTS.append({key: event.get(key) for key in (
        "event_type", "incident_id", "occurred_at", "attempt", "outcome")})


def total(event_type: str) -> int:
    """How many lifecycle events of this type were counted."""
    return int(_counts.totals().get(event_type, 0))


class LifecycleMetrics(Collector):
    """The lifecycle counters, read from the counts at scrape time."""

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        counts = _counts.totals()
        for event_type, (name, text) in COUNTED.items():
            yield CounterMetricFamily(name, text, value=counts.get(event_type, 0))
        by_type = CounterMetricFamily("recovery_lifecycle_events",
                                      "Lifecycle events emitted, by type.",
                                      labels=["event_type"])
        for event_type, n in sorted(counts.items()):
            by_type.add_metric([event_type], n)
        yield by_type


REGISTRY.register(LifecycleMetrics())


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


def register_undelivered(count: Callable[[], int]) -> None:
    """The undelivered-outputs gauge reads `count` at scrape time."""
    OUTPUTS_UNDELIVERED.set_function(count)


def register_commit_repairs(repairs: dict[str, int]) -> None:
    """The commit-repair gauges read `repairs` (kind -> count so far) at scrape time."""
    for kind in repairs:
        COMMIT_REPAIRS.labels(kind).set_function(lambda kind=kind: repairs[kind])


def render() -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(REGISTRY)
