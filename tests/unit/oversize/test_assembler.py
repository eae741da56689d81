import os
import random

from app.contracts import headers as h
from app.oversize import headers as oh
from app.oversize import policy as p
from app.oversize.assembler import Assembler, AssemblyLimits
from app.oversize.encoder import encode
from app.oversize.records import Incoming
from tests.unit.oversize.helpers import as_incoming, at

LIMIT = 50_000


def fragments(payload: bytes, key: bytes | None = b"k", headers=(("trace", b"t-1"),),
              message_id: str | None = None, **policy) -> list[Incoming]:
    encoded = encode("orders", key, payload, list(headers), limit=LIMIT,
                     policy=p.TopicPolicy(**policy), message_id=message_id)
    assert encoded.strategy == oh.FRAGMENTATION
    return as_incoming(encoded.records)


def feed(assembler: Assembler, records: list[Incoming], now: float = 0.0):
    delivered, rejected = [], []
    for record in records:
        outcome = assembler.add(record, now)
        delivered += outcome.delivered
        rejected += outcome.rejected
    return delivered, rejected


def test_in_order_set_is_delivered_once_with_original_key_and_headers():
    payload = os.urandom(200_000)
    assembler = Assembler()
    delivered, rejected = feed(assembler, fragments(payload))
    assert rejected == []
    [whole] = delivered
    assert bytes(whole.value) == payload
    assert whole.key == b"k"
    assert whole.headers == [("trace", b"t-1")]
    assert whole.strategy == oh.FRAGMENTATION
    assert assembler.sets_in_progress == 0 and assembler.memory_in_use == 0


def test_out_of_order_and_duplicated_fragments():
    payload = os.urandom(300_000)
    records = fragments(payload)
    shuffled = records + records[:3]
    random.Random(4).shuffle(shuffled)
    shuffled = [at(r, i) for i, r in enumerate(shuffled)]
    delivered, rejected = feed(Assembler(), shuffled)
    assert rejected == [] and len(delivered) == 1
    assert bytes(delivered[0].value) == payload


def test_interleaved_sets_and_a_keyless_message():
    one, two = os.urandom(150_000), os.urandom(170_000)
    a, b = fragments(one), fragments(two, key=None, headers=())
    mixed = [x for pair in zip(a, b, strict=False) for x in pair] + a[len(b):] + b[len(a):]
    mixed = [at(r, i) for i, r in enumerate(mixed)]
    delivered, _ = feed(Assembler(), mixed)
    got = {bytes(w.value): w for w in delivered}
    assert set(got) == {one, two}
    assert got[two].key is None and got[two].headers == []


def test_a_whole_set_sent_twice_is_delivered_once():
    records = fragments(os.urandom(120_000), message_id="same")
    again = fragments(os.urandom(120_000), message_id="same")  # same set id
    delivered, rejected = feed(Assembler(), records + again)
    assert len(delivered) == 1 and rejected == []


def test_compressed_fragment_set_is_decompressed():
    payload = os.urandom(60_000) + bytes(1_000_000)
    delivered, _ = feed(Assembler(), fragments(payload, codecs=("zstd",)))
    assert bytes(delivered[0].value) == payload


def test_memory_cap_spills_to_disk(tmp_path):
    payload = os.urandom(300_000)
    spill = tmp_path / "spill"
    assembler = Assembler(AssemblyLimits(memory_bytes=100_000, spill_dir=spill))
    records = fragments(payload)
    feed(assembler, records[:2])
    assert assembler.memory_in_use == 0
    assert len(list(spill.iterdir())) == 1  # assembled in a file, not in memory
    delivered, _ = feed(assembler, records[2:])
    assert bytes(delivered[0].value) == payload
    assert list(spill.iterdir()) == []


def test_memory_cap_without_spill_rejects_the_set_with_a_clear_reason():
    assembler = Assembler(AssemblyLimits(memory_bytes=100_000, spill_dir=None))
    records = fragments(os.urandom(300_000))
    delivered, rejected = feed(assembler, records)
    assert delivered == []
    assert {r.destination for r in rejected} == {"dlq"}
    assert "memory cap exceeded" in rejected[0].reason
    assert sum(len(r.records) for r in rejected) == len(records)  # nothing lost
    assert assembler.memory_in_use == 0


def test_memory_stays_bounded_across_sets():
    assembler = Assembler(AssemblyLimits(memory_bytes=250_000, spill_dir=None))
    first, second = fragments(os.urandom(200_000)), fragments(os.urandom(200_000))
    feed(assembler, first[:1])
    _, rejected = feed(assembler, second[:1])
    assert rejected and assembler.memory_in_use <= 250_000


def test_incomplete_set_expires_into_the_dead_letter_topic_with_its_fragments():
    records = fragments(os.urandom(200_000))
    assembler = Assembler(AssemblyLimits(expiry_s=10))
    kept = [records[0], records[2]]
    feed(assembler, kept, now=100.0)
    assert assembler.expire(105.0).rejected == []
    outcome = assembler.expire(111.0)
    [rejected] = outcome.rejected
    assert rejected.destination == "dlq"
    assert f"2 of {len(records)} fragments" in rejected.reason
    assert [r.value for r in rejected.records] == [r.value for r in kept]
    assert [r.headers for r in rejected.records] == [r.headers for r in kept]
    assert assembler.sets_in_progress == 0
    # A fragment arriving after its set expired goes the same way, not into a new set.
    late = assembler.add(records[1], 112.0)
    assert late.rejected and late.rejected[0].destination == "dlq"
    assert assembler.sets_in_progress == 0


def test_checksum_mismatch_is_poison():
    records = fragments(os.urandom(120_000))
    bad = records[1]
    records[1] = Incoming(bad.topic, bad.partition, bad.offset, bad.timestamp_ms, bad.key,
                          b"\0" * len(bad.value), bad.headers)
    delivered, rejected = feed(Assembler(), records)
    assert delivered == []
    assert rejected[0].destination == "poison" and "SHA-256" in rejected[0].reason
    assert len(rejected[0].records) == len(records)


def test_malformed_and_inconsistent_fragments_are_poison():
    records = fragments(os.urandom(120_000))
    first = records[0]
    no_index = Incoming(first.topic, 0, 99, None, first.key, first.value,
                        h.without(first.headers, [oh.FRAGMENT_INDEX]))
    outcome = Assembler().add(no_index)
    assert outcome.rejected[0].destination == "poison"
    assert "fragment header recovery.fragment.index is missing" in outcome.rejected[0].reason
    assembler = Assembler()
    assembler.add(records[0])
    other = records[1]
    wrong_total = Incoming(other.topic, 0, 98, None, other.key, other.value,
                           h.with_context(other.headers, {oh.FRAGMENT_TOTAL: 99}))
    assert "disagrees" in assembler.add(wrong_total).rejected[0].reason


def test_declared_size_above_the_limit_is_poison():
    records = fragments(os.urandom(120_000))
    outcome = Assembler(AssemblyLimits(max_message_bytes=1000)).add(records[0])
    assert outcome.rejected[0].destination == "poison"


def test_forgetting_a_revoked_partition_frees_its_sets():
    records = fragments(os.urandom(120_000))
    assembler = Assembler()
    feed(assembler, records[:1])
    assembler.forget_partition("orders", 0)
    assert assembler.sets_in_progress == 0 and assembler.memory_in_use == 0
    # Read again from the committed offset by the next owner: assembled normally.
    delivered, _ = feed(assembler, records)
    assert len(delivered) == 1
