"""Registry lookups: only "no such id" (404) makes a record undecodable; any other registry
failure is transient and holds the record (retried with backoff, logged), never poisons it.
Subject naming strategies. The same against a real registry: tests/integration/test_registry.py."""

import asyncio
import json
import logging
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError

from app.avro.catalog import SchemaCatalog
from app.avro.codec import (
    AvroCodec,
    DecodeError,
    RegistrySchemaIds,
    SchemaRegistryRefused,
    SchemaRegistryUnavailable,
    SubjectStrategy,
    registry_subject,
    wait_until_registered,
)
from app.contracts.records import RawRecord
from app.pipeline import intake
from tests.unit.avro.test_codec import sample_failure

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(REPO / "schemas")


class FlakyClient:
    """A registry client whose lookups fail `failures` times with `error`, then answer from a
    mock registry (which holds what was registered)."""

    def __init__(self, real: SchemaRegistryClient, error: Exception, failures: int):
        self.real, self.error, self.failures = real, error, failures
        self.lookups = 0

    def get_schema(self, schema_id: int):
        self.lookups += 1
        if self.lookups <= self.failures:
            raise self.error
        return self.real.get_schema(schema_id)

    def register_schema(self, subject: str, schema: Schema) -> int:
        if self.failures and self.lookups < self.failures:
            self.lookups += 1
            raise self.error
        return self.real.register_schema(subject, schema)


def encoded_elsewhere(catalog: SchemaCatalog, url: str) -> tuple[SchemaRegistryClient, bytes]:
    """A failure event written by another producer through a shared (mock) registry."""
    shared = SchemaRegistryClient.new_client({"url": url})
    producer = AvroCodec(RegistrySchemaIds(catalog, shared))
    return shared, producer.encode("failure-event", sample_failure())


def raw(value: bytes) -> RawRecord:
    return RawRecord("t", 0, 5, None, b"k", value, [])


