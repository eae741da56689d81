"""The incidents pages' pure parts (app/worker/web/incidents.py): ids, the open incidents by
state and age, deadlines, where the history read starts, the bounded read (over a stand-in
consumer with the confluent-kafka calls it makes) and the HTML's escaping and links."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from app.pipeline.decide import Incident
from app.policy.rules import RetryPolicy
from app.policy.watchdog import WatchdogPolicy
from app.worker.web import incidents as inc

NOW = 1_700_000_000_000


def stored(incident_id: str, state: str, updated: int, **kw: Any) -> tuple[str, dict]:
    incident = Incident(incident_id, state=state, reports=1, first_failure_ms=updated - 500,
                        last_failure_ms=updated - 500, history=((updated, state),), **kw)
    return incident_id, incident.to_json()


@pytest.mark.parametrize("text", [None, "", "   ", "a\x01b", "x" * 513])
def test_bad_ids_are_refused(text) -> None:
    with pytest.raises(inc.BadRequest):
        inc.parse_incident_id(text)


def test_ids_are_trimmed() -> None:
    assert inc.parse_incident_id("  billing:orders:0:7 ") == "billing:orders:0:7"


def test_open_incidents_by_state_and_age_oldest_first() -> None:
    items = [stored("a", "retrying", NOW - 10_000, attempts=2),
             stored("b", "retrying", NOW - 70_000, attempts=1),
             stored("c", "rerouted", NOW - 5_000)]
    data = inc.open_incidents(items, NOW)
    assert data["by_state"] == {"rerouted": {"count": 1, "oldest_s": 5.0},
                                "retrying": {"count": 2, "oldest_s": 70.0}}
    assert [r["incident_id"] for r in data["incidents"]] == ["b", "a", "c"]
    assert data["incidents"][1]["attempts"] == 2 and data["incidents"][0]["url"] == "/incidents/b"
    only = inc.open_incidents(items, NOW, state="rerouted")
    assert [r["incident_id"] for r in only["incidents"]] == ["c"]
    assert only["by_state"] == data["by_state"]  # the counts stay the whole picture
    cut = inc.open_incidents(items, NOW, limit=1)
    assert cut["cut"] and cut["total"] == 3 and len(cut["incidents"]) == 1


def pipeline(ack_timeout_ms: int = 60_000) -> Any:
    policies = SimpleNamespace(retry_for=lambda _type: RetryPolicy())
    services = SimpleNamespace(policies=policies, watchdog=WatchdogPolicy(),
                               settings=SimpleNamespace(ack_timeout_ms=ack_timeout_ms))
    return SimpleNamespace(services=services)


def test_deadlines_of_a_retrying_incident() -> None:
    incident = Incident.from_json(stored("a", "retrying", NOW, attempts=2)[1], "a")
    d = inc.deadlines(incident, pipeline())
    assert d["retry_due_ms"] == NOW + 2000  # the second retry: 2 s after the last change
    assert d["watchdog_deadline_ms"] == NOW + 2000 + 60_000
    assert d["watchdog_action"] == "redispatch_then_dead_letter"
    assert d["held_limit_ms"] == NOW + 300_000


def test_no_deadline_for_a_finished_incident_nor_a_state_the_watchdog_leaves() -> None:
    done = Incident.from_json(stored("a", "completed", NOW)[1], "a")
    assert set(inc.deadlines(done, pipeline()).values()) == {None}
    split = Incident.from_json(stored("a", "split", NOW)[1], "a")
    d = inc.deadlines(split, pipeline())
    assert d["watchdog_action"] == "none" and d["watchdog_deadline_ms"] is None
    assert d["held_limit_ms"] is None


def test_history_read_starts_before_the_incident_or_a_day_back() -> None:
    incident = Incident.from_json(stored("a", "retrying", NOW)[1], "a")
    assert inc.since_of(incident, NOW + 9_000) == NOW - 500 - inc.MARGIN_MS
    assert inc.since_of(None, NOW) == NOW - inc.LOOKBACK_MS


@dataclass
class FakeMessage:
    p: int
    o: int
    k: bytes | None = None
    v: bytes | None = None
    err: Any = None

    def error(self) -> Any:
        return self.err

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


class EOF:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class FakeConsumer:
    """Two partitions; records after the request's high watermark arrive too."""

    def __init__(self, records: dict[int, list[FakeMessage]], ends: dict[int, int],
                 starts: dict[int, int]):
        self.records, self.ends, self.starts = records, ends, starts
        self.assigned: list[TopicPartition] = []

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(partitions={p: None for p in self.records}, error=None)
        return SimpleNamespace(topics={topic: meta})

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float) -> list:
        return [TopicPartition(tp.topic, tp.partition, self.starts[tp.partition]) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, self.ends[tp.partition]

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps
        self.queue = [m for tp in tps for m in self.records[tp.partition] if m.o >= tp.offset]
        self.queue += [FakeMessage(tp.partition, -1, err=EOF()) for tp in tps]

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        batch, self.queue = self.queue[:n], self.queue[n:]
        return batch


def decode(value: bytes) -> dict:
    t, at = value.decode().split("@")
    return {"event_id": f"id-{t}", "event_type": t, "occurred_at": int(at), "attempt": 0}


def test_history_keeps_only_the_incidents_events_up_to_the_watermarks_in_order() -> None:
    records = {0: [FakeMessage(0, 4, b"x", b"recovery/failure_received@1"),
                   FakeMessage(0, 5, b"other", b"recovery/failure_received@2"),
                   FakeMessage(0, 6, b"x", b"recovery/retry_scheduled@3"),
                   FakeMessage(0, 7, b"x", b"recovery/recovery_completed@9")],  # after the end
               1: [FakeMessage(1, 0, b"other", b"recovery/dead_lettered@5")]}
    consumer = FakeConsumer(records, ends={0: 7, 1: 1}, starts={0: 4, 1: 0})
    history = inc.read_history(consumer, "events", "x", NOW, decode)
    assert [e["event_type"] for e in history.events] == ["recovery/failure_received",
                                                         "recovery/retry_scheduled"]
    assert [(e["partition"], e["offset"]) for e in history.events] == [(0, 4), (0, 6)]
    assert history.cut is None and history.scanned == 4


def test_history_read_is_cut_at_its_bound_and_says_so() -> None:
    records = {0: [FakeMessage(0, o, b"x", f"recovery/redelivered@{o}".encode())
                   for o in range(10)]}
    consumer = FakeConsumer(records, ends={0: 10}, starts={0: 0})
    history = inc.read_history(consumer, "events", "x", NOW, decode, max_scan=3)
    assert history.cut == "stopped after 3 records"
    assert [e["offset"] for e in history.events] == [0, 1, 2] and history.scanned == 3


def test_nothing_to_read_after_the_start_time() -> None:
    consumer = FakeConsumer({0: []}, ends={0: 5}, starts={0: -1})  # -1: no record that late
    history = inc.read_history(consumer, "events", "x", NOW, decode)
    assert history.events == [] and history.cut is None and consumer.assigned == []


def test_pages_escape_ids_and_link_them() -> None:
    nasty = '<script>alert("x")</script>'
    listing = inc.open_incidents([stored(nasty, "retrying", NOW)], NOW)
    html = inc.list_page({"role": "viewer", "csrf_token": "t"}, listing)
    assert nasty not in html and "&lt;script&gt;" in html
    assert 'href="/incidents/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E"' in html
    incident = Incident.from_json(stored(nasty, "retrying", NOW, attempts=1)[1], nasty)
    data = {"incident_id": nasty, "incident": inc.incident_data(incident, pipeline()),
            "history": {"since_ms": NOW, "scanned": 0, "cut": None, "events": []}}
    operator = inc.detail_page({"role": "operator", "csrf_token": "tok"}, data)
    assert nasty not in operator
    assert 'name="csrf_token" value="tok"' in operator and 'id="acknowledge"' in operator
    viewer = inc.detail_page({"role": "viewer", "csrf_token": "tok"}, data)
    assert 'id="acknowledge"' not in viewer
