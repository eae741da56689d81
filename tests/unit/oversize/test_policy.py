import pytest

from app.oversize import policy as p
from app.oversize.headers import COMPRESSION, EXTERNAL_STORAGE, FRAGMENTATION


def test_default_order_is_the_source_documents():
    assert p.TopicPolicy().candidates() == (COMPRESSION, FRAGMENTATION, EXTERNAL_STORAGE)


def test_forced_strategy_is_the_only_one_tried():
    assert p.parse_policy({"force": "external_storage"}).candidates() == (EXTERNAL_STORAGE,)


def test_disabled_strategies_are_skipped():
    policy = p.parse_policy({"disable": ["compression", "external_storage"]})
    assert policy.candidates() == (FRAGMENTATION,)


def test_per_topic_map_with_wildcard():
    configured = {"orders": {"force": "fragmentation"}, "*": {"disable": ["compression"]}}
    assert p.topic_policy("orders", configured).force == FRAGMENTATION
    assert p.topic_policy("other", configured).disabled == {COMPRESSION}
    assert p.topic_policy("x", {}) == p.TopicPolicy()


@pytest.mark.parametrize("raw, message", [
    ({"force": "zip"}, "force='zip'"),
    ({"disable": ["teleport"]}, "disable"),
    ({"force": "compression", "disable": ["compression"]}, "both forced and disabled"),
    ({"codecs": ["brotli"]}, "codecs"),
    ({"max_message_bytes": 10}, "too small"),
    ({"forse": "compression"}, "unknown keys"),
])
def test_bad_policies_are_refused_with_the_reason(raw, message):
    with pytest.raises(p.PolicyError, match=message):
        p.parse_policy(raw, where="orders")


def test_effective_limit_never_exceeds_what_the_producer_sends():
    assert p.effective_limit(1_048_576, 1_000_000, p.TopicPolicy()) == 1_000_000
    assert p.effective_limit(500_000, 1_000_000, p.TopicPolicy()) == 500_000
    assert p.effective_limit(None, 1_000_000, p.TopicPolicy(max_message_bytes=300_000)) == 300_000
    # A configured limit overrides the topic's own.
    assert p.effective_limit(900_000, 1_000_000, p.TopicPolicy(max_message_bytes=200_000)) \
        == 200_000


def test_must_transform_only_when_oversized_or_forced():
    assert not p.must_transform(999, 1000, p.TopicPolicy())
    assert p.must_transform(1001, 1000, p.TopicPolicy())
    assert p.must_transform(10, 1000, p.TopicPolicy(force=FRAGMENTATION))


def test_codec_tried_only_when_its_estimate_might_fit():
    assert p.codec_worth_trying(1200, 1000, p.TopicPolicy())
    assert not p.codec_worth_trying(5000, 1000, p.TopicPolicy())
    assert p.codec_worth_trying(5000, 1000, p.TopicPolicy(force=COMPRESSION))


def test_fragment_layout_fits_the_limit():
    layout = p.fragment_layout(10_000_000, 1_000_000, 700, p.TopicPolicy())
    assert isinstance(layout, p.Layout)
    assert layout.chunk == 999_300
    assert layout.count == 11
    assert layout.chunk * layout.count >= 10_000_000


def test_fragment_layout_refuses_too_large_or_no_room():
    too_big = p.fragment_layout(10_000, 1000, 10, p.TopicPolicy(max_fragmented_bytes=5000))
    assert isinstance(too_big, p.NoLayout) and "max_fragmented_bytes" in too_big.reason
    no_room = p.fragment_layout(10_000, 1000, 900, p.TopicPolicy())
    assert isinstance(no_room, p.NoLayout) and "no room" in no_room.reason


def test_record_size_counts_key_value_and_headers():
    assert p.record_size(b"k", 100, [("a", b"bb")]) == p.RECORD_OVERHEAD + 1 + 100 + 3 + 12
