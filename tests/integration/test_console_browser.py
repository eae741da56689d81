"""The console in headless Chromium (Debian's package, driven by Playwright) against a live
worker and a real broker: filter the dead letters, open one, preview its replay, confirm it,
watch the replay's progress end, and see the record reach its consumer and the incident
complete. With RECOVERY_SCREENSHOTS_DIR set, a screenshot of each page is written there
(docs/screenshots holds a set made so)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration import test_web_dead_letters as shared
from tests.integration.test_web_dead_letters import (
    Client,
    ConsumerThread,
    create_topics,
    events_of,
    report_failures,
    up,
)

pytestmark = pytest.mark.integration
console_env = shared.console_env  # the fixture: a worker that dead-letters at once

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_filter_open_preview_confirm_and_see_the_record_arrive_and_the_incident_complete(
        console_env, worker_factory, topic_prefix):
    from playwright.sync_api import sync_playwright

    shots = os.environ.get("RECOVERY_SCREENSHOTS_DIR")
    shots_dir = Path(shots) if shots else None
    if shots_dir:
        shots_dir.mkdir(parents=True, exist_ok=True)
    env, prefix = console_env, topic_prefix
    port = env["RECOVERY_WEB_PORT"]
    client = Client(port)
    group, mail = f"{prefix}mailer", f"{prefix}mail"
    create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], mail)
    worker = worker_factory()
    assert Path(CHROMIUM).exists(), "chromium is missing: run scripts/setup"
    with ConsumerThread(env, group, mail) as consumer, sync_playwright() as playwright:
        report_failures(env, group, mail, ["c1", "c2", "c3"])
        report_failures(env, f"{prefix}other", mail, ["d1", "d2"])
        assert wait_until(lambda: up(client), 90), worker.log_tail()
        assert wait_until(lambda: len(client.get("/api/dead-letters")[1]
                                      .get("records", [])) == 5, 90), worker.log_tail()
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def shot(name: str) -> None:
                if shots_dir:
                    page.screenshot(path=str(shots_dir / f"{name}.png"), full_page=True)

            page.goto(f"http://127.0.0.1:{port}/dead-letters")
            assert page.locator("tr.record").count() == 5
            # filter: this consumer group's dead letters only
            page.fill("#filter-group", group)
            page.click("#filter-apply")
            page.wait_for_url("**/dead-letters?*")
            rows = page.locator("tr.record")
            assert rows.count() == 3
            assert set(page.locator("tr.record td.group").all_inner_texts()) == {group}
            assert sorted(page.locator("tr.record td.key").all_inner_texts()) == [
                "c1", "c2", "c3"]
            shot("dead-letters")

            # open one: its key, value, every header, the reason, the incident's link
            # By its key cell: the row's other cells hold the random topic prefix, which may
            # contain "c2" too (a clean-clone gate's did, and the locator found three rows).
            row = page.locator("tr.record").filter(
                has=page.locator("td.key", has_text=re.compile(r"^c2$")))
            row.locator("a.open").click()
            page.wait_for_selector("#record-meta")
            record_path = page.url.split(str(port), 1)[1]
            assert page.inner_text("#record-key") == "c2"
            assert page.inner_text("#value-kind") == "hex"  # c2's value is binary
            names = page.locator("#headers td.name").all_inner_texts()
            assert "trace" in names and "recovery.incident.id" in names
            assert "recovery.reason" in names
            assert page.inner_text("#reason") != "-"
            assert page.get_attribute("#incident-link", "href") == "/incidents/inc-c2"
            shot("dead-letter-record")

            # preview its replay (a dry run), then confirm it
            page.select_option("#replay-to", "incident")
            page.click("#preview-record")
            page.wait_for_selector("#preview-would-send")
            assert page.inner_text("#preview-matched") == "1"
            assert page.inner_text("#preview-would-send") == "1"
            assert consumer.handled == []
            shot("replay-preview")
            page.check("#confirm")
            page.click("#start-replay")
            page.wait_for_url("**/replays/*")
            page.wait_for_selector('body[data-replay-state="done"]', timeout=60_000)
            assert page.inner_text("#replay-sent") == "1"
            assert page.inner_text("#replay-remaining") == "0"
            shot("replay-progress")

            # the record reached its consumer, and the incident completed
            assert wait_until(lambda: [k for k, _ in consumer.handled] == [b"c2"], 60), \
                worker.log_tail()
            assert wait_until(lambda: ("inc-c2", "recovery/recovery_completed")
                              in events_of(client), 60), worker.log_tail()
            # the record view's link leads to the incident's history: completed now
            page.goto(f"http://127.0.0.1:{port}{record_path}")
            page.click("#incident-link")
            page.wait_for_url("**/incidents/inc-c2")

            def incident_completed() -> bool:
                page.reload()
                state = page.locator("#incident-state")
                return state.count() == 1 and state.inner_text() == "completed"

            assert wait_until(incident_completed, 30, interval=1), page.content()[-2000:]
            shot("incident")
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector('#events tr.event[data-incident="inc-c2"]', state="attached")
            completed = page.eval_on_selector_all(
                '#events tr.event[data-incident="inc-c2"] .event-type',
                "cells => cells.map(c => c.textContent)")
            assert "recovery/recovery_completed" in completed
            shot("overview")

            page.goto(f"http://127.0.0.1:{port}/poison")
            page.wait_for_selector("#records")
            shot("poison")
        finally:
            browser.close()
    assert [k for k, _ in consumer.handled] == [b"c2"]
