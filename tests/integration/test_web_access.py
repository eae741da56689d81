"""Web access on a real worker bound beyond loopback (0.0.0.0) with a viewer and an operator
token, against the real broker: who gets in, who may change something, and that a refused
request changed nothing (the incident-commands topic holds no command from it)."""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import uuid
from urllib.parse import quote, unquote, urlencode

import pytest
from confluent_kafka import Consumer, TopicPartition

from app.client import FailureReporter
from app.client.consumer import ensure_topic
from app.contracts import headers as h
from app.settings import Settings
from tests.conftest import wait_until
from tests.kafka_helpers import end_offsets

pytestmark = pytest.mark.integration

VIEWER = "viewer-" + uuid.uuid4().hex
OPERATOR = "operator-" + uuid.uuid4().hex


def call(port: str, method: str, path: str, headers: dict[str, str] | None = None,
         body: str | None = None) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def commands_since(bootstrap: str, topic: str, starts: dict[tuple[str, int], int]
                   ) -> list[tuple[bytes | None, list]]:
    """Every record of the commands topic from `starts` to its end now."""
    ends = end_offsets(bootstrap, [topic])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    found: list[tuple[bytes | None, list]] = []
    try:
        wanted = {tp: (starts.get(tp, 0), end) for tp, end in ends.items()
                  if end > starts.get(tp, 0)}
        consumer.assign([TopicPartition(t, p, lo) for (t, p), (lo, _) in wanted.items()])
        left = dict(wanted)
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            tp = (message.topic(), message.partition())
            if tp in left and message.offset() < left[tp][1]:
                found.append((message.key(), message.headers() or []))
                if message.offset() >= left[tp][1] - 1:
                    left.pop(tp)
        assert not left, f"could not read {left}"
        return found
    finally:
        consumer.close()


@pytest.fixture
def guarded_env(applied_topics: dict[str, str]) -> dict[str, str]:
    applied_topics.update(RECOVERY_WEB_HOST="0.0.0.0", RECOVERY_WEB_VIEWER_TOKEN=VIEWER,
                          RECOVERY_WEB_OPERATOR_TOKEN=OPERATOR,
                          # The redelivery waits for an acknowledgement the test gives.
                          RECOVERY_ACK_TIMEOUT_MS="600000")
    return applied_topics


