"""Reassembly in a Faust agent through the real broker: fragments, a compressed record and a
plain one come back whole with their headers; while a set is open Faust's committed offset
stays at its first fragment, so a service killed in the middle of the set still gets it
after a restart."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from app.oversize import policy as op
from app.oversize.encoder import encode
from app.settings import Settings
from tests.conftest import REPO, wait_until
from tests.integration.test_oversize import SIGNING_KEY, create_topic, lines

pytestmark = pytest.mark.integration
MB = 1024 * 1024


def start_service(env: Settings, app_id: str, topic: str, out: Path, log: Path
                  ) -> subprocess.Popen:
    child = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": env.kafka_bootstrap_servers,
             "RECOVERY_TOPIC_PREFIX": env.topic_prefix, "RECOVERY_DATA_DIR": str(env.data_dir),
             "RECOVERY_OBJECT_STORE_SIGNING_KEY": SIGNING_KEY, "OVERSIZE_APP_ID": app_id,
             "OVERSIZE_TOPIC": topic, "OVERSIZE_OUT": str(out)}
    return subprocess.Popen([sys.executable, "-m", "tests.services.faust_oversize", "worker",
                             "-l", "warn", "--without-web"], env=child, cwd=REPO,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def committed(bootstrap: str, group: str, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def test_faust_agent_reassembles_and_never_commits_past_an_open_set(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path):
    env = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                   data_dir=tmp_path / "data")
    topic = env.topic("faust-payloads")
    create_topic(kafka_bootstrap, topic, partitions=2)  # data on 0, a marker on 1
    for name in ("recovery.dlq", "recovery.poison"):
        create_topic(kafka_bootstrap, env.topic(name), 1, {"max.message.bytes": "8388608"})
    whole = os.urandom(3 * MB)
    fragments = encode(topic, b"big", whole, [("kind", b"snapshot")], limit=1_000_000,
                       policy=op.TopicPolicy()).records
    text = b"compressible " * 200_000
    compressed = encode(topic, b"text", text, [("kind", b"text")], limit=1_000_000,
                        policy=op.TopicPolicy()).records
    raw = Producer({"bootstrap.servers": kafka_bootstrap})

    def send(records) -> None:
        for r in records:
            raw.produce(topic, key=r.key, value=bytes(r.value), headers=r.headers,
                        partition=0)
        assert raw.flush(30) == 0

    raw.produce(topic, key=b"plain-1", value=b"one", partition=0)
    send(fragments[:2])  # offsets 1, 2: the set is open from offset 1
    send(compressed)
    raw.produce(topic, key=b"plain-2", value=b"two", partition=0)
    assert raw.flush(30) == 0
    app_id = f"faust-oversize-{uuid.uuid4().hex[:6]}"
    out, log = tmp_path / "out.jsonl", tmp_path / "service.log"
    first = start_service(env, app_id, topic, out, log)
    try:
        assert wait_until(lambda: {x["key"] for x in lines(out)} >= {"plain-1", "text",
                                                                       "plain-2"}, 90), \
            log.read_text(errors="replace")[-3000:]
        # Faust commits every 0.5 s: it may pass plain-1 but never the set's first fragment.
        assert wait_until(lambda: committed(kafka_bootstrap, app_id, topic, 0) == 1, 20), \
            committed(kafka_bootstrap, app_id, topic, 0)
        # Processed up to here: a marker on partition 1, handled and committed, shows a
        # commit made after every record of partition 0 was handled.
        raw.produce(topic, key=b"marker", value=b"m", partition=1)
        assert raw.flush(30) == 0
        assert wait_until(lambda: committed(kafka_bootstrap, app_id, topic, 1) == 1
                          and any(x["key"] == "marker" for x in lines(out)), 60), \
            log.read_text(errors="replace")[-3000:]
        assert committed(kafka_bootstrap, app_id, topic, 0) == 1
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    send(fragments[2:])
    second = start_service(env, app_id, topic, out, log)
    try:
        assert wait_until(lambda: any(x["key"] == "big" for x in lines(out)), 90), \
            log.read_text(errors="replace")[-3000:]
        assert wait_until(lambda: committed(kafka_bootstrap, app_id, topic, 0)
                          == 3 + len(fragments), 20)
    finally:
        second.terminate()
        second.wait(30)
    got = lines(out)
    big = [x for x in got if x["key"] == "big"]
    assert len(big) == 1
    assert big[0]["sha256"] == hashlib.sha256(whole).hexdigest()
    assert big[0]["headers"] == [["kind", "snapshot"]]
    text_line = next(x for x in got if x["key"] == "text")
    assert text_line["sha256"] == hashlib.sha256(text).hexdigest()
    assert text_line["strategy"] == "compression"
    # Faust's at-least-once: what followed the open set's first fragment may come again.
    assert [x["key"] for x in got].count("plain-1") == 1
