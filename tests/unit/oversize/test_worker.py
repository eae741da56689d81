from app.oversize import policy as op
from app.scenarios.message_too_large import detail_of, is_message_too_large, size_limit


def event(kind: str, cause: str | None) -> dict:
    detail = ("io.recovery.v1.EventDeliveryFailed", {"cause": cause}) if cause else None
    return {"kind": kind, "detail": detail}


def test_takes_over_only_message_too_large_delivery_failures():
    assert is_message_too_large(event("EVENT_DELIVERY_FAILED", "MESSAGE_TOO_LARGE"))
    assert not is_message_too_large(event("EVENT_DELIVERY_FAILED", "CONSUMER_UNAVAILABLE"))
    assert not is_message_too_large(event("EVENT_DELIVERY_FAILED", None))
    assert not is_message_too_large(event("PROCESSING_FAILED", "MESSAGE_TOO_LARGE"))
    assert detail_of({"detail": None}) == {}


def test_republished_records_fit_every_limit_known():
    policy = op.TopicPolicy()
    assert size_limit(None, None, 1_000_000, policy) == 1_000_000
    assert size_limit(500_000, 1_048_576, 1_000_000, policy) == 500_000
    assert size_limit(None, 800_000, 1_000_000, policy) == 800_000
    assert size_limit(2_000_000, None, 1_000_000, op.TopicPolicy(max_message_bytes=300_000)) \
        == 300_000
