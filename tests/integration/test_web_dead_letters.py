"""The console's dead-letter pages and replays from the page, against a live worker and a real
broker, through its JSON twins: filters, paging that reads a page's worth and not the topic,
the record view with every header, a dry-run preview that sends nothing, and a confirmed
replay that reaches the consumer, completes its incidents and, started again, sends nothing."""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.client import FailureReporter
from app.client.consumer import RecoveringConsumer
from app.contracts import headers as h
from app.kafka.dead_letters import read_dead_letters
from app.replay.selection import iso
from app.settings import Settings
from tests.conftest import run_cli, wait_until
from tests.integration.test_pipeline import STRAIGHT_TO_DLQ

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


class Client:
    """HTTP as a browser does it: cookies kept, the page's CSRF token sent with every POST."""

    def __init__(self, port: str):
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def call(self, method: str, path: str, form: list[tuple[str, str]] | None = None
             ) -> tuple[int, Any]:
        data = None
        headers = {"Origin": self.base}
        if form is not None:
            data = urllib.parse.urlencode([*form, ("csrf_token", self.token)]).encode()
            headers.update({"Content-Type": "application/x-www-form-urlencoded",
                            "X-CSRF-Token": self.token})
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        try:
            with self.opener.open(request, timeout=60) as response:
                status, body, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, body, kind = exc.code, exc.read(), exc.headers
        if "json" in (kind.get("Content-Type") or ""):
            return status, json.loads(body)
        return status, body.decode(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        status, body = self.call("GET", path)
        if isinstance(body, str):
            found = re.search(r'name="csrf-token" content="([^"]*)"', body)
            if found:
                self.token = found.group(1)
        return status, body

    def post(self, path: str, form: list[tuple[str, str]]) -> tuple[int, Any]:
        if not self.token:
            self.get("/dead-letters")
        return self.call("POST", path, form)


def up(client: Client) -> bool:
    try:
        return client.get("/api/overview")[0] == 200
    except OSError:
        return False


@pytest.fixture
def console_env(applied_topics: dict[str, str], tmp_path) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    policy.write_text(STRAIGHT_TO_DLQ)
    applied_topics.update(RECOVERY_POLICY_FILE=str(policy), RECOVERY_LAG_INTERVAL_S="1")
    return applied_topics


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                    topic_prefix=env["RECOVERY_TOPIC_PREFIX"])


def create_topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, 3) for n in names]).values():
        future.result()
    assert wait_until(lambda: all(n in admin.list_topics(timeout=5).topics for n in names), 10)


def report_failures(env: dict[str, str], group: str, topic: str, keys: list[str]) -> None:
    """Failures the worker dead-letters at once (policy: no retry), one incident each."""
    reporter = FailureReporter(settings_of(env))
    for n, key in enumerate(keys):
        value = (json.dumps({"order": key, "amount": n}).encode() if n % 2 == 0
                 else bytes([0xff, 0x00, n]))
        reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="unprocessable_now",
                        service="mailer", consumer_group=group, work_item_id=f"inc-{key}",
                        message=f"mail server refused {key}",
                        failed_record={"topic": topic, "partition": 0, "offset": n,
                                       "key": key.encode(), "value": value,
                                       "headers": [{"key": "trace",
                                                    "value": f"tr-{key}".encode()}]},
                        dispatch_target=f"{group}.redelivery")
    reporter.flush()


def produce_dead_letters(env: dict[str, str], specs: list[tuple[str, str, str, str, int]]
                         ) -> None:
    """Dead letters written straight to the DLQ: (original topic, group, error type, key,
    timestamp ms)."""
    dlq = f"{env['RECOVERY_TOPIC_PREFIX']}recovery.dlq"
    producer = Producer({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"],
                         "partitioner": "murmur2_random"})
    for i, (topic, group, error, key, ts) in enumerate(specs):
        producer.produce(dlq, key=key.encode(), value=f"value-{i}".encode(), timestamp=ts,
                         headers=[(h.ORIGINAL_TOPIC, topic.encode()),
                                  (h.CONSUMER_GROUP, group.encode()),
                                  (h.ERROR_TYPE, error.encode()),
                                  (h.REASON, b"retries exhausted")])
    assert producer.flush(30) == 0


