from pathlib import Path

import pytest

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, LockedSchemaIds
from app.contracts import headers as h
from app.contracts.failure_event import new_failure_event
from app.pipeline.intake import Accepted, Quarantined, RawRecord, receive

REPO = Path(__file__).resolve().parents[3]

NOW_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))


def raw(value: bytes | None) -> RawRecord:
    return RawRecord("recovery.failures", 1, 7, 1000, b"k", value, [("trace", b"abc")])


def test_incident_is_the_work_item_when_given(codec: AvroCodec) -> None:
    event = new_failure_event(kind="UNKNOWN", error_type="x", service="s", work_item_id="w")
    outcome = receive(raw(codec.encode("failure-event", event)), codec, now_ms=NOW_MS)
    assert isinstance(outcome, Accepted)
    assert outcome.incident_id == "w"


def test_incident_falls_back_to_the_event_id(codec: AvroCodec) -> None:
    event = new_failure_event(kind="UNKNOWN", error_type="x", service="s")
    outcome = receive(raw(codec.encode("failure-event", event)), codec, now_ms=NOW_MS)
    assert isinstance(outcome, Accepted)
    assert outcome.incident_id == event["event_id"]


def test_undecodable_input_is_quarantined_whole_with_context(codec: AvroCodec) -> None:
    outcome = receive(raw(b"garbage"), codec, now_ms=NOW_MS)
    assert isinstance(outcome, Quarantined)
    assert outcome.key == b"k" and outcome.value == b"garbage"
    assert outcome.headers[0] == ("trace", b"abc")
    assert h.header_value(outcome.headers, h.ORIGINAL_OFFSET) == "7"
    assert h.header_value(outcome.headers, h.ORIGINAL_PARTITION) == "1"
    assert "magic byte" in h.header_value(outcome.headers, h.REASON)


def test_a_null_value_is_quarantined(codec: AvroCodec) -> None:
    outcome = receive(raw(None), codec, now_ms=NOW_MS)
    assert isinstance(outcome, Quarantined)
    assert "empty" in outcome.reason


def test_context_headers_replace_an_earlier_hop() -> None:
    first = h.with_context([("a", b"1")], {h.ATTEMPT: 1})
    second = h.with_context(first, {h.ATTEMPT: 2})
    assert second == [("a", b"1"), (h.ATTEMPT, b"2")]
