"""Prometheus metrics (app/metrics.py): names by convention, values from the lag view and the
lifecycle events, and the Grafana dashboard asks only for metrics the worker exports."""

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.contracts import lifecycle
from app.lag.collect import GroupOffsets, Snapshot
from app.lag.tracker import LagTracker
from app.worker import metrics

REPO = Path(__file__).resolve().parents[3]


def lagging_view():
    """Two snapshots of a group without members, 3 into a log whose end went 5 -> 10."""
    tracker = LagTracker()
    for at_ms, end in ((0, 5), (10_000, 10)):
        view = tracker.observe(Snapshot(
            at_ms, {"billing": GroupOffsets("billing", "EMPTY", False, {("orders", 0): 3})},
            {("orders", 0): end}, {"recovery.dlq": 4, "recovery.poison": 1}))
    return view


def test_lag_gauges_come_from_the_view():
    view = lagging_view()
    metrics.register_lag(lambda: view)
    text = metrics.render().decode()
    assert 'recovery_consumer_lag_messages{group="billing",partition="0",topic="orders"} 7.0' \
        in text
    assert 'recovery_consumer_group_status{group="billing",status="STOP"} 1.0' in text
    assert 'recovery_consumer_group_status{group="billing",status="OK"} 0.0' in text
    assert 'recovery_consumer_group_status_code{group="billing"} 3.0' in text
    assert 'recovery_topic_messages{topic="recovery.dlq"} 4.0' in text
    # the end was at 3 four seconds before the first snapshot, 14 s before the second
    assert 'recovery_consumer_lag_seconds{group="billing",partition="0",topic="orders"} 14.0' \
        in text


def test_lifecycle_events_count_by_type_and_outcome():
    before = metrics.total(lifecycle.ESCALATED), metrics.total(lifecycle.RETRY_SCHEDULED)
    for event_type in (lifecycle.ESCALATED, lifecycle.RETRY_SCHEDULED, lifecycle.RETRY_SCHEDULED):
        metrics.observe_lifecycle_event(lifecycle.lifecycle_event(event_type, "inc-1"))
    assert metrics.total(lifecycle.ESCALATED) == before[0] + 1
    assert metrics.total(lifecycle.RETRY_SCHEDULED) == before[1] + 2
    text = metrics.render().decode()
    assert f"recovery_escalations_total {before[0] + 1}.0" in text
    assert ('recovery_lifecycle_events_total{event_type="recovery/retry_scheduled"} '
            f"{before[1] + 2}.0") in text
    assert metrics.RECENT_EVENTS[-1]["event_type"] == lifecycle.RETRY_SCHEDULED
    metrics.set_fragment_sets_in_progress(3)
    assert "recovery_fragment_sets_in_progress 3.0" in metrics.render().decode()


def test_names_follow_prometheus_conventions():
    view = lagging_view()
    metrics.register_lag(lambda: view)
    for family in text_string_to_metric_families(metrics.render().decode()):
        assert family.name.startswith("recovery_")
        assert re.fullmatch(r"[a-z_]+", family.name)
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
        if "lag" in family.name and family.type == "gauge" and "status" not in family.name:
            assert family.name.endswith(("_messages", "_seconds", "_offset"))


def test_grafana_dashboard_asks_only_for_exported_metrics():
    view = lagging_view()
    metrics.register_lag(lambda: view)
    for event_type in metrics.COUNTED:
        metrics.observe_lifecycle_event(lifecycle.lifecycle_event(event_type, "x"))
    names = {s.name for f in text_string_to_metric_families(metrics.render().decode())
             for s in f.samples}
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/recovery.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"recovery_[a-z_]+", target["expr"])}
    assert asked and asked <= names, asked - names
