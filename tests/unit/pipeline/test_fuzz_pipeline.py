"""Fuzzing the worker's whole intake path, past the decoder.

tests/unit/test_fuzz_inputs.py fuzzes `intake.receive` (and through it the Avro codec): bytes
that do not decode are quarantined. This file takes the inputs that *do* decode: any value
the failure-event schema allows, generated from the schema itself (every kind, every detail
record of the union, any text, bytes, numbers at their limits, huge and repeated headers),
and such encodings with a few bits flipped. Each is driven through `Pipeline.on_failure` of
a real app from `create_app`, scenario strategies installed, as the incident agent would.

Must hold: it never raises and never hangs (hypothesis deadline, and a hard alarm); an input
that is quarantined is sent to the poison topic once, with a reason header; an accepted one
gets its `recovery/failure_received` lifecycle event, and every lifecycle record sent decodes.

The app is not started: its transport producer is replaced by a list, the scenario
strategies' Faust tables by dicts (a Faust table can only be written inside a running stream;
tests/integration/test_fuzz_intake.py covers the running worker), and the three calls that
strategies make to the cluster in an executor fail at once, as they would after their
timeouts with no broker (network partition: collecting the sides' writes; event delivery:
creating a missing topic; message too large: reading a topic's size limit).

FUZZ_EXAMPLES (default 300) sets the examples per property; docs/fuzzing.md has the counts
of a long run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from faust.tables.base import Collection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, DecodeError, LockedSchemaIds
from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.failure_event import SUBJECT
from app.contracts.records import OutRecord
from app.pipeline.intake import RawRecord
from app.policy.rules import SEVERITIES, load_policies
from app.settings import Settings

REPO = Path(__file__).resolve().parents[3]
CODEC = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=3000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
HARD_DEADLINE_S = 20
TRIED: dict[str, int] = {}
OUTCOMES: dict[str, int] = {}

KNOWN_ERROR_TYPES = sorted({t for rule in load_policies(None).rules for t in rule.error_types})


# ---- values the failure-event schema allows, generated from the schema ------------------------

def text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=max_size), st.sampled_from(["", " ", "..", "\x00", "é" * 3,
                                                                   "a" * 5000]))


def avro_values(schema: Any, names: dict[str, Any], field: str = "",
                namespace: str = "") -> st.SearchStrategy:
    """A hypothesis strategy for any value of an Avro schema (a record in a union of several
    records as (full name, fields), the form fastavro writes and reads back)."""
    if isinstance(schema, str):
        if schema in names:
            return avro_values(names[schema], names, field, namespace)
        return {
            "null": st.none(), "boolean": st.booleans(),
            "int": st.integers(-2**31, 2**31 - 1), "long": st.integers(-2**63, 2**63 - 1),
            "float": st.floats(width=32), "double": st.floats(),
            "bytes": st.one_of(st.binary(max_size=64), st.just(b"\xff" * 20_000)),
            "string": domain_text(field),
        }[schema]
    if isinstance(schema, list):
        records = [b for b in schema if isinstance(b, dict) and b.get("type") == "record"]
        return st.one_of(*[
            tagged(avro_values(b, names, field, namespace), qualified(b, namespace))
            if len(records) > 1 and b in records else avro_values(b, names, field, namespace)
            for b in schema])
    kind = schema["type"]
    if kind in ("record", "enum"):
        full = qualified(schema, namespace)
        names[full] = names[schema["name"]] = schema
        namespace = full.rpartition(".")[0]
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        return st.fixed_dictionaries({
            f["name"]: avro_values(f["type"], names, f["name"], namespace)
            for f in schema["fields"]})
    if kind == "array":
        return st.lists(avro_values(schema["items"], names, field, namespace), max_size=4)
    if kind == "map":
        return st.dictionaries(text(20), avro_values(schema["values"], names, field, namespace),
                               max_size=4)
    if schema.get("logicalType") == "timestamp-millis":
        return st.one_of(st.integers(0, 4_102_444_800_000), st.integers(-2**63, 2**63 - 1))
    return avro_values(kind, names, field, namespace)


def tagged(values: st.SearchStrategy, name: str) -> st.SearchStrategy:
    return values.map(lambda value: (name, value))


def qualified(schema: dict[str, Any], namespace: str) -> str:
    name = schema["name"]
    space = schema.get("namespace", namespace)
    return name if "." in name or not space else f"{space}.{name}"


def domain_text(field: str) -> st.SearchStrategy[str]:
    """Free text, mixed with the values the rules and strategies act on."""
    if field == "type":
        return st.one_of(st.sampled_from(KNOWN_ERROR_TYPES), text())
    if field == "severity":
        return st.one_of(st.sampled_from(SEVERITIES), text())
    return text()


SCHEMA = json.loads((REPO / "schemas" / "failure-event" / "v1.avsc").read_text())
EVENTS = avro_values(SCHEMA, {})
HEADERS = st.lists(st.tuples(st.sampled_from(["x", "x", "trace", h.REASON, h.INCIDENT_ID, ""]),
                             st.one_of(st.none(), st.binary(max_size=32),
                                       st.just(b"H" * 100_000))), max_size=40)


# ---- the app, with its outputs kept in a list -------------------------------------------------

class Harness:
    def __init__(self, tmp: Path):
        from app.worker.app import build

        settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", data_dir=tmp,
                            lag_interval_s=0, topic_prefix="fz.")
        recovery = build(settings)
        self.app, self.pipeline = recovery.app, recovery.pipeline
        self.sent: list[OutRecord] = []
        sent = self.sent

        class Kept:
            async def send(self, record: OutRecord) -> None:
                sent.append(record)

        self.pipeline.services.outbox.transport = Kept()

    def fresh(self) -> dict[str, Any]:
        """New state for one example: no incidents, empty strategy tables, no outputs."""
        self.sent.clear()
        for strategy in self.pipeline.strategies.installed:
            for name, value in list(vars(strategy).items()):
                if isinstance(value, Collection | dict) and not name.startswith("__"):
                    setattr(strategy, name, {})
        return {}

    def feed(self, value: bytes, headers: list[tuple[str, bytes | None]]) -> list[OutRecord]:
        incidents = self.fresh()
        record = RawRecord("fz.recovery.failures", 1, 42, 1_700_000_000_000, b"key", value,
                           headers)
        with hard_deadline(HARD_DEADLINE_S):
            asyncio.run(self.pipeline.incidents.on_failure(record, incidents))
        return list(self.sent)


class Hung(Exception):
    pass


@contextmanager
def hard_deadline(seconds: int) -> Iterator[None]:
    """Hypothesis' deadline only judges an example after it ends; this one ends it."""
    def expire(signum: int, frame: Any) -> None:
        raise Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def no_broker(*args: Any, **kwargs: Any) -> Any:
    raise KafkaException(KafkaError(KafkaError._TRANSPORT, "no broker in the unit fuzz"))


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    from app.scenarios import event_delivery, network_partition

    saved = (network_partition.collect_partition_writes, event_delivery.create_topic)
    network_partition.collect_partition_writes = no_broker
    event_delivery.create_topic = no_broker
    try:
        made = Harness(tmp_path_factory.mktemp("fuzz-app"))
        for strategy in made.pipeline.strategies.installed:
            if hasattr(strategy, "topic_limit"):
                strategy.topic_limit = lambda topic: None  # unreadable: the configured default
        yield made
    finally:
        network_partition.collect_partition_writes, event_delivery.create_topic = saved