def all_pages(client: Client, path: str, query: list[tuple[str, str]]
              ) -> Iterator[dict[str, Any]]:
    cursor = None
    for _ in range(100):
        params = [*query, *([("cursor", cursor)] if cursor else [])]
        status, page = client.get(f"{path}?{urllib.parse.urlencode(params)}")
        assert status == 200, page
        yield page
        cursor = page["next_cursor"]
        if cursor is None:
            return
    raise AssertionError("more than 100 pages")


def events_of(client: Client) -> set[tuple[str, str]]:
    status, data = client.get("/api/overview")
    return {(ev["incident_id"], ev["event_type"]) for ev in data.get("recent_events", [])} \
        if status == 200 else set()


class ConsumerThread:
    """The consumer the replayed records go back to (the client API: it acknowledges each
    redelivery, which completes the incident), polled in a thread."""

    def __init__(self, env: dict[str, str], group: str, topic: str):
        self.consumer = RecoveringConsumer(group, [topic], service="mailer",
                                           settings=settings_of(env), heartbeat_interval=3600)
        self.handled: list[tuple[bytes | None, str | None]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.consumer.poll_once(lambda m: self.handled.append(
                (m.key(), h.header_value(m.headers(), h.REPLAY_ID))), timeout=0.2)

    def __enter__(self) -> ConsumerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)
        self.consumer.close()


