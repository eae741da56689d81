"""`recovery replay` through a real broker: selection, targets, dry run, resumption after
Ctrl-C and after a crash, delivered once by the client API, bad input, and a dead-letter
topic left exactly as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.client.consumer import RecoveringConsumer
from app.contracts import headers as h
from app.kafka.dead_letters import read_dead_letters
from app.replay.store import ProgressStore
from app.settings import Settings
from tests.conftest import REPO, run_cli, wait_until

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def create_topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, 3) for n in names]).values():
        future.result()
    assert wait_until(lambda: all(n in admin.list_topics(timeout=5).topics for n in names), 10)


def dead_letter_headers(topic: str, group: str, error: str, i: int) -> list:
    return [("trace", f"t{i}".encode()), (h.ORIGINAL_TOPIC, topic.encode()),
            (h.ORIGINAL_PARTITION, b"0"), (h.ORIGINAL_OFFSET, str(i).encode()),
            (h.CONSUMER_GROUP, group.encode()), (h.ERROR_TYPE, error.encode()),
            (h.ERROR_MESSAGE, b"it failed"), (h.INCIDENT_ID, f"{group}:{topic}:0:{i}".encode()),
            (h.REASON, b"retries exhausted")]


def produce_dead_letters(bootstrap: str, dlq: str, specs: list[tuple]) -> None:
    """specs: (original topic, group, error type, key, timestamp ms or None)."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for i, (topic, group, error, key, ts) in enumerate(specs):
        producer.produce(dlq, key=key.encode(), value=f"value-{i}".encode(),
                         headers=dead_letter_headers(topic, group, error, i),
                         **({"timestamp": ts} if ts else {}))
    assert producer.flush(30) == 0


def snapshot(bootstrap: str, topic: str) -> list[tuple]:
    return sorted((d.partition, d.offset, d.key, d.value, tuple(d.headers), d.timestamp_ms)
                  for d in read_dead_letters(bootstrap, topic))


def count(bootstrap: str, topic: str) -> int:
    return sum(1 for _ in read_dead_letters(bootstrap, topic))


def replay_ids(bootstrap: str, topic: str) -> Counter:
    return Counter(h.header_value(d.headers, h.REPLAY_ID)
                   for d in read_dead_letters(bootstrap, topic))


@pytest.fixture
def dlq_env(applied_topics: dict, topic_prefix: str) -> dict:
    env = dict(applied_topics)
    env["DLQ"] = f"{topic_prefix}recovery.dlq"
    env["ORDERS"] = f"{topic_prefix}orders"
    env["PAYMENTS"] = f"{topic_prefix}payments"
    create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], env["ORDERS"], env["PAYMENTS"])
    return env


def test_dry_run_prints_counts_per_topic_group_and_error_type_and_sends_nothing(dlq_env):
    bootstrap, dlq, orders, payments = (dlq_env[k] for k in
                                        ("KAFKA_BOOTSTRAP_SERVERS", "DLQ", "ORDERS", "PAYMENTS"))
    billing, shipping = (f"{dlq_env['RECOVERY_TOPIC_PREFIX']}{g}" for g in ("billing", "shipping"))
    produce_dead_letters(bootstrap, dlq,
                         [(orders, billing, "timeout", f"a{i}", None) for i in range(5)]
                         + [(orders, shipping, "bad_payload", f"b{i}", None) for i in range(3)]
                         + [(payments, billing, "timeout", f"c{i}", None) for i in range(4)])
    before = snapshot(bootstrap, dlq)
    result = run_cli(dlq_env, "replay", "--dry-run", "--to", "original")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [orders, billing, "timeout", orders, "5"] in rows
    assert [orders, shipping, "bad_payload", orders, "3"] in rows
    assert [payments, billing, "timeout", payments, "4"] in rows
    assert ["total", "12"] in rows
    assert "12 of 12 dead letters read would be sent" in result.stdout

    narrowed = run_cli(dlq_env, "replay", "--dry-run", "--group", billing,
                       "--error-type", "timeout", "--topic", payments)
    assert narrowed.returncode == 0, narrowed.stderr
    assert [payments, billing, "timeout", f"{billing}.redelivery", "(missing)", "4"] in [
        line.split() for line in narrowed.stdout.splitlines()]
    assert "0 of 12 dead letters read would be sent" in narrowed.stdout  # target missing

    assert count(bootstrap, orders) == count(bootstrap, payments) == 0
    assert count(bootstrap, f"{dlq_env['RECOVERY_TOPIC_PREFIX']}recovery.replay-progress") == 0
    assert snapshot(bootstrap, dlq) == before


