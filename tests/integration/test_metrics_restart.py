"""The metrics counters live in the worker's Faust table: a worker restarted with an empty
data dir (so it must restore the table from its changelog) reports the counts of its
predecessor and counts on from there."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.client import FailureReporter
from app.settings import Settings
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def counter(port: str, name: str) -> float | None:
    """A counter's value on the worker's /metrics, or None while the page is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    return None


def test_counters_survive_a_restart_and_count_on(applied_topics, worker_factory, tmp_path):
    env = applied_topics
    settings = Settings(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=env["RECOVERY_TOPIC_PREFIX"])
    port = env["RECOVERY_WEB_PORT"]
    reporter = FailureReporter(settings)

    def report(n: int, tag: str) -> None:
        for i in range(n):
            # Non-recoverable: escalated on arrival, one incident each.
            reporter.report(kind="MCP_CONNECTION_LOST", error_type="authentication_failure",
                            service="metrics-test", work_item_id=f"{tag}-{i}")
        reporter.flush()

    seen: list[tuple[float | None, float | None]] = []

    def counts(escalations: float) -> bool:
        """Whether the page shows `escalations`; every distinct pair of counters read is kept
        for the failure message (a restart that recounts shows up as a count past it)."""
        now = (counter(port, "recovery_escalations_total"),
               counter(port, "recovery_failure_events_total"))
        if not seen or seen[-1] != now:
            seen.append(now)
        return now[0] == escalations

    report(5, "before")
    worker = worker_factory()
    assert wait_until(lambda: counts(5.0), 120), (seen, worker.log_tail())
    assert counter(port, "recovery_failure_events_total") == 5.0
    worker.stop()

    env["RECOVERY_DATA_DIR"] = str(tmp_path / "fresh-data")
    restarted = worker_factory()
    # Restored, not recounted: the five earlier incidents are not handled again.
    seen.clear()
    assert wait_until(lambda: counts(5.0), 120), (seen, restarted.log_tail())
    report(2, "after")
    assert wait_until(lambda: counts(7.0), 60), (seen, restarted.log_tail())
    assert counter(port, "recovery_failure_events_total") == 7.0
