"""Oversized messages through the real broker: a topic limited to 1 MB carries payloads of
2 MB, 20 MB and 200 MB; fragment sets interleave, arrive out of order and twice; a consumer
killed in the middle of a set gets it once after a restart; an incomplete set expires into
the dead-letter topic; claim checks go through S3 (moto's server over HTTP), and forged
references are poisoned without being fetched."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.client.consumer import ensure_topic
from app.client.large_messages import LargeMessage, LargeMessageProducer, ReassemblingConsumer
from app.contracts import headers as h
from app.oversize import headers as oh
from app.oversize import policy as op
from app.oversize.encoder import encode
from app.oversize.reference import Reference, StoreLocation
from app.oversize.store import ClaimCheckStore, S3Store, open_store
from app.settings import Settings
from tests.conftest import REPO, free_port, wait_until
from tests.kafka_helpers import TopicReader

pytestmark = pytest.mark.integration
ONE_MB_TOPIC = {"max.message.bytes": "1048576"}
SIGNING_KEY = "integration-signing-key"
MB = 1024 * 1024


def create_topic(bootstrap: str, name: str, partitions: int = 2,
                 config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions,
                                                config=config or ONE_MB_TOPIC)]).values():
        future.result()
    ensure_topic(bootstrap, name, partitions)


@pytest.fixture
def env(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Settings:
    for name in ("recovery.dlq", "recovery.poison"):
        create_topic(kafka_bootstrap, f"{topic_prefix}{name}", 1,
                     {"max.message.bytes": "8388608"})
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                    data_dir=tmp_path / "data", object_store_url=f"file://{tmp_path}/objects",
                    object_store_signing_key=SIGNING_KEY, fragment_expiry_ms=2_000)


@pytest.fixture
def payloads_topic(env: Settings) -> str:
    name = env.topic("payloads")
    create_topic(env.kafka_bootstrap_servers, name)
    return name


def consume(consumer: ReassemblingConsumer, count: int, timeout: float,
            through_markers: Settings | None = None) -> list[LargeMessage]:
    """Whole messages until `count` arrived. With `through_markers` (the settings to produce
    with), a plain marker record then goes to every partition the consumer reads, and
    consumption goes on until each marker is back: everything before the markers has then
    been read, so an extra delivery (a duplicate) is in the list. Markers are not returned."""
    got: list[LargeMessage] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < count:
        message = consumer.poll(0.5)
        if message is not None:
            got.append(message)
            consumer.commit()
    if through_markers is None or len(got) < count:
        return got
    producer = Producer({"bootstrap.servers": through_markers.kafka_bootstrap_servers})
    expected = set()
    for tp in consumer.consumer.assignment():
        producer.produce(tp.topic, key=MARKER, value=str(tp.partition).encode(),
                         partition=tp.partition)
        expected.add(str(tp.partition).encode())
    assert producer.flush(30) == 0
    seen: set[bytes] = set()
    while time.monotonic() < deadline and seen != expected:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.key() == MARKER:
            seen.add(bytes(message.value()))
        else:
            got.append(message)
    assert seen == expected, "the markers never came back"
    return got


MARKER = b"\x00test-marker"


def consume_until(consumer: ReassemblingConsumer, done: Callable[[], bool],
                  timeout: float) -> list[LargeMessage]:
    """Whole messages, polling until `done()` holds (the consumer must poll for time-based
    work such as expiry to happen)."""
    got: list[LargeMessage] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        message = consumer.poll(0.2)
        if message is not None:
            got.append(message)
    assert done(), "the awaited condition never held"
    return got


def digest(data: bytes | bytearray | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def test_2_and_20_mb_payloads_through_a_1_mb_topic(env: Settings, payloads_topic: str):
    producer = LargeMessageProducer(env)
    assert producer.limit_for(payloads_topic) == 1_000_000  # the producer's own cap
    sent = {
        b"random-2mb": os.urandom(2 * MB),
        b"random-20mb": os.urandom(20 * MB),
        b"text-2mb": b"the same line over and over\n" * (2 * MB // 28),
        b"small": b"fits as it is",
    }
    strategies = {}
    for key, value in sent.items():
        encoded = producer.produce(payloads_topic, value, key=key,
                                   headers=[("content-type", b"application/octet-stream"),
                                            ("key-copy", key)])
        strategies[key] = encoded.strategy
    assert producer.flush(60) == 0
    assert strategies == {b"random-2mb": oh.FRAGMENTATION, b"random-20mb": oh.FRAGMENTATION,
                          b"text-2mb": oh.COMPRESSION, b"small": None}
    consumer = ReassemblingConsumer(group(), [payloads_topic], env)
    try:
        got = consume(consumer, len(sent), timeout=60, through_markers=env)
    finally:
        consumer.close()
    assert sorted(m.key() for m in got) == sorted(sent)  # each exactly once
    for message in got:
        assert digest(message.value()) == digest(sent[message.key()])
        assert message.headers() == [("content-type", b"application/octet-stream"),
                                     ("key-copy", message.key())]
        assert message.strategy == strategies[message.key()]


def test_200_mb_payload_through_a_1_mb_topic(env: Settings, payloads_topic: str):
    payload = os.urandom(200 * MB)
    expected = digest(payload)
    producer = LargeMessageProducer(env)
    encoded = producer.produce(payloads_topic, payload, key=b"big", headers=[("n", b"1")])
    assert encoded.strategy == oh.FRAGMENTATION and len(encoded.records) > 200
    assert producer.flush(120) == 0
    del payload, encoded
    # The module's 2 s expiry is for the expiry tests: 200 MB in 210 fragments took longer
    # than that to fetch on a loaded machine (130 of 210 in), and went to the DLQ.
    patient = env.model_copy(update={"fragment_expiry_ms": 90_000})
    consumer = ReassemblingConsumer(group(), [payloads_topic], patient)
    try:
        [message] = consume(consumer, 1, timeout=90)
        assert message.key() == b"big" and message.headers() == [("n", b"1")]
        assert len(message.value()) == 200 * MB and digest(message.value()) == expected
    finally:
        consumer.close()


def test_interleaved_out_of_order_and_duplicated_sets(env: Settings, payloads_topic: str):
    limit = 1_000_000
    one, two = os.urandom(3 * MB), os.urandom(int(2.5 * MB))
    a = encode(payloads_topic, b"same-key", one, [("which", b"a")], limit=limit,
               policy=op.TopicPolicy()).records
    b = encode(payloads_topic, b"same-key", two, [("which", b"b")], limit=limit,
               policy=op.TopicPolicy()).records
    mixed = [*a, *b, a[0], b[1]]  # two duplicated fragments
    random.Random(7).shuffle(mixed)
    mixed.insert(3, *[r for r in encode(payloads_topic, b"same-key", b"plain", None,
                                        limit=limit, policy=op.TopicPolicy()).records])
    mixed += a  # the whole of set a once more
    raw = Producer({"bootstrap.servers": env.kafka_bootstrap_servers})
    for record in mixed:  # one key: one partition, in this order
        raw.produce(record.topic, key=record.key, value=bytes(record.value), headers=record.headers)
    assert raw.flush(30) == 0
    consumer = ReassemblingConsumer(group(), [payloads_topic], env)
    try:
        got = consume(consumer, 3, timeout=60, through_markers=env)
    finally:
        consumer.close()
    by_value = {digest(m.value()): m for m in got}
    assert len(got) == 3, [repr(m) for m in got]
    assert set(by_value) == {digest(one), digest(two), digest(b"plain")}
    assert by_value[digest(one)].headers() == [("which", b"a")]
    assert by_value[digest(two)].headers() == [("which", b"b")]


def run_consumer(env: Settings, group_id: str, topic: str, out: Path, log: Path
                 ) -> subprocess.Popen:
    child_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": env.kafka_bootstrap_servers,
                 "RECOVERY_TOPIC_PREFIX": env.topic_prefix,
                 "RECOVERY_DATA_DIR": str(env.data_dir),
                 "RECOVERY_OBJECT_STORE_URL": env.object_store_url,
                 "RECOVERY_OBJECT_STORE_SIGNING_KEY": SIGNING_KEY}
    return subprocess.Popen([sys.executable, "-m", "tests.services.oversize_consumer", group_id,
                             topic, str(out)], env=child_env, cwd=REPO,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def delivered_records(path: Path, value: bytes) -> list[dict]:
    return [x for x in lines(path) if x.get("sha256") == digest(value)]


def committed_offset(env: Settings, group_id: str, topic: str, partition: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({"bootstrap.servers": env.kafka_bootstrap_servers, "group.id": group_id})
    try:
        [tp] = reader.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        reader.close()


def test_consumer_killed_in_the_middle_of_a_set_gets_it_once(env: Settings,
                                                             payloads_topic: str,
                                                             tmp_path: Path):
    limit = 1_000_000
    payload = os.urandom(4 * MB)
    fragments = encode(payloads_topic, b"k", payload, None, limit=limit,
                       policy=op.TopicPolicy()).records
    raw = Producer({"bootstrap.servers": env.kafka_bootstrap_servers})

    def send(key: bytes, value: bytes, headers=None) -> None:
        raw.produce(payloads_topic, key=key, value=value, headers=headers)

    send(b"k", b"before")
    for record in fragments[:2]:
        send(record.key, bytes(record.value), record.headers)
    send(b"k", b"between")
    assert raw.flush(30) == 0
    out, log = tmp_path / "delivered.jsonl", tmp_path / "consumer.log"
    group_id = group()
    first = run_consumer(env, group_id, payloads_topic, out, log)
    try:
        assert wait_until(lambda: sum(1 for x in lines(out) if x.get("committed")) >= 2, 60), \
            log.read_text(errors="replace")[-3000:]
        # "between" (after the set's first fragment) was handled and committed, yet the
        # committed offset stays at the first fragment of the set still open.
        partition = next(x["partition"] for x in delivered_records(out, b"between"))
        assert committed_offset(env, group_id, payloads_topic, partition) == \
            next(x["offset"] for x in delivered_records(out, b"before")) + 1
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a crash: no close, no last commit
        first.wait(10)
    for record in fragments[2:]:
        send(record.key, bytes(record.value), record.headers)
    send(b"k", b"after")
    assert raw.flush(30) == 0
    second = run_consumer(env, group_id, payloads_topic, out, log)
    try:
        assert wait_until(lambda: any(x.get("size") == len(payload) for x in lines(out))
                          and any(x.get("size") == len(b"after") for x in lines(out)), 60), \
            log.read_text(errors="replace")[-3000:]
        # A marker behind everything on each partition: once both are handled, anything
        # delivered twice would be in the file.
        for partition in (0, 1):
            raw.produce(payloads_topic, key=MARKER, value=b"m", partition=partition)
        assert raw.flush(30) == 0
        assert wait_until(lambda: len([x for x in lines(out)
                                       if x.get("key") == MARKER.decode()]) == 2, 60), \
            log.read_text(errors="replace")[-3000:]
    finally:
        second.terminate()
        second.wait(30)
    delivered = [x for x in lines(out) if "sha256" in x and x["key"] != MARKER.decode()]
    assert sorted(x["sha256"] for x in delivered) == sorted(
        digest(v) for v in (b"before", b"between", payload, b"after"))


def test_incomplete_set_expires_into_the_dead_letter_topic(env: Settings, payloads_topic: str):
    fragments = encode(payloads_topic, b"k", os.urandom(3 * MB), None, limit=1_000_000,
                       policy=op.TopicPolicy()).records
    raw = Producer({"bootstrap.servers": env.kafka_bootstrap_servers})
    for record in fragments[:2]:  # the producer "died" before the rest
        raw.produce(payloads_topic, key=record.key, value=bytes(record.value),
                    headers=record.headers)
    raw.produce(payloads_topic, key=b"k", value=b"next")
    assert raw.flush(30) == 0
    group_id = group()
    consumer = ReassemblingConsumer(group_id, [payloads_topic], env)
    reader = TopicReader(env.kafka_bootstrap_servers, [env.topic("recovery.dlq")])
    try:
        # Expiry (2 s here) happens while the consumer polls: poll until the dead letters
        # of the expired set are on the broker.
        got = consume_until(consumer, lambda: reader.wait_for(lambda ms: len(ms) >= 2, 0.1),
                            timeout=60)
        consumer.commit()
        assert [m.value() for m in got] == [b"next"]
        dead = reader.messages
        assert [m.value() for m in dead] == [bytes(r.value) for r in fragments[:2]]
        reason = h.header_value(dead[0].headers(), h.REASON)
        assert "incomplete after 2 s: 2 of 4 fragments arrived" in reason
        assert h.header_value(dead[0].headers(), h.ORIGINAL_TOPIC) == payloads_topic
        # The committed offset moved past the expired set: nothing is held any more.
        [committed] = consumer.consumer.committed(
            [tp for tp in consumer.consumer.assignment() if tp.partition == dead_partition(
                dead[0])], timeout=10)
        assert committed.offset == h.header_int(dead[0].headers(), h.ORIGINAL_OFFSET) + 3
    finally:
        reader.close()
        consumer.close()


def dead_partition(message) -> int:
    return h.header_int(message.headers(), h.ORIGINAL_PARTITION)


# ---- S3 through moto's server --------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                               "127.0.0.1", "-p", str(port)], stdout=log.open("wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)

    def answers() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        assert wait_until(answers, 30), log.read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


class CountingS3(S3Store):
    def __init__(self, bucket: str, client):
        super().__init__(bucket, client)
        self.gets: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return super().get(key)


def test_s3_claim_checks_and_forged_references(env: Settings, payloads_topic: str,
                                               s3_endpoint: str):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for bucket in ("claims", "elsewhere"):
        client.create_bucket(Bucket=bucket)
    s3_env = env.model_copy(update={
        "object_store_url": "s3://claims", "object_store_prefix": "checks/",
        "object_store_endpoint_url": s3_endpoint,
        "oversize_topics": {payloads_topic: {"force": "external_storage"}}})
    producer = LargeMessageProducer(s3_env)
    payload = os.urandom(20 * MB)
    encoded = producer.produce(payloads_topic, payload, key=b"real", headers=[("x", b"1")])
    assert encoded.strategy == oh.EXTERNAL_STORAGE
    real = Reference.from_bytes(encoded.records[0].value)
    assert real.url.startswith("s3://claims/checks/")
    # Objects an attacker would like read: another bucket, outside the prefix.
    client.put_object(Bucket="elsewhere", Key=f"checks/{real.sha256[:2]}/{real.sha256}",
                      Body=payload)
    client.put_object(Bucket="claims", Key="secrets/token", Body=b"secret")
    key = SIGNING_KEY.encode()
    forged = {
        b"other-bucket": Reference(f"s3://elsewhere/checks/{real.sha256[:2]}/{real.sha256}",
                                   real.sha256, real.size).signed(key),
        b"escape": Reference(f"s3://claims/checks/../secrets/{real.sha256}", real.sha256,
                             real.size).signed(key),
        b"no-signature": Reference(real.url, real.sha256, real.size),
        b"wrong-signature": Reference(real.url, real.sha256, real.size).signed(b"guess"),
    }
    raw = Producer({"bootstrap.servers": env.kafka_bootstrap_servers})
    for name, reference in forged.items():
        raw.produce(payloads_topic, key=name, value=reference.to_bytes(),
                    headers=[(oh.STRATEGY, b"external_storage")])
    assert producer.flush(30) == 0 and raw.flush(30) == 0
    location = StoreLocation.parse("s3://claims", "checks/")
    counting = CountingS3("claims", client)
    store = ClaimCheckStore(location, counting, signing_key=key)
    consumer = ReassemblingConsumer(group(), [payloads_topic], s3_env, store=store)
    reader = TopicReader(env.kafka_bootstrap_servers, [env.topic("recovery.poison")])
    try:
        got = consume(consumer, 1, timeout=60, through_markers=env)
        consumer.commit()
        assert [m.key() for m in got] == [b"real"]
        assert digest(got[0].value()) == digest(payload) and got[0].headers() == [("x", b"1")]
        assert reader.wait_for(lambda ms: len(ms) >= len(forged), 30)
    finally:
        reader.close()
        consumer.close()
    poisoned = {m.key(): h.header_value(m.headers(), h.REASON) for m in reader.messages}
    assert set(poisoned) == set(forged)
    assert "bucket 'elsewhere'" in poisoned[b"other-bucket"]
    assert "signature" in poisoned[b"no-signature"]
    assert "signature" in poisoned[b"wrong-signature"]
    assert "'..' part" in poisoned[b"escape"]
    assert counting.gets == [location.key_for(real.sha256)]  # only the real one was read


def test_tampered_s3_object_is_poison(env: Settings, payloads_topic: str, s3_endpoint: str):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="tamper")
    store = open_store("s3://tamper", "p/", endpoint_url=s3_endpoint, region="us-east-1",
                       signing_key=SIGNING_KEY.encode())
    s3_env = env.model_copy(update={"oversize_topics": {payloads_topic: {
        "force": "external_storage"}}})
    producer = LargeMessageProducer(s3_env, store=store)
    encoded = producer.produce(payloads_topic, os.urandom(2 * MB), key=b"t")
    assert producer.flush(30) == 0
    reference = Reference.from_bytes(encoded.records[0].value)
    client.put_object(Bucket="tamper", Key=store.location.key_for(reference.sha256),
                      Body=os.urandom(2 * MB))
    consumer = ReassemblingConsumer(group(), [payloads_topic], s3_env, store=store)
    reader = TopicReader(env.kafka_bootstrap_servers, [env.topic("recovery.poison")])
    try:
        delivered = []
        deadline = time.monotonic() + 30
        while not reader.messages and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                delivered.append(message)
            consumer.commit()
            reader.poll_for(0.2)
        assert delivered == [] and reader.messages
        assert "does not match its SHA-256" in h.header_value(reader.messages[0].headers(),
                                                              h.REASON)
    finally:
        reader.close()
        consumer.close()


def test_retention_collector_keeps_what_a_record_still_references(env: Settings,
                                                                  payloads_topic: str):
    from app.oversize.collector import collect
    from app.oversize.configured import store_from_settings

    forced = env.model_copy(update={"oversize_topics": {payloads_topic: {
        "force": "external_storage"}}})
    store = store_from_settings(forced)
    producer = LargeMessageProducer(forced, store=store)
    kept = Reference.from_bytes(producer.produce(payloads_topic, os.urandom(MB)).records[0].value)
    assert producer.flush(30) == 0
    orphan = store.put(os.urandom(MB))
    month_ago = time.time() - 30 * 24 * 3600
    root = Path(store.location.container)
    for ref in (kept, orphan):
        os.utime(root / store.location.key_for(ref.sha256), (month_ago, month_ago))
    young = store.put(os.urandom(1000))
    report = collect(forced, store, [payloads_topic])
    assert report.deleted == [store.location.key_for(orphan.sha256)]
    assert report.collection.kept_referenced == 1 and report.collection.kept_young == 1
    assert store.store.stat(store.location.key_for(kept.sha256)) is not None
    assert store.store.stat(store.location.key_for(young.sha256)) is not None
    assert store.store.stat(store.location.key_for(orphan.sha256)) is None
