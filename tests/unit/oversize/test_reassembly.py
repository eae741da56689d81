import os

from app.oversize import headers as oh
from app.oversize import policy as p
from app.oversize.encoder import encode
from app.oversize.reassembly import Reassembler
from app.oversize.records import Incoming
from app.oversize.store import open_store
from tests.unit.oversize.helpers import as_incoming

LIMIT = 50_000


def one(records):
    [record] = as_incoming(records)
    return record


def test_plain_records_pass_through_untouched():
    record = Incoming("t", 0, 5, 1, b"k", b"v", [("a", b"1")])
    [whole] = Reassembler().process(record).delivered
    assert (whole.key, whole.value, whole.headers, whole.strategy) == (b"k", b"v",
                                                                       [("a", b"1")], None)


def test_compressed_record_comes_back_whole():
    payload = b"abc" * 100_000
    encoded = encode("t", b"k", payload, [("a", b"1")], limit=LIMIT, policy=p.TopicPolicy())
    [whole] = Reassembler().process(one(encoded.records)).delivered
    assert whole.value == payload and whole.headers == [("a", b"1")]
    assert whole.strategy == oh.COMPRESSION


def test_claim_check_is_fetched_and_verified(tmp_path):
    store = open_store(f"file://{tmp_path}", "cc/", signing_key=b"k")
    payload = os.urandom(200_000)
    encoded = encode("t", b"k", payload, [("a", b"1")], limit=LIMIT,
                     policy=p.TopicPolicy(force=oh.EXTERNAL_STORAGE), store=store)
    [whole] = Reassembler(store=store).process(one(encoded.records)).delivered
    assert whole.value == payload and whole.headers == [("a", b"1")]


def test_compressed_claim_check(tmp_path):
    store = open_store(f"file://{tmp_path}", "", signing_key=b"k")
    payload = os.urandom(100_000) + bytes(3_000_000)
    encoded = encode("t", None, payload, None, limit=10_000,
                     policy=p.TopicPolicy(disabled=frozenset({oh.FRAGMENTATION})), store=store)
    assert encoded.strategy == oh.EXTERNAL_STORAGE and encoded.codec == "zstd"
    [whole] = Reassembler(store=store).process(one(encoded.records)).delivered
    assert whole.value == payload


def test_reference_without_a_store_goes_to_the_dead_letter_topic(tmp_path):
    store = open_store(f"file://{tmp_path}", "")
    encoded = encode("t", None, os.urandom(60_000), None, limit=LIMIT,
                     policy=p.TopicPolicy(force=oh.EXTERNAL_STORAGE), store=store)
    outcome = Reassembler(store=None).process(one(encoded.records))
    assert outcome.rejected[0].destination == "dlq"


def test_forged_reference_is_poison(tmp_path):
    producer_store = open_store(f"file://{tmp_path}", "", signing_key=b"attacker")
    consumer_store = open_store(f"file://{tmp_path}", "", signing_key=b"real")
    encoded = encode("t", None, os.urandom(60_000), None, limit=LIMIT,
                     policy=p.TopicPolicy(force=oh.EXTERNAL_STORAGE), store=producer_store)
    outcome = Reassembler(store=consumer_store).process(one(encoded.records))
    assert outcome.rejected[0].destination == "poison"
    assert "signature" in outcome.rejected[0].reason
    assert consumer_store.fetches == 0


def test_same_message_id_is_delivered_once_whatever_carries_it():
    payload = b"abc" * 100_000
    first = encode("t", b"k", payload, None, limit=LIMIT, policy=p.TopicPolicy(),
                   message_id="m")
    reader = Reassembler()
    assert len(reader.process(one(first.records)).delivered) == 1
    again = reader.process(one(first.records))
    assert again.delivered == [] and again.duplicate


def test_corrupt_compressed_record_and_unknown_strategy_are_poison():
    bad = Incoming("t", 0, 1, None, None, b"junk",
                   [(oh.STRATEGY, b"compression"), (oh.CODEC, b"zstd"),
                    (oh.ORIGINAL_SIZE, b"10")])
    assert Reassembler().process(bad).rejected[0].destination == "poison"
    odd = Incoming("t", 0, 1, None, None, b"x", [(oh.STRATEGY, b"teleport")])
    assert "unknown oversize strategy" in Reassembler().process(odd).rejected[0].reason