def test_lists_filter_and_page_from_the_broker_and_show_a_record_with_every_header(
        console_env, worker_factory, topic_prefix):
    env, prefix = console_env, topic_prefix
    client = Client(env["RECOVERY_WEB_PORT"])
    group, mail = f"{prefix}mailer", f"{prefix}mail"
    now = int(time.time() * 1000)
    orders, payments = f"{prefix}orders", f"{prefix}payments"
    produce_dead_letters(env, [(orders, "billing", "timeout", f"old{i}", now - 3 * HOUR_MS)
                               for i in range(10)]
                         + [(orders, "billing", "timeout", f"new{i}", now - 60_000)
                            for i in range(20)]
                         + [(payments, "shipping", "bad_payload", f"pay{i}", now - 30_000)
                            for i in range(30)])
    # after the older ones: each partition's timestamps rise with its offsets
    worker = worker_factory()
    report_failures(env, group, mail, ["m1", "m2", "m3"])
    assert wait_until(lambda: up(client), 90), worker.log_tail()
    assert wait_until(lambda: len(client.get(f"/api/dead-letters?group={group}")[1]
                                  .get("records", [])) == 3, 90), worker.log_tail()

    # paging, newest first: 10 a page, each page reads about a page (not the topic), every
    # record once, newest first within a page
    pages = list(all_pages(client, "/api/dead-letters", [("limit", "10")]))
    seen = [(r["partition"], r["offset"]) for page in pages for r in page["records"]]
    assert len(seen) == 63 and len(set(seen)) == 63
    partitions = pages[0]["partitions"]
    assert all(page["scanned"] <= 10 * partitions for page in pages), \
        [page["scanned"] for page in pages]
    # The first page reads at most a page's worth of each partition, not the topic: with 12
    # partitions that can be all 63 when no partition holds more than 10 (the keys carry the
    # run's random prefix, so where they land changes from run to run).
    per_partition = Counter(p for p, _ in seen)
    assert pages[0]["scanned"] <= sum(min(10, n) for n in per_partition.values()), \
        (pages[0]["scanned"], dict(per_partition))
    for page in pages:
        stamps = [r["timestamp_ms"] for r in page["records"]]
        assert stamps == sorted(stamps, reverse=True)
    oldest = list(all_pages(client, "/api/dead-letters",
                            [("limit", "25"), ("order", "oldest")]))
    assert {(r["partition"], r["offset"]) for p in oldest for r in p["records"]} == set(seen)
    assert oldest[0]["records"][0]["key"].startswith("old")

    # the replay command's filters: original topic, group, error type, key, time range
    def keys(*query: tuple[str, str]) -> list[str]:
        return sorted(r["key"] for page in all_pages(client, "/api/dead-letters", list(query))
                      for r in page["records"])

    assert keys(("group", "billing"), ("error_type", "timeout")) == sorted(
        [f"old{i}" for i in range(10)] + [f"new{i}" for i in range(20)])
    assert keys(("topic", payments)) == sorted(f"pay{i}" for i in range(30))
    assert keys(("key", "new3"), ("key", "pay7")) == ["new3", "pay7"]
    assert keys(("group", "billing"), ("since", "-2h")) == sorted(f"new{i}" for i in range(20))
    assert keys(("until", "-1h")) == sorted(f"old{i}" for i in range(10))
    # the time range bounds what is read (the broker's time index), not only what is shown
    since_text = urllib.parse.quote(iso(now - 45_000))
    status, since = client.get(f"/api/dead-letters?since={since_text}&limit=200")
    assert status == 200 and len(since["records"]) == 33 and since["scanned"] == 33

    # bad input: 400, a plain message; unknown record: 404
    for path, message in [("/api/dead-letters?since=last+tuesday", "bad time"),
                          ("/api/dead-letters?cursor=zz", "bad cursor"),
                          ("/api/dead-letters?order=sideways", "bad order"),
                          ("/api/dead-letters?limit=0", "bad limit"),
                          ("/api/dead-letters/x/1", "bad record position"),
                          ("/dead-letters?since=-2h&until=-3h", "empty time range")]:
        status, body = client.get(path)
        assert status == 400, (path, body)
        assert message in (body["error"] if isinstance(body, dict) else body), (path, body)
    assert client.get("/api/dead-letters/0/999999")[0] == 404
    assert client.get("/dead-letters/0/999999")[0] == 404

    # the record view: key, value, every header in order, the reason, the incident's link
    dlq = f"{prefix}recovery.dlq"
    made = {d.key: d for d in read_dead_letters(env["KAFKA_BOOTSTRAP_SERVERS"], dlq)
            if h.header_value(d.headers, h.CONSUMER_GROUP) == group}
    m1, m2 = made[b"m1"], made[b"m2"]
    status, view = client.get(f"/api/dead-letters/{m1.partition}/{m1.offset}")
    assert status == 200
    assert [(x["name"], x["text"]) for x in view["headers"]] == [
        (k, v.decode()) for k, v in m1.headers]
    assert ("trace", "tr-m1") in [(x["name"], x["text"]) for x in view["headers"]]
    assert view["key"]["text"] == "m1"
    assert view["value"]["kind"] == "json" and '"order": "m1"' in view["value"]["text"]
    assert view["reason"] == h.header_value(m1.headers, h.REASON) and view["reason"]
    assert view["incident_url"] == "/incidents/inc-m1"
    status, binary = client.get(f"/api/dead-letters/{m2.partition}/{m2.offset}")
    assert binary["value"]["kind"] == "hex" and "ff 00 01" in binary["value"]["text"]
    status, html = client.get(f"/dead-letters/{m1.partition}/{m1.offset}")
    assert status == 200
    assert 'href="/incidents/inc-m1"' in html
    for name, _ in m1.headers:
        assert f'<td class="name">{name}</td>' in html
    assert '<input type="hidden" name="csrf_token"' in html
    # the poison list reads the poison topic (empty here)
    status, poison = client.get("/api/poison")
    assert status == 200 and poison["records"] == [] and poison["topic"].endswith(
        "recovery.poison")


