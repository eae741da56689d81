"""The worker's overview page in headless Chromium (Debian's package, driven by Playwright)
against a live worker and a real broker: the numbers it shows are the ones the test made."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from app.client import FailureReporter
from app.settings import Settings
from tests.conftest import wait_until
from tests.integration.lag_setup import commit, make_topic

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STRAIGHT_TO_DLQ = """
[[classification]]
error_types = ["unprocessable_now"]
severity = "ERROR"
category = "test"
type = "straight_to_dlq"
recoverability = "recoverable"

[retry.straight_to_dlq]
attempts = 0
on_exhausted = "dead_letter"
"""


def get(port: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read()


def overview(port: str) -> dict:
    try:
        return json.loads(get(port, "/api/overview"))
    except OSError:
        return {}


@pytest.fixture
def web_env(applied_topics: dict[str, str], tmp_path) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    policy.write_text(STRAIGHT_TO_DLQ)
    applied_topics.update(RECOVERY_POLICY_FILE=str(policy), RECOVERY_LAG_INTERVAL_S="1",
                          RECOVERY_LAG_GROUPS=f"{applied_topics['RECOVERY_TOPIC_PREFIX']}*")
    return applied_topics


def add_dead_letter(env: dict[str, str], prefix: str, n: int) -> None:
    reporter = FailureReporter(Settings(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                                        topic_prefix=prefix))
    reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="unprocessable_now",
                    service="mailer", consumer_group=f"{prefix}mailer", work_item_id=f"dead-{n}",
                    failed_record={"topic": "mail", "partition": 0, "offset": n, "key": b"m",
                                   "value": b"v", "headers": []},
                    dispatch_target=f"{prefix}mailer.redelivery")
    reporter.flush()


def produce_known_failures(env: dict[str, str], prefix: str) -> None:
    """Two dead letters, one escalation, two records in the poison topic (one poisoned
    incident and one undecodable report)."""
    reporter = FailureReporter(Settings(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                                        topic_prefix=prefix))
    for n in (1, 2):
        reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="unprocessable_now",
                        service="mailer", consumer_group=f"{prefix}mailer",
                        work_item_id=f"dead-{n}",
                        failed_record={"topic": "mail", "partition": 0, "offset": n,
                                       "key": b"m", "value": b"v", "headers": []},
                        dispatch_target=f"{prefix}mailer.redelivery")
    reporter.report(kind="MCP_CONNECTION_LOST", error_type="authentication_failure",
                    service="agent", message="401", work_item_id="auth-1",
                    detail=("McpConnectionLost", {"server_id": "mcp-9", "auth_method": "token"}))
    reporter.report(kind="CONSUMER_CRASHED", error_type="out_of_memory", service="indexer",
                    severity="FATAL", work_item_id="fatal-1", consumer_group="indexers",
                    failed_record={"topic": "docs", "partition": 0, "offset": 5, "key": b"d",
                                   "value": b"huge", "headers": []},
                    dispatch_target="indexers.redelivery")
    reporter.flush()
    producer = Producer({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]})
    producer.produce(f"{prefix}recovery.failures", key=b"junk", value=b"not avro at all")
    producer.flush(10)


def test_overview_page_in_chromium_shows_what_the_test_produced(
    web_env, worker_factory, topic_prefix
):
    from playwright.sync_api import sync_playwright

    bootstrap, port = web_env["KAFKA_BOOTSTRAP_SERVERS"], web_env["RECOVERY_WEB_PORT"]
    topic, group = f"{topic_prefix}orders", f"{topic_prefix}billing"
    make_topic(bootstrap, topic, [9, 3])
    commit(bootstrap, group, topic, [4, 3])  # lag 5 on partition 0, none on 1
    worker = worker_factory()
    produce_known_failures(web_env, topic_prefix)

    def settled() -> bool:
        data = overview(port)
        return (data.get("dead_letters") == 2 and data.get("poison") == 2
                and data["counters"]["escalations"] == 1
                and len(data.get("history", {}).get(group, [])) >= 2)

    assert wait_until(settled, timeout=90, interval=0.5), (overview(port), worker.log_tail())

    assert Path(CHROMIUM).exists(), "chromium is missing: run scripts/setup"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            # The script drew the group's lag line from /api/overview.
            line = page.wait_for_selector(f'#lag-chart polyline[data-group="{group}"]',
                                          state="attached", timeout=15_000)
            assert line.get_attribute("data-last-lag") == "5"
            assert int(line.get_attribute("data-points")) >= 2
            text = page.inner_text
            assert text("#dead-letters") == "2"
            assert text("#poison") == "2"
            assert text("#escalations") == "1"
            row = f'tr.group[data-group="{group}"]'
            assert text(f"{row} .total-lag") == "5"
            assert text(f"{row} .status") == "STOP"
            assert text(f"{row} .state") == "EMPTY"
            p0 = f'tr.partition[data-group="{group}"][data-partition="0"]'
            assert text(f"{p0} .committed") == "4" and text(f"{p0} .end") == "9"
            assert text(f"{p0} .lag") == "5" and text(f"{p0} .status") == "STOP"
            p1 = f'tr.partition[data-group="{group}"][data-partition="1"]'
            assert text(f"{p1} .lag") == "0" and text(f"{p1} .status") == "OK"
            # Read in one go: the page replaces its content on every refresh.
            outcomes = {tuple(row) for row in page.eval_on_selector_all(
                "#events tr.event",
                "rows => rows.map(r => [r.dataset.incident,"
                " r.querySelector('.event-type').textContent])")}
            assert {("dead-1", "recovery/dead_lettered"), ("dead-2", "recovery/dead_lettered"),
                    ("auth-1", "recovery/escalated"),
                    ("fatal-1", "recovery/poisoned")} <= outcomes
            # The page refreshes itself (no reload): a dead letter added and lag reduced after
            # it loaded appear on it.
            page.evaluate("window.__sameDocument = true")
            add_dead_letter(web_env, topic_prefix, 3)
            commit(bootstrap, group, topic, [7, 3])  # lag 2 on partition 0
            page.wait_for_function(
                "() => document.querySelector('#dead-letters').textContent === '3'",
                timeout=60_000)
            page.wait_for_function(
                f"() => document.querySelector('{row} .total-lag').textContent === '2'",
                timeout=60_000)
            page.wait_for_selector('#events tr.event[data-incident="dead-3"]',
                                   state="attached", timeout=60_000)
            assert page.evaluate("window.__sameDocument") is True
        finally:
            browser.close()


def test_metrics_endpoint_exports_lag_status_and_counters(web_env, worker_factory,
                                                           topic_prefix):
    bootstrap, port = web_env["KAFKA_BOOTSTRAP_SERVERS"], web_env["RECOVERY_WEB_PORT"]
    topic, group = f"{topic_prefix}orders", f"{topic_prefix}billing"
    make_topic(bootstrap, topic, [6])
    commit(bootstrap, group, topic, [1])
    worker = worker_factory()
    produce_known_failures(web_env, topic_prefix)
    dlq = f"{topic_prefix}recovery.dlq"

    def scrape() -> str:
        try:
            return get(port, "/metrics").decode()
        except OSError:
            return ""

    labels = f'group="{group}",partition="0",topic="{topic}"'
    expected = [
        f"recovery_consumer_lag_messages{{{labels}}} 5.0",
        f"recovery_consumer_committed_offset{{{labels}}} 1.0",
        f'recovery_consumer_group_status_code{{group="{group}"}} 3.0',
        f'recovery_consumer_group_status{{group="{group}",status="STOP"}} 1.0',
        f'recovery_topic_messages{{topic="{dlq}"}} 2.0',
        "recovery_dead_letters_total 2.0",
        "recovery_poison_total 1.0",
        "recovery_escalations_total 1.0",
        "recovery_failure_events_total 4.0",
    ]
    assert wait_until(lambda: all(line in scrape().splitlines() for line in expected),
                      timeout=90, interval=0.5), (
        [line for line in expected if line not in scrape().splitlines()], worker.log_tail())
    text = scrape()
    assert "# TYPE recovery_retries_scheduled_total counter" in text
    assert "# TYPE recovery_fragment_sets_in_progress gauge" in text
    assert "# TYPE recovery_consumer_lag_seconds gauge" in text