TRANSIENT = [
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ReadTimeout("timed out"),
    SchemaRegistryError(500, 50001, "Error in the backend data store"),
    SchemaRegistryError(503, -1, "Service Unavailable"),
    SchemaRegistryError(401, 40101, "Unauthorized"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_a_transient_registry_failure_is_not_an_unknown_id(catalog, error) -> None:
    shared, data = encoded_elsewhere(catalog, f"mock://flaky-{id(error)}")
    worker = AvroCodec(RegistrySchemaIds(catalog, FlakyClient(shared, error, 2)))
    with pytest.raises(SchemaRegistryUnavailable, match="looking up schema id"):
        worker.decode(data, "failure-event")
    # intake does not turn it into poison: the exception reaches the worker, which retries
    with pytest.raises(SchemaRegistryUnavailable):
        intake.receive(raw(data), worker, now_ms=0)
    assert worker.decode(data, "failure-event")["work_item_id"] == "w-1"  # answered now


def test_only_a_404_means_unknown(catalog) -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://unknown-id"})
    codec = AvroCodec(RegistrySchemaIds(catalog, client))
    received = intake.receive(raw(b"\x00\x00\x00\x03\xe7abc"), codec, now_ms=0)
    assert isinstance(received, intake.Quarantined)
    assert "unknown schema id 999" in received.reason
    gone = FlakyClient(client, SchemaRegistryError(404, 40403, "Schema not found"), 5)
    with pytest.raises(DecodeError, match="unknown schema id 999"):
        AvroCodec(RegistrySchemaIds(catalog, gone)).decode(b"\x00\x00\x00\x03\xe7abc")


def test_the_worker_waits_for_the_registry_with_capped_backoff(catalog, caplog) -> None:
    shared, data = encoded_elsewhere(catalog, "mock://waits")
    flaky = FlakyClient(shared, httpx.ConnectError("Connection refused"), 4)
    codec = AvroCodec(RegistrySchemaIds(catalog, flaky, url="http://registry:8081"))
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)
        await real_sleep(0)

    log = logging.getLogger("test.worker")
    with caplog.at_level(logging.WARNING, logger="test.worker"):
        asyncio.sleep = record_sleep  # type: ignore[assignment]
        try:
            asyncio.run(codec.wait_for_writer(data, log, first_delay=0.5, max_delay=2.0))
        finally:
            asyncio.sleep = real_sleep  # type: ignore[assignment]
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert len(caplog.records) == 4
    assert "http://registry:8081: looking up schema id" in caplog.records[0].getMessage()
    assert "the record waits" in caplog.records[0].getMessage()
    assert isinstance(intake.receive(raw(data), codec, now_ms=0), intake.Accepted)
    assert flaky.lookups == 5  # decoding used the fetched schema


def test_waiting_is_a_no_op_for_cached_ids_and_bytes_decode_refuses(catalog) -> None:
    flaky = FlakyClient(SchemaRegistryClient.new_client({"url": "mock://noop"}),
                        httpx.ConnectError("down"), 100)
    codec = AvroCodec(RegistrySchemaIds(catalog, flaky))
    log = logging.getLogger("test.noop")
    for data in (None, b"", b"\x00\x00", b"\x01\x00\x00\x00\x01x"):
        asyncio.run(asyncio.wait_for(codec.wait_for_writer(data, log), 1))
    assert flaky.lookups == 0


def test_start_up_retries_while_the_registry_is_down(catalog, caplog) -> None:
    real = SchemaRegistryClient.new_client({"url": "mock://startup"})
    codec = AvroCodec(RegistrySchemaIds(catalog, FlakyClient(real, httpx.ConnectError("no"), 3)))
    slept: list[float] = []
    with caplog.at_level(logging.ERROR):
        wait_until_registered(codec, ["failure-event", "lifecycle-event"],
                              logging.getLogger("test.startup"), first_delay=1, max_delay=2,
                              sleep=slept.append)
    assert slept == [1, 2, 2]
    assert all("schema registry unavailable at start-up" in r.getMessage()
               for r in caplog.records)
    assert sorted(real.get_subjects()) == ["failure-event", "lifecycle-event"]


def test_an_incompatible_registration_is_refused_not_retried(catalog) -> None:
    client = FlakyClient(SchemaRegistryClient.new_client({"url": "mock://refused"}),
                         SchemaRegistryError(409, 409, "Schema being registered is "
                                                       "incompatible"), 1)
    codec = AvroCodec(RegistrySchemaIds(catalog, client))
    with pytest.raises(SchemaRegistryRefused, match=r"HTTP 409\): Schema being registered"):
        wait_until_registered(codec, ["lifecycle-event"], logging.getLogger("t"),
                              sleep=lambda s: None)


def test_subject_naming_strategies(catalog) -> None:
    failure = catalog.subject("failure-event")
    assert registry_subject(failure, "catalog") == "failure-event"
    assert registry_subject(failure, SubjectStrategy.TOPIC, "p.") == "p.recovery.failures-value"
    assert registry_subject(failure, "record") == "io.recovery.v1.FailureEvent"
    renamed = {**failure.latest.schema, "name": "Failure", "namespace": "io.recovery.v2"}
    assert registry_subject(failure, "record", schema=renamed) == "io.recovery.v2.Failure"
    assert registry_subject(failure, "catalog", schema=renamed) == "failure-event"
    with pytest.raises(ValueError):
        registry_subject(failure, "sideways")


@pytest.mark.parametrize(("strategy", "subject"), [
    ("catalog", "lifecycle-event"), ("topic", "x.recovery.events-value"),
    ("record", "io.recovery.v1.LifecycleEvent")])
def test_the_codec_registers_under_the_chosen_subject(catalog, strategy, subject) -> None:
    from app.avro.codec import codec_from_settings

    url = f"mock://strategy-{strategy}"
    codec = codec_from_settings(catalog, url, subject_strategy=strategy, topic_prefix="x.")
    schema_id, _ = codec.ids.writer("lifecycle-event")
    client = codec.ids.client
    assert client.get_subjects() == [subject]
    assert json.loads(client.get_schema(schema_id).schema_str)["name"] == "LifecycleEvent"


def test_an_id_of_a_schema_that_is_not_avro_is_poison(catalog) -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://protobuf"})
    schema_id = client.register_schema(
        "other", Schema('syntax = "proto3"; message M { string a = 1; }', "PROTOBUF"))
    codec = AvroCodec(RegistrySchemaIds(catalog, client))
    data = b"\x00" + schema_id.to_bytes(4, "big") + b"\x00"
    asyncio.run(codec.wait_for_writer(data, logging.getLogger("t")))  # returns, no crash
    received = intake.receive(raw(data), codec, now_ms=0)
    assert isinstance(received, intake.Quarantined) and "not Avro" in received.reason
