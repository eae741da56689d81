"""Against a real Confluent-compatible registry (Apicurio Registry 2.4.2, scripts/registry):
`recovery schemas push` and `check --registry`, a 409 for an incompatible version, registry
ids that only a 404 makes unknown, the worker holding (not poisoning) a record while the
registry hangs, and confluent-kafka's AvroSerializer/AvroDeserializer on the records, under
both subject naming strategies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.avro.catalog import SchemaCatalog, write_lock
from app.avro.codec import (
    DecodeError,
    SchemaRegistryUnavailable,
    codec_from_settings,
)
from app.contracts.failure_event import new_failure_event
from tests.conftest import run_cli, wait_until
from tests.registry_helpers import own_registry, schema_registry_url  # noqa: F401

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def lifecycle_v1() -> dict:
    return json.loads((REPO / "schemas" / "lifecycle-event" / "v1.avsc").read_text())


@pytest.fixture
def registry_env(service_env: dict[str, str], schema_registry_url: str,  # noqa: F811
                 tmp_path: Path) -> dict[str, str]:
    """The session registry, this test's own subjects (topic naming, unique prefix) and a
    copy of schemas/ it may change."""
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    return {**service_env, "SCHEMA_REGISTRY_URL": schema_registry_url,
            "RECOVERY_SCHEMA_SUBJECT_STRATEGY": "topic", "RECOVERY_SCHEMAS_DIR": str(schemas)}


def test_push_registers_every_version_with_its_mode(registry_env: dict[str, str],
                                                    topic_prefix: str) -> None:
    pushed = run_cli(registry_env, "schemas", "push")
    assert pushed.returncode == 0, pushed.stderr
    lines = pushed.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("failure-event v1: id ")
    assert f"under {topic_prefix}recovery.failures-value (FULL_TRANSITIVE)" in lines[0]
    assert f"under {topic_prefix}recovery.events-value (BACKWARD_TRANSITIVE)" in lines[1]
    client = SchemaRegistryClient({"url": registry_env["SCHEMA_REGISTRY_URL"]})
    subject = f"{topic_prefix}recovery.events-value"
    latest = client.get_latest_version(subject)
    assert json.loads(latest.schema.schema_str)["name"] == "LifecycleEvent"
    assert client.get_compatibility(subject) == "BACKWARD_TRANSITIVE"
    again = run_cli(registry_env, "schemas", "push")  # idempotent: same ids
    assert again.returncode == 0 and again.stdout == pushed.stdout


def test_an_incompatible_version_is_refused_by_the_registry(registry_env: dict[str, str]) -> None:
    assert run_cli(registry_env, "schemas", "push").returncode == 0
    schemas = Path(registry_env["RECOVERY_SCHEMAS_DIR"])
    v2 = lifecycle_v1()
    v2["fields"].append({"name": "region", "type": "string"})  # no default: not BACKWARD
    (schemas / "lifecycle-event" / "v2.avsc").write_text(json.dumps(v2))
    write_lock(schemas)
    refused = run_cli(registry_env, "schemas", "push")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "refused lifecycle-event v2" in line and "as incompatible" in line
    assert "HTTP 409" in line and "Traceback" not in refused.stderr


def test_check_asks_the_registry(registry_env: dict[str, str], tmp_path: Path) -> None:
    assert run_cli(registry_env, "schemas", "push").returncode == 0
    good, bad = lifecycle_v1(), lifecycle_v1()
    good["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    bad["fields"].append({"name": "region", "type": "string"})
    (tmp_path / "good.avsc").write_text(json.dumps(good))
    (tmp_path / "bad.avsc").write_text(json.dumps(bad))
    ok = run_cli(registry_env, "schemas", "check", str(tmp_path / "good.avsc"),
                 "--subject", "lifecycle-event", "--registry")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "compatible with" in ok.stdout and "(BACKWARD_TRANSITIVE)" in ok.stdout
    no = run_cli(registry_env, "schemas", "check", str(tmp_path / "bad.avsc"),
                 "--subject", "lifecycle-event", "--registry")
    assert no.returncode == 1
    [line] = no.stdout.strip().splitlines()
    assert line.startswith("incompatible with") and "region" in line
    down = run_cli({**registry_env, "SCHEMA_REGISTRY_URL": "http://127.0.0.1:9/apis/ccompat/v7"},
                   "schemas", "check", str(tmp_path / "bad.avsc"), "--subject",
                   "lifecycle-event", "--registry")
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1


def test_only_a_404_makes_a_registry_id_unknown(own_registry) -> None:  # noqa: F811
    registry = own_registry()
    catalog = SchemaCatalog.load(REPO / "schemas")
    codec = codec_from_settings(catalog, registry.url, subject_strategy="catalog",
                                topic_prefix="")
    event = new_failure_event(kind="CACHE_CORRUPTED", error_type="serialization_error",
                              service="cache", work_item_id="w-404")
    data = codec.encode("failure-event", event)
    with pytest.raises(DecodeError, match="unknown schema id 987654"):
        codec.decode(b"\x00" + (987654).to_bytes(4, "big") + b"\x02", "failure-event")
    unreachable = codec_from_settings(catalog, "http://127.0.0.1:9/apis/ccompat/v7",
                                      subject_strategy="catalog", topic_prefix="")
    with pytest.raises(SchemaRegistryUnavailable, match="Connection refused"):
        unreachable.decode(data, "failure-event")  # the old code called this unknown
    fresh = codec_from_settings(catalog, registry.url, subject_strategy="catalog",
                                topic_prefix="")
    registry.freeze()
    try:
        began = time.monotonic()
        with pytest.raises(SchemaRegistryUnavailable):
            fresh.decode(data, "failure-event")
        assert time.monotonic() - began < 8  # one attempt is bounded (5 s)
    finally:
        registry.thaw()
    assert fresh.decode(data, "failure-event")["work_item_id"] == "w-404"


def read_topic(bootstrap: str, topic: str, want: int, timeout: float) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < want and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                found.append(message)
    finally:
        consumer.close()
    return found


@pytest.mark.parametrize("strategy", ["catalog", "topic"])
def test_worker_with_a_registry_that_hangs_holds_the_record(
        strategy: str, applied_topics: dict[str, str], own_registry,  # noqa: F811
        worker_factory, topic_prefix: str, kafka_bootstrap: str) -> None:
    """A failure event written by confluent-kafka's AvroSerializer (its default subject,
    <topic>-value, and a schema version the worker has not seen) arrives while the registry
    hangs: the worker waits instead of poisoning it, then handles it; its lifecycle events
    are read by confluent-kafka's AvroDeserializer."""
    registry = own_registry()
    applied_topics.update(SCHEMA_REGISTRY_URL=registry.url,
                          RECOVERY_SCHEMA_SUBJECT_STRATEGY=strategy)
    if strategy == "topic":
        # a registry that hangs at start-up: the worker says so and retries, then goes on
        registry.freeze()
    worker = worker_factory()
    if strategy == "topic":
        try:
            assert wait_until(lambda: "schema registry unavailable at start-up" in
                              worker.log_tail(200), 60), worker.log_tail()
            assert worker.proc is not None and worker.proc.poll() is None  # no crash
        finally:
            registry.thaw()
    client = SchemaRegistryClient({"url": registry.url})
    ours = ("lifecycle-event" if strategy == "catalog"
            else f"{topic_prefix}recovery.events-value")
    assert wait_until(lambda: ours in client.get_subjects(), 90), worker.log_tail()

    # another service's newer failure-event version: one more optional field
    schema = json.loads((REPO / "schemas" / "failure-event" / "v1.avsc").read_text())
    schema["fields"].append({"name": "producer_note", "type": ["null", "string"],
                             "default": None})
    serializer = AvroSerializer(client, json.dumps(schema),
                                conf={"auto.register.schemas": True})
    failures = f"{topic_prefix}recovery.failures"
    event = new_failure_event(kind="CACHE_CORRUPTED", error_type="serialization_error",
                              service="cache", work_item_id=f"w-{strategy}")
    event["producer_note"] = "from a Confluent serializer"
    value = serializer(event, SerializationContext(failures, MessageField.VALUE))
    schema_id = int.from_bytes(value[1:5], "big")
    assert client.get_subjects().count(f"{failures}-value") == 1
    events_topic = f"{topic_prefix}recovery.events"

    registry.freeze()
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
        producer.produce(failures, key=b"w", value=value)
        assert producer.flush(10) == 0
        poisoned: list = []

        def waiting_or_poisoned() -> bool:
            if f"looking up schema id {schema_id} failed" in worker.log_tail(400):
                return True
            poisoned.extend(read_topic(kafka_bootstrap, f"{topic_prefix}recovery.poison", 1, 1))
            return bool(poisoned)

        assert wait_until(waiting_or_poisoned, 120), worker.log_tail()
        assert poisoned == [], "a good record was poisoned while the registry hung"
        time.sleep(2)
        assert read_topic(kafka_bootstrap, f"{topic_prefix}recovery.poison", 1, 2) == []
    finally:
        registry.thaw()

    messages = read_topic(kafka_bootstrap, events_topic, 2, 90)
    assert len(messages) >= 2, worker.log_tail()
    deserializer = AvroDeserializer(client)
    lifecycle = [deserializer(m.value(), SerializationContext(events_topic, MessageField.VALUE))
                 for m in messages]
    assert {e["incident_id"] for e in lifecycle} == {f"w-{strategy}"}
    assert lifecycle[0]["event_type"] == "recovery/failure_received"
    assert lifecycle[0]["failure_event_id"] == event["event_id"]
    assert read_topic(kafka_bootstrap, f"{topic_prefix}recovery.poison", 1, 2) == []
    registered = client.get_schema(int.from_bytes(messages[0].value()[1:5], "big"))
    assert json.loads(registered.schema_str)["name"] == "LifecycleEvent"
    assert "the record waits" in worker.log_tail(400)