def test_tokens_roles_and_csrf_on_a_worker_beyond_loopback(guarded_env, worker_factory,
                                                           topic_prefix):
    env, port = guarded_env, guarded_env["RECOVERY_WEB_PORT"]
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    group, incident = f"{topic_prefix}billing", f"acc-{uuid.uuid4().hex[:8]}"
    target = f"{group}.redelivery"
    commands = f"{topic_prefix}recovery.incident-commands"
    ensure_topic(bootstrap, target, partitions=1)
    worker = worker_factory()
    reporter = FailureReporter(Settings(kafka_bootstrap_servers=bootstrap,
                                        topic_prefix=topic_prefix))
    reporter.report(kind="PROCESSING_FAILED", error_type="handler_error", service="billing",
                    consumer_group=group, work_item_id=incident, message="boom",
                    failed_record={"topic": "orders", "partition": 0, "offset": 1, "key": b"o",
                                   "value": b"v", "headers": []},
                    dispatch_target=target)
    reporter.flush()
    api = f"/api/incidents/{quote(incident)}"

    def waiting_for_ack() -> bool:
        try:
            status, _, body = call(port, "GET", api, bearer(OPERATOR))
        except OSError:
            return False
        if status != 200:
            return False
        data = json.loads(body)
        types = [ev["event_type"] for ev in data["history"]["events"]]
        return (data["incident"] or {}).get("state") == "retrying" \
            and "recovery/redelivered" in types
    assert wait_until(waiting_for_ack, timeout=90, interval=0.5), worker.log_tail()

    # Who gets in.
    status, headers, _ = call(port, "GET", "/incidents")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
    assert call(port, "GET", "/api/overview", bearer("wrong-" + OPERATOR))[0] == 401
    assert call(port, "GET", "/metrics", basic("operator", VIEWER))[0] == 401
    assert call(port, "GET", "/", basic("viewer", VIEWER))[0] == 200
    status, _, metrics_text = call(port, "GET", "/metrics", bearer(VIEWER))
    assert status == 200 and "recovery_failure_events_total" in metrics_text
    status, headers, body = call(port, "GET", api, bearer(VIEWER))
    assert status == 200 and json.loads(body)["incident"]["state"] == "retrying"
    viewer_csrf = headers["X-CSRF-Token"]
    status, _, listing = call(port, "GET", "/api/incidents", bearer(VIEWER))
    assert incident in {r["incident_id"] for r in json.loads(listing)["incidents"]}
    # The viewer's page has no resolve button; the operator's has, with its CSRF field.
    status, _, page = call(port, "GET", f"/incidents/{quote(incident)}", basic("viewer", VIEWER))
    assert status == 200 and 'id="acknowledge"' not in page
    status, headers, page = call(port, "GET", f"/incidents/{quote(incident)}",
                                 basic("operator", OPERATOR))
    assert status == 200 and 'id="acknowledge"' in page
    [csrf] = re.findall(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert csrf == headers["X-CSRF-Token"] and csrf != viewer_csrf

    # Refused changes: before them, the end of the commands topic.
    starts = end_offsets(bootstrap, [commands])
    ack = f"/incidents/{quote(incident)}/acknowledge"
    origin = {"Origin": f"http://127.0.0.1:{port}"}
    refused = [
        (401, {**FORM, **origin}, {"csrf_token": csrf}),                     # no credential
        (401, {**FORM, **origin, **bearer("x" * 20)}, {"csrf_token": csrf}),  # a wrong one
        (403, {**FORM, **origin, **basic("viewer", VIEWER)}, {"csrf_token": viewer_csrf}),
        (403, {**FORM, **origin, **basic("operator", OPERATOR)}, {}),         # no CSRF token
        (403, {**FORM, **origin, **basic("operator", OPERATOR)}, {"csrf_token": viewer_csrf}),
        (403, {**FORM, "Origin": "http://evil.example", **basic("operator", OPERATOR)},
         {"csrf_token": csrf}),
        (403, {**FORM, "Sec-Fetch-Site": "cross-site", **bearer(OPERATOR)},
         {"csrf_token": csrf}),
    ]
    for expected, headers, form in refused:
        status, _, body = call(port, "POST", ack, headers, urlencode(form))
        assert status == expected, (headers, form, status, body)

    # The operator's form post from the page: accepted, the ack command sent.
    status, headers, _ = call(port, "POST", ack,
                              {**FORM, **origin, "Sec-Fetch-Site": "same-origin",
                               **basic("operator", OPERATOR)}, urlencode({"csrf_token": csrf}))
    assert status == 303 and unquote(headers["Location"]) == f"/incidents/{incident}"

    def completed() -> bool:
        status, _, body = call(port, "GET", api, bearer(VIEWER))
        data = json.loads(body) if status == 200 else {}
        return (data.get("incident") or {}).get("state") == "completed" and \
            data["history"]["events"][-1]["event_type"] == "recovery/recovery_completed"
    assert wait_until(completed, timeout=60, interval=0.5), worker.log_tail()

    # Nothing the refused requests asked for happened: the one command since is the
    # accepted one (all of the incident's commands share its partition, in order).
    sent = commands_since(bootstrap, commands, starts)
    mine = [hs for key, hs in sent if key == incident.encode()]
    assert len(mine) == 1, sent
    assert h.header_value(mine[0], h.COMMAND) == "ack"

    # A second resolve of a completed incident changes nothing either.
    status, _, _ = call(port, "POST", ack.replace("/incidents", "/api/incidents"),
                        {"X-CSRF-Token": csrf, **bearer(OPERATOR)})
    assert status == 409