def test_replay_sends_the_selection_byte_for_byte_once_and_leaves_the_dlq_alone(dlq_env):
    bootstrap, dlq, orders, payments = (dlq_env[k] for k in
                                        ("KAFKA_BOOTSTRAP_SERVERS", "DLQ", "ORDERS", "PAYMENTS"))
    now = int(time.time() * 1000)
    produce_dead_letters(bootstrap, dlq,
                         [(orders, "billing", "timeout", f"old{i}", now - 3 * HOUR_MS)
                          for i in range(4)]
                         + [(orders, "billing", "timeout", f"new{i}", now - 60_000)
                            for i in range(6)]
                         + [(payments, "billing", "bad_payload", f"pay{i}", now - 60_000)
                            for i in range(3)]
                         + [(orders, "shipping", "timeout", f"ship{i}", now) for i in range(2)])
    before = snapshot(bootstrap, dlq)
    args = ("replay", "--to", "original", "--group", "billing", "--error-type", "timeout",
            "--since", "-2h", "--until", "now")
    result = run_cli(dlq_env, *args)
    assert result.returncode == 0, result.stderr
    assert "rec/s" not in result.stderr  # stderr is no terminal: no bar unless asked for
    # --since seeks by the broker's time index: the 4 old ones, first in their partitions,
    # are not even read
    assert "sent 6 to each record's original topic (read 11, matched 6)" in result.stdout
    sent = list(read_dead_letters(bootstrap, orders))
    assert sorted(d.key for d in sent) == [f"new{i}".encode() for i in range(6)]
    by_key = {d[2]: d for d in before}
    for record in sent:
        partition, offset, key, value, headers, _ = by_key[record.key]
        assert record.value == value
        assert record.headers == [*headers, (h.REPLAY_ID, f"{partition}:{offset}".encode())]
    assert count(bootstrap, payments) == 0

    again = run_cli(dlq_env, *args)  # the same command: already complete, sends nothing
    assert again.returncode == 0, again.stderr
    assert "already complete: 6 sent" in again.stdout
    assert count(bootstrap, orders) == 6

    # either key, and the header: new1 is the 6th dead letter (trace t5), old2 the 3rd (t2)
    by_key_and_header = run_cli(dlq_env, "replay", "--to-topic", payments, "--key", "new1",
                                "--key", "old2", "--header", "trace=t5", "--progress")
    assert by_key_and_header.returncode == 0, by_key_and_header.stderr
    bar = by_key_and_header.stderr  # forced: rate and ETA, ending at every record read
    assert "rec/s" in bar and "ETA" in bar and "15/15" in bar and "sent 1" in bar
    assert [d.key for d in read_dead_letters(bootstrap, payments)] == [b"new1"]
    assert snapshot(bootstrap, dlq) == before


def test_a_dead_letter_replayed_twice_is_delivered_once_to_the_client_api(dlq_env):
    bootstrap, dlq, orders = (dlq_env[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "DLQ", "ORDERS"))
    group = f"{dlq_env['RECOVERY_TOPIC_PREFIX']}billing"
    settings = Settings(kafka_bootstrap_servers=bootstrap,
                        topic_prefix=dlq_env["RECOVERY_TOPIC_PREFIX"])
    handled: list[bytes] = []
    consumer = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                                  heartbeat_interval=3600)
    try:
        produce_dead_letters(bootstrap, dlq,
                             [(orders, group, "timeout", f"o{i}", None) for i in range(8)])
        # once to the consumer's redelivery topic, once more to the original topic: the same
        # dead letters twice, on two topics the consumer reads, with the same replay ids
        first = run_cli(dlq_env, "replay", "--to", "redelivery", "--group", group)
        assert first.returncode == 0, first.stderr
        second = run_cli(dlq_env, "replay", "--to", "original", "--group", group)
        assert second.returncode == 0, second.stderr
        assert count(bootstrap, f"{group}.redelivery") == 8 and count(bootstrap, orders) == 8

        def poll() -> bool:
            consumer.poll_once(lambda m: handled.append(m.key()), timeout=0.2)
            return len(handled) >= 8

        assert wait_until(poll, timeout=40, interval=0)
        deadline = time.monotonic() + 3  # the second copies arrive, and are dropped
        while time.monotonic() < deadline:
            consumer.poll_once(lambda m: handled.append(m.key()), timeout=0.2)
    finally:
        consumer.close()
    assert sorted(handled) == sorted(f"o{i}".encode() for i in range(8))