def test_preview_then_confirmed_replay_reaches_the_consumer_and_completes_the_incidents(
        console_env, worker_factory, topic_prefix):
    env, prefix = console_env, topic_prefix
    client = Client(env["RECOVERY_WEB_PORT"])
    group, mail = f"{prefix}mailer", f"{prefix}mail"
    create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], mail)
    worker = worker_factory()
    with ConsumerThread(env, group, mail) as consumer:
        report_failures(env, group, mail, ["a1", "a2", "a3"])
        report_failures(env, f"{prefix}other", mail, ["b1"])
        assert wait_until(lambda: up(client), 90), worker.log_tail()
        assert wait_until(lambda: len(client.get(f"/api/dead-letters?group={group}")[1]
                                      .get("records", [])) == 3, 90), worker.log_tail()
        form = [("source", "dead-letters"), ("group", group), ("to", "incident"),
                ("rate", "50")]

        status, preview = client.post("/api/replays/preview", form)
        assert status == 200, preview
        assert preview["matched"] == 3 and preview["would_send"] == 3 and preview["complete"]
        assert preview["scanned"] == 4
        assert sorted(s["key"] for s in preview["sample"]) == ["a1", "a2", "a3"]
        name = preview["name"]
        assert consumer.handled == []  # a dry run sends nothing

        status, refused = client.post("/api/replays", form)  # no confirmation
        assert status == 400 and "confirm" in refused["error"]
        bad_rate = [*form[:-1], ("confirm", "yes"), ("rate", "0")]
        assert client.post("/api/replays", bad_rate)[0] == 400

        status, started = client.post("/api/replays", [*form, ("confirm", "yes")])
        assert status == 202, started
        assert started["name"] == name and started["url"] == f"/replays/{name}"

        def finished() -> dict[str, Any]:
            return client.get(f"/api/replays/{name}")[1]

        assert wait_until(lambda: finished().get("state") == "done", 60), finished()
        done = finished()
        assert done["sent"] == 3 and done["matched"] == 3 and done["remaining"] == 0
        assert wait_until(lambda: len(consumer.handled) >= 3, 60), worker.log_tail()
        assert sorted(k for k, _ in consumer.handled) == [b"a1", b"a2", b"a3"]
        assert all(replay_id for _, replay_id in consumer.handled)
        completed = {(f"inc-{k}", "recovery/recovery_completed") for k in ("a1", "a2", "a3")}
        assert wait_until(lambda: completed <= events_of(client), 60), worker.log_tail()
        assert ("inc-b1", "recovery/recovery_completed") not in events_of(client)

        # the same replay again: complete already, nothing sent (progress kept in Kafka)
        status, again = client.post("/api/replays", [*form, ("confirm", "yes")])
        assert status == 202 and again["already_complete"] and again["sent"] == 3
        status, page = client.get(f"/replays/{name}")
        assert status == 200 and "already complete" in page
    assert len(consumer.handled) == 3


def test_the_replay_command_through_the_worker_completes_the_incidents(
        console_env, worker_factory, topic_prefix):
    # `recovery replay --to incident`: the same target as the page's default. Sent straight
    # to the redelivery topic, the consumer's ack would meet a finished incident and be
    # ignored; through the worker's replay command the incident reopens and completes.
    env, prefix = console_env, topic_prefix
    client = Client(env["RECOVERY_WEB_PORT"])
    group, mail = f"{prefix}mailer", f"{prefix}mail"
    create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], mail)
    worker = worker_factory()
    with ConsumerThread(env, group, mail) as consumer:
        report_failures(env, group, mail, ["c1", "c2"])
        assert wait_until(lambda: up(client), 90), worker.log_tail()
        assert wait_until(lambda: len(client.get(f"/api/dead-letters?group={group}")[1]
                                      .get("records", [])) == 2, 90), worker.log_tail()
        result = run_cli(env, "replay", "--group", group, "--to", "incident", "--rate", "50")
        assert result.returncode == 0, result.stderr
        assert wait_until(lambda: len(consumer.handled) >= 2, 60), worker.log_tail()
        assert sorted(k for k, _ in consumer.handled) == [b"c1", b"c2"]
        completed = {(f"inc-{k}", "recovery/recovery_completed") for k in ("c1", "c2")}
        assert wait_until(lambda: completed <= events_of(client), 60), worker.log_tail()
        again = run_cli(env, "replay", "--group", group, "--to", "incident")
        assert again.returncode == 0 and "already complete" in again.stdout, again.stderr
    assert len(consumer.handled) == 2
