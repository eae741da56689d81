"""Mutated records sent to the real worker's intake: each lands in the poison topic with a
reason, and the worker still handles a good failure event sent after them."""

from __future__ import annotations

import random
import struct

import pytest
from confluent_kafka import Producer

from app.contracts import headers as h
from app.contracts.failure_event import SUBJECT, new_failure_event
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration


def mutations(valid: bytes, count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    out = [b"", b"\x00", valid[:4], b"\x01" + valid[1:], valid[:-9], valid + b"\x00\x01",
           b"\x00" + struct.pack(">I", 987_654) + valid[5:], b"\x00\x00\x00\x00\x01" + b"\xff" * 64]
    while len(out) < count:
        data = bytearray(valid)
        at = rng.randrange(5, len(data))
        data[at:at + 3] = bytes([0xFF, 0xFF, 0xFF])
        del data[rng.randrange(at + 1, len(data)):]
        out.append(bytes(data))
    return out


def test_mutated_records_are_poisoned_with_a_reason_and_the_worker_goes_on(
        applied_topics, worker_factory, topic_prefix):
    bootstrap = applied_topics["KAFKA_BOOTSTRAP_SERVERS"]
    codec = locked_codec()
    good = new_failure_event(kind="MCP_CONNECTION_LOST", error_type="authentication_failure",
                             service="fuzz", work_item_id="after-the-storm")
    valid = codec.encode(SUBJECT, good)
    bad = mutations(valid, 40)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, value in enumerate(bad):
        producer.produce(f"{topic_prefix}recovery.failures", key=f"bad-{i}".encode(), value=value,
                         headers=[("x-huge", b"h" * 200_000), ("x-dup", b"1"), ("x-dup", b"2")])
    producer.produce(f"{topic_prefix}recovery.failures", key=b"after-the-storm", value=valid)
    producer.flush(30)
    poison = TopicReader(bootstrap, [f"{topic_prefix}recovery.poison"])
    events = TopicReader(bootstrap, [f"{topic_prefix}recovery.events"])
    worker = worker_factory()
    assert poison.wait_for(lambda ms: len(ms) >= len(bad), timeout=90), worker.log_tail()
    assert events.wait_for(lambda ms: any(
        e["incident_id"] == "after-the-storm" and e["outcome"] for e in lifecycle(codec, ms)),
        timeout=60), worker.log_tail()
    keys = sorted(m.key() for m in poison.messages)
    assert keys == sorted(f"bad-{i}".encode() for i in range(len(bad)))
    for message in poison.messages:
        reason = h.header_value(message.headers(), h.REASON)
        assert reason and reason.startswith("undecodable failure event: "), reason
        original = dict((k, v) for k, v in message.headers() if k == "x-huge")
        assert original["x-huge"] == b"h" * 200_000  # the record is kept, headers and all
    poison.close()
    events.close()