def test_ctrl_c_stores_progress_and_the_same_command_goes_on(dlq_env):
    bootstrap, dlq, orders = (dlq_env[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "DLQ", "ORDERS"))
    produce_dead_letters(bootstrap, dlq, [(orders, "g", "timeout", f"k{i}", None)
                                          for i in range(60)])
    args = [sys.executable, "-m", "app", "replay", "--to-topic", orders, "--rate", "20"]
    proc = subprocess.Popen(args, cwd=REPO, env=dlq_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: count(bootstrap, orders) >= 10, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted: progress stored" in err
    first = count(bootstrap, orders)
    assert 10 <= first < 60

    resumed = run_cli(dlq_env, "replay", "--to-topic", orders, "--rate", "200")
    assert resumed.returncode == 0, resumed.stderr
    assert f"sent {60 - first} to topic" in resumed.stdout and "60 sent in all" in resumed.stdout
    ids = replay_ids(bootstrap, orders)
    assert len(ids) == 60 and set(ids.values()) == {1}  # each dead letter once, none twice


def test_worker_processes_share_the_partitions_and_resume_after_ctrl_c(dlq_env):
    bootstrap, dlq, orders = (dlq_env[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "DLQ", "ORDERS"))
    produce_dead_letters(bootstrap, dlq, [(orders, "g", "timeout", f"k{i}", None)
                                          for i in range(90)])
    args = ["replay", "--to-topic", orders, "--workers", "3", "--name", "parallel"]
    proc = subprocess.Popen([sys.executable, "-m", "app", *args, "--rate", "30"], cwd=REPO,
                            env=dlq_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert wait_until(lambda: count(bootstrap, orders) >= 15, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    first = count(bootstrap, orders)
    assert 15 <= first < 90

    resumed = run_cli(dlq_env, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"sent {90 - first} to topic" in resumed.stdout and "90 sent in all" in resumed.stdout
    ids = replay_ids(bootstrap, orders)
    assert len(ids) == 90 and set(ids.values()) == {1}
    store = ProgressStore(Settings(kafka_bootstrap_servers=bootstrap,
                                   topic_prefix=dlq_env["RECOVERY_TOPIC_PREFIX"]), None)
    done = store.load("parallel")
    assert done is not None and done.state == "done" and done.sent == 90 and done.remaining == 0


def test_a_crashed_replay_resumes_from_the_progress_stored_in_kafka(dlq_env):
    bootstrap, dlq, orders = (dlq_env[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "DLQ", "ORDERS"))
    produce_dead_letters(bootstrap, dlq, [(orders, "g", "timeout", f"k{i}", None)
                                          for i in range(200)])
    store = ProgressStore(Settings(kafka_bootstrap_servers=bootstrap,
                                   topic_prefix=dlq_env["RECOVERY_TOPIC_PREFIX"]), None)
    args = ["replay", "--to-topic", orders, "--name", "crash-test", "--rate", "40"]
    proc = subprocess.Popen([sys.executable, "-m", "app", *args], cwd=REPO, env=dlq_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (p := store.load("crash-test")) is not None and p.sent > 0,
                          timeout=30, interval=0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    stored = store.load("crash-test")
    assert stored is not None and stored.state == "running" and 0 < stored.sent < 200

    resumed = run_cli(dlq_env, *args[:-2], "--rate", "400")
    assert resumed.returncode == 0, resumed.stderr
    assert f"sent {200 - stored.sent} to topic" in resumed.stdout
    ids = replay_ids(bootstrap, orders)
    # every dead letter at least once; the copies sent after the last stored progress, before
    # the kill, twice, with the same replay id, which the client API drops
    dlq_positions = {f"{d.partition}:{d.offset}" for d in read_dead_letters(bootstrap, dlq)}
    assert set(ids) == dlq_positions and len(dlq_positions) == 200
    assert store.load("crash-test").state == "done"


def test_bad_input_exits_non_zero_with_one_plain_line(dlq_env):
    bootstrap, dlq, orders = (dlq_env[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "DLQ", "ORDERS"))
    produce_dead_letters(bootstrap, dlq, [(orders, "billing", "timeout", "k", None)])
    before = snapshot(bootstrap, dlq)
    cases = {
        ("--topic", "no-such-topic"): "unknown topic no-such-topic",
        ("--to-topic", "no-such-topic"): "unknown topic no-such-topic",
        ("--dlq", "no-such-dlq"): "unknown topic no-such-dlq",
        ("--since", "last tuesday"): "bad time 'last tuesday'",
        ("--header", "trace"): "bad header filter 'trace'",
        ("--group", "nobody", "--to", "original"): "no dead letters match the selection",
        ("--group", "nobody", "--dry-run"): "no dead letters match the selection",
        ("--bogus",): "No such option: --bogus",
        ("--rate", "fast"): "Invalid value for '--rate'",
    }
    for args, message in cases.items():
        result = run_cli(dlq_env, "replay", *args)
        lines = result.stderr.splitlines()
        assert result.returncode != 0, args
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
        assert result.stdout == "", (args, result.stdout)
    assert count(bootstrap, orders) == 0
    assert snapshot(bootstrap, dlq) == before