def check_outputs(value: bytes, sent: list[OutRecord]) -> str:
    poison = [r for r in sent if r.topic == "fz.recovery.poison" and r.value == value]
    lifecycle_records = [r for r in sent if r.topic == "fz.recovery.events"]
    events = [CODEC.decode(r.value, lifecycle.SUBJECT) for r in lifecycle_records]
    if not events:
        # Quarantined: the record itself, once, with the reason.
        [quarantined] = poison
        reason = h.header_value(quarantined.headers, h.REASON)
        assert reason and reason.startswith("undecodable failure event"), reason
        return "quarantined"
    failure_id = CODEC.decode(value, SUBJECT)["event_id"]
    assert any(e["event_type"] == lifecycle.FAILURE_RECEIVED
               and e["failure_event_id"] == failure_id for e in events), events
    return "accepted"


# fastavro reads a timestamp-millis as a timezone-aware datetime: a long outside the
# datetime calendar (years 1-9999) cannot be read back, which is the one reason a
# schema-valid event is quarantined.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MS = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC) - EPOCH) \
    // timedelta(milliseconds=1)


def timestamps(schema: Any, value: Any, names: dict[str, Any],
               namespace: str = "") -> Iterator[int]:
    """Every timestamp-millis value in `value` (a generated event), walking the schema."""
    if isinstance(schema, str):
        if schema in names:
            yield from timestamps(names[schema], value, names, namespace)
        return
    if isinstance(schema, list):
        if value is None:
            return
        if isinstance(value, tuple):  # a record of a union of several, by its full name
            name, fields = value
            [branch] = [b for b in schema if isinstance(b, dict)
                        and qualified(b, namespace) == name]
            yield from timestamps(branch, fields, names, namespace)
            return
        for branch in schema:
            if branch == "null":
                continue
            resolved = names.get(branch, branch) if isinstance(branch, str) else branch
            is_record = isinstance(resolved, dict) and resolved.get("type") == "record"
            if is_record == isinstance(value, dict):
                yield from timestamps(branch, value, names, namespace)
        return
    kind = schema["type"]
    if kind == "record":
        full = qualified(schema, namespace)
        names[full] = names[schema["name"]] = schema
        for f in schema["fields"]:
            yield from timestamps(f["type"], value[f["name"]], names, full.rpartition(".")[0])
    elif kind == "array":
        for item in value:
            yield from timestamps(schema["items"], item, names, namespace)
    elif kind == "map":
        for item in value.values():
            yield from timestamps(schema["values"], item, names, namespace)
    elif schema.get("logicalType") == "timestamp-millis":
        yield value