def test_produce_and_the_client_api_write_registry_ids_confluent_reads(
        registry_env: dict[str, str], applied_topics: dict[str, str], topic_prefix: str,
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.client.reporter import FailureReporter
    from app.settings import get_settings

    line = {"kind": "EVENT_DELIVERY_FAILED", "work_item_id": "cli-r",
            "source": {"service": "bus"}, "error": {"type": "topic_not_found"}}
    produced = subprocess.run([sys.executable, "-m", "app", "produce", "-"], cwd=REPO,
                              env=registry_env, input=json.dumps(line) + "\n",
                              capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    for name, value in registry_env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        reporter = FailureReporter()
        reporter.report(kind="CACHE_CORRUPTED", error_type="serialization_error",
                        service="cache", work_item_id="client-r")
        assert reporter.producer.flush(10) == 0
    finally:
        get_settings.cache_clear()
    failures = f"{topic_prefix}recovery.failures"
    messages = read_topic(kafka_bootstrap, failures, 2, 30)
    client = SchemaRegistryClient({"url": registry_env["SCHEMA_REGISTRY_URL"]})
    assert f"{failures}-value" in client.get_subjects()  # the topic strategy's subject
    deserializer = AvroDeserializer(client)
    decoded = [deserializer(m.value(), SerializationContext(failures, MessageField.VALUE))
               for m in messages]
    assert sorted(e["work_item_id"] for e in decoded) == ["cli-r", "client-r"]


def test_produce_with_the_registry_down_is_one_line(registry_env: dict[str, str],
                                                    applied_topics: dict[str, str]) -> None:
    line = {"kind": "EVENT_DELIVERY_FAILED", "work_item_id": "down",
            "source": {"service": "bus"}, "error": {"type": "topic_not_found"}}
    down = {**registry_env, "SCHEMA_REGISTRY_URL": "http://127.0.0.1:9/apis/ccompat/v7"}
    result = subprocess.run([sys.executable, "-m", "app", "produce", "-"], cwd=REPO, env=down,
                            input=json.dumps(line) + "\n", capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    [message] = result.stderr.strip().splitlines()
    assert message.startswith("error: http://127.0.0.1:9/") and "Connection refused" in message
