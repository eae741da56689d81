import json
import struct
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, DecodeError, LockedSchemaIds, RegistrySchemaIds
from app.contracts.failure_event import new_failure_event
from app.contracts.lifecycle import RECOVERY_COMPLETED, lifecycle_event

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(REPO / "schemas")


@pytest.fixture
def codec(catalog: SchemaCatalog) -> AvroCodec:
    return AvroCodec(LockedSchemaIds(catalog))


def sample_failure() -> dict:
    return new_failure_event(
        kind="EVENT_DELIVERY_FAILED", error_type="consumer_unavailable", service="orders",
        consumer_group="billing", work_item_id="w-1",
        failed_record={"topic": "orders", "partition": 2, "offset": 41, "key": b"k",
                       "value": b"\x00\xffraw", "headers": [{"key": "h", "value": b"v"}]},
        detail=("EventDeliveryFailed", {"cause": "CONSUMER_UNAVAILABLE",
                                        "failed_consumers": ["billing"]}),
    )


def test_wire_format_header_carries_locked_id(codec: AvroCodec, catalog: SchemaCatalog) -> None:
    data = codec.encode("failure-event", sample_failure())
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert schema_id == catalog.subject("failure-event").latest.schema_id


def test_round_trip_keeps_failed_record_bytes_and_detail_branch(codec: AvroCodec) -> None:
    event = sample_failure()
    decoded = codec.decode(codec.encode("failure-event", event), "failure-event")
    assert decoded["failed_record"]["value"] == b"\x00\xffraw"
    assert decoded["failed_record"]["headers"] == [{"key": "h", "value": b"v"}]
    assert decoded["detail"][0] == "io.recovery.v1.EventDeliveryFailed"
    assert decoded["detail"][1]["failed_consumers"] == ["billing"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x00\x00", "shorter than the 5-byte"),
        (b"\x01\x00\x00\x00\x01abc", "magic byte 1"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown schema id"),
        (b"\x00\x00\x00\x00\x01\x80", "malformed Avro body"),
    ],
)
def test_bad_bytes_give_a_reason(codec: AvroCodec, data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.decode(data, "failure-event")


def test_truncated_record_is_rejected(codec: AvroCodec) -> None:
    data = codec.encode("failure-event", sample_failure())
    with pytest.raises(DecodeError):
        codec.decode(data[:-7], "failure-event")


def test_trailing_bytes_are_rejected(codec: AvroCodec) -> None:
    data = codec.encode("failure-event", sample_failure())
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data + b"\x00", "failure-event")


def test_encode_rejects_a_record_missing_required_fields(codec: AvroCodec) -> None:
    with pytest.raises(ValueError, match="failure-event"):
        codec.encode("failure-event", {"event_id": "x"})


def test_confluent_deserializer_reads_registry_mode_bytes(catalog: SchemaCatalog) -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://codec-test"})
    codec = AvroCodec(RegistrySchemaIds(catalog, client))
    event = lifecycle_event(RECOVERY_COMPLETED, "inc-1", attempt=2, duration_ms=1234,
                            payload={"attemptsRequired": 2})
    data = codec.encode("lifecycle-event", event)
    decoded = AvroDeserializer(client)(data, SerializationContext("t", MessageField.VALUE))
    assert decoded["incident_id"] == "inc-1"
    assert decoded["duration_ms"] == 1234
    assert json.loads(decoded["payload_json"]) == {"attemptsRequired": 2}


def test_confluent_deserializer_reads_locked_ids(catalog: SchemaCatalog, codec: AvroCodec) -> None:
    # A registry that registered the schemas in lock order hands out the same ids, so
    # bytes written with locked ids decode with confluent-kafka's own deserializer.
    from confluent_kafka.schema_registry import Schema

    client = SchemaRegistryClient.new_client({"url": "mock://locked-ids"})
    versions = sorted((v for s in catalog.subjects.values() for v in s.versions),
                      key=lambda v: v.schema_id)
    for version in versions:
        given = client.register_schema(version.subject, Schema(json.dumps(version.schema), "AVRO"))
        assert given == version.schema_id
    data = codec.encode("failure-event", sample_failure())
    decoded = AvroDeserializer(client)(data, SerializationContext("t", MessageField.VALUE))
    assert decoded["work_item_id"] == "w-1"
    assert decoded["failed_record"]["value"] == b"\x00\xffraw"
