import os

import pytest

from app.contracts import headers as h
from app.oversize import headers as oh
from app.oversize import policy as p
from app.oversize.encoder import MessageTooLarge, encode, fragment_set_id
from app.oversize.store import open_store

LIMIT = 100_000


def fits(record, limit=LIMIT):
    return p.record_size(record.key, len(record.value), record.headers) <= limit


def test_a_payload_that_fits_is_sent_as_it_is():
    encoded = encode("t", b"k", b"small", [("a", b"1")], limit=LIMIT, policy=p.TopicPolicy())
    assert encoded.strategy is None
    assert [(r.key, r.value, r.headers) for r in encoded.records] == [(b"k", b"small",
                                                                        [("a", b"1")])]


def test_compressible_payload_is_compressed_with_the_codec_named():
    payload = b"hello world " * 50_000
    encoded = encode("t", b"k", payload, [("a", b"1")], limit=LIMIT, policy=p.TopicPolicy())
    assert encoded.strategy == oh.COMPRESSION
    [record] = encoded.records
    assert h.header_value(record.headers, oh.CODEC) == "zstd"
    assert h.header_value(record.headers, oh.STRATEGY) == oh.COMPRESSION
    assert record.headers[0] == ("a", b"1")  # original headers first, untouched
    assert fits(record)


def test_codec_order_follows_the_policy():
    payload = b"hello world " * 50_000
    encoded = encode("t", None, payload, None, limit=LIMIT,
                     policy=p.TopicPolicy(codecs=("gzip", "zstd")))
    assert encoded.codec == "gzip"


def test_random_payload_is_fragmented_and_every_fragment_fits():
    payload = os.urandom(1_000_000)
    encoded = encode("t", b"key", payload, [("a", b"1")], limit=LIMIT, policy=p.TopicPolicy(),
                     message_id="m-1")
    assert encoded.strategy == oh.FRAGMENTATION
    assert [a.strategy for a in encoded.attempts] == [oh.COMPRESSION, oh.FRAGMENTATION]
    assert all(fits(r) for r in encoded.records)
    assert b"".join(bytes(r.value) for r in encoded.records) == payload
    assert all(r.key == b"key" for r in encoded.records)
    first, second = encoded.records[:2]
    assert ("a", b"1") in first.headers and ("a", b"1") not in second.headers
    assert h.header_value(second.headers, oh.FRAGMENT_ID) == fragment_set_id("m-1")
    assert h.header_value(second.headers, oh.FRAGMENT_INDEX) == "1"
    assert h.header_int(second.headers, oh.FRAGMENT_TOTAL) == len(encoded.records)
    assert h.header_value(second.headers, oh.MESSAGE_ID) == "m-1"


def test_fragments_of_a_keyless_record_share_a_key_and_say_so():
    encoded = encode("t", None, os.urandom(300_000), None, limit=LIMIT, policy=p.TopicPolicy())
    keys = {r.key for r in encoded.records}
    assert len(keys) == 1 and None not in keys
    assert all(h.header_value(r.headers, oh.KEY_NULL) == "1" for r in encoded.records)


def test_same_message_id_gives_the_same_fragment_set():
    payload = os.urandom(300_000)
    one = encode("t", None, payload, None, limit=LIMIT, policy=p.TopicPolicy(), message_id="x")
    two = encode("t", None, payload, None, limit=LIMIT, policy=p.TopicPolicy(), message_id="x")
    assert [r.headers for r in one.records] == [r.headers for r in two.records]


def test_partly_compressible_payload_is_fragmented_compressed():
    payload = os.urandom(150_000) + bytes(2_000_000)
    encoded = encode("t", None, payload, None, limit=LIMIT,
                     policy=p.TopicPolicy(codecs=("lz4",)))
    assert encoded.strategy == oh.FRAGMENTATION and encoded.codec == "lz4"
    assert sum(len(r.value) for r in encoded.records) < 300_000


def test_forced_external_storage_stores_and_references(tmp_path):
    store = open_store(f"file://{tmp_path}", "cc/", signing_key=b"k")
    payload = os.urandom(500_000)
    encoded = encode("t", b"k", payload, [("a", b"1")], limit=LIMIT,
                     policy=p.TopicPolicy(force=oh.EXTERNAL_STORAGE), store=store)
    assert encoded.strategy == oh.EXTERNAL_STORAGE
    [record] = encoded.records
    assert len(record.value) < 1000 and fits(record)
    assert encoded.stored_url and encoded.stored_url.startswith(f"file://{tmp_path}/cc/")
    assert len(list(store.store.list("cc/"))) == 1


def test_when_every_strategy_fails_the_error_lists_what_was_attempted():
    with pytest.raises(MessageTooLarge) as caught:
        encode("orders", None, os.urandom(2_000_000), None, limit=LIMIT,
               policy=p.TopicPolicy(max_fragmented_bytes=1_000_000))
    error = caught.value
    assert error.strategies_attempted == [oh.COMPRESSION, oh.FRAGMENTATION, oh.EXTERNAL_STORAGE]
    assert "orders" in str(error) and "max_fragmented_bytes" in str(error)
    assert "no object store configured" in str(error)


def test_all_disabled_is_a_clear_error():
    with pytest.raises(MessageTooLarge, match="none"):
        encode("t", None, os.urandom(200_000), None, limit=LIMIT,
               policy=p.TopicPolicy(disabled=frozenset(oh.STRATEGIES)))


def test_forced_compression_that_cannot_fit_does_not_fall_through():
    with pytest.raises(MessageTooLarge) as caught:
        encode("t", None, os.urandom(200_000), None, limit=LIMIT,
               policy=p.TopicPolicy(force=oh.COMPRESSION))
    assert caught.value.strategies_attempted == [oh.COMPRESSION]