def out_of_range(event: dict[str, Any]) -> bool:
    return any(not MIN_MS <= ms <= MAX_MS for ms in timestamps(SCHEMA, event, {}))


def count(name: str, outcome: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1
    OUTCOMES[f"{name}: {outcome}"] = OUTCOMES.get(f"{name}: {outcome}", 0) + 1


# ---- the properties --------------------------------------------------------------------------

@FUZZ
@given(event=EVENTS, headers=HEADERS)
def test_any_event_the_schema_allows_is_handled_or_quarantined(harness: Harness, event,
                                                               headers) -> None:
    value = CODEC.encode(SUBJECT, event)
    outcome = check_outputs(value, harness.feed(value, headers))
    count("schema-valid events", outcome)
    # Quarantined exactly when a timestamp is beyond the calendar; anything else the schema
    # allows is accepted.
    assert (outcome == "quarantined") == out_of_range(event), event


@FUZZ
@given(event=EVENTS, flips=st.lists(st.tuples(st.integers(5, 10_000), st.integers(1, 255)),
                                    min_size=1, max_size=4))
def test_bit_flipped_events_are_handled_or_quarantined(harness: Harness, event, flips) -> None:
    data = bytearray(CODEC.encode(SUBJECT, event))
    for at, mask in flips:
        data[at % len(data) if at % len(data) >= 5 else 5] ^= mask
    value = bytes(data)
    outcome = check_outputs(value, harness.feed(value, []))
    count("bit-flipped events", outcome)
    # Quarantined only when the bytes truly do not read back as a failure event.
    try:
        CODEC.decode(value, SUBJECT)
        readable = True
    except DecodeError:
        readable = False
    assert (outcome == "accepted") == readable


def test_a_timestamp_beyond_the_calendar_is_quarantined_with_a_reason(harness: Harness) -> None:
    # What most quarantined schema-valid events above are: a legal Avro long that fastavro
    # cannot turn into a datetime. The codec's catch-all makes it poison with a reason; this
    # pins that, since the agent would otherwise raise on it.
    event = {"event_id": "e", "work_item_id": None, "kind": "UNKNOWN",
             "occurred_at": 2**62, "source": {"service": "s", "instance": None,
                                              "consumer_group": None},
             "error": {"type": "x", "message": "", "stack_trace": None, "severity": None,
                       "details": {}},
             "failed_record": None, "dispatch_target": None, "detail": None}
    value = CODEC.encode(SUBJECT, event)
    assert out_of_range(event)
    assert check_outputs(value, harness.feed(value, [])) == "quarantined"


def test_the_calendar_bounds_themselves_are_accepted(harness: Harness) -> None:
    for ms in (MIN_MS, MAX_MS, 0):
        event = {"event_id": f"e{ms}", "work_item_id": None, "kind": "UNKNOWN",
                 "occurred_at": ms, "source": {"service": "s", "instance": None,
                                               "consumer_group": None},
                 "error": {"type": "x", "message": "", "stack_trace": None, "severity": None,
                           "details": {}},
                 "failed_record": None, "dispatch_target": None, "detail": None}
        assert not out_of_range(event)
        value = CODEC.encode(SUBJECT, event)
        assert check_outputs(value, harness.feed(value, [])) == "accepted", ms


@pytest.fixture(scope="module", autouse=True)
def report_how_many_inputs_were_tried() -> Iterator[None]:
    # After the last test of this file that ran in this process (under pytest-xdist the
    # file's tests may be spread over processes): prints the counts for docs/fuzzing.md and
    # holds a floor on them.
    yield
    print("\npipeline fuzz inputs tried:",
          ", ".join(f"{k} {v}" for k, v in sorted(OUTCOMES.items())))
    # A floor on what got past the decoder: a generator (or a codec) that made nearly every
    # schema-valid event poison would otherwise pass. Each timestamp is drawn in range about
    # half the time; a long run accepted 94%.
    valid = TRIED.get("schema-valid events", 0)
    if valid:
        assert OUTCOMES.get("schema-valid events: accepted", 0) >= valid // 4, OUTCOMES
