"""Scenario 4 (consumer crash) through a real broker, a real worker and the client API's
consumer wrapper obeying the control commands."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from confluent_kafka import Message, Producer

from app.client import FailureReporter, RecoveringConsumer
from app.client import control as ctl
from app.client.consumer import ensure_topic, redelivery_topic
from app.scenarios import consumer_crash as cc
from tests.conftest import REPO, wait_until
from tests.integration.test_pipeline import (
    ConsumerThread,
    caught_up,
    client_settings,
    types_for,
)
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec

pytestmark = pytest.mark.integration

FAST = {
    "RECOVERY_HEALTH_CHECK_INTERVAL_MS": "500",
    "RECOVERY_HEARTBEAT_STALE_MS": "3000",
    "RECOVERY_HOLD_RETRY_MS": "1000",
    "RECOVERY_RECOVERY_WATCH_MS": "60000",
}


@pytest.fixture
def crash_env(applied_topics: dict[str, str]) -> dict[str, str]:
    applied_topics.update(FAST)
    return applied_topics


def commands(reader: TopicReader, topic: str, group: str) -> list[ctl.ControlCommand]:
    return [ctl.ControlCommand.decode(m.value()) for m in reader.on(topic)
            if m.key() == group.encode()]


def events_of(reader: TopicReader, topic: str) -> list[dict]:
    return lifecycle(locked_codec(), reader.on(topic))


def test_fatal_crash_stop_poison_safe_mode_restart_confirmed_then_resume(
        crash_env, worker_factory, topic_prefix):
    settings = client_settings(crash_env)
    bootstrap = settings.kafka_bootstrap_servers
    docs, group = f"{topic_prefix}docs", f"{topic_prefix}indexers"
    ensure_topic(bootstrap, docs, partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for key in (b"poison", b"d1", b"d2"):
        producer.produce(docs, key=key, value=b"body-" + key)
    producer.flush(10)
    worker_factory()
    reporter = FailureReporter(settings)
    reporter.report(kind="CONSUMER_CRASHED", error_type="out_of_memory", severity="FATAL",
                    service="indexer", consumer_group=group, work_item_id="crash-1",
                    failed_record={"topic": docs, "partition": 0, "offset": 0, "key": b"poison",
                                   "value": b"body-poison", "headers": []},
                    dispatch_target=redelivery_topic(group),
                    detail=("ConsumerCrashed", {"consumer_id": "indexer-1"}))
    reporter.flush()
    events_topic = f"{topic_prefix}recovery.events"
    control_topic = f"{topic_prefix}recovery.control"
    poison_topic = f"{topic_prefix}recovery.poison"
    reader = TopicReader(bootstrap, [events_topic, control_topic, poison_topic])
    assert reader.wait_for(lambda ms: any(
        c.command == ctl.RESTART_SAFE_MODE for c in commands(reader, control_topic, group)),
        timeout=60)

    # The crashed consumer's replacement starts now: it obeys the commands sent before.
    handled: list[bytes] = []
    consumer = RecoveringConsumer(group, [docs], service="indexer", settings=settings,
                                  heartbeat_interval=0.5)
    assert consumer.mode.state == ctl.SAFE_MODE
    assert consumer.mode.debug_logging and consumer.mode.reduced_parallelism
    with ConsumerThread(consumer, lambda m: handled.append(m.key())):
        resumed = reader.wait_for(lambda ms: any(
            c.command == ctl.RESUME for c in commands(reader, control_topic, group)),
            timeout=60)
        assert resumed, types_for(events_of(reader, events_topic), "crash-1")
        assert reader.wait_for(lambda ms: consumer.mode.state == ctl.RUNNING, timeout=30)
    reader.close()
    assert handled == [b"d1", b"d2"] and consumer.skipped == 1
    assert [c.command for c in commands(reader, control_topic, group)] == [
        ctl.STOP, ctl.RESTART_SAFE_MODE, ctl.RESUME]
    events = events_of(reader, events_topic)
    assert types_for(events, "crash-1") == [
        "recovery/failure_received", cc.CONSUMER_CRASHED, cc.STOP_REQUESTED,
        "recovery/poisoned", cc.SAFE_MODE_RESTART_REQUESTED, cc.RESUME_REQUESTED]
    assert types_for(events, f"consumer:{group}") == [cc.CONSUMER_RECOVERY_CONFIRMED]
    confirmed = [e for e in events if e["event_type"] == cc.CONSUMER_RECOVERY_CONFIRMED][0]
    metrics = orjson.loads(confirmed["payload_json"])["healthMetrics"]
    assert metrics["events_processed"] == 2
    [quarantined] = reader.on(poison_topic)
    assert quarantined.key() == b"poison"


def test_error_crash_reprocessed_then_recovered_or_handled_as_critical(
        crash_env, worker_factory, topic_prefix):
    settings = client_settings(crash_env)
    bootstrap = settings.kafka_bootstrap_servers
    docs, group = f"{topic_prefix}docs", f"{topic_prefix}parsers"
    ensure_topic(bootstrap, docs, partitions=1)
    worker_factory()
    calls: dict[bytes, int] = {}
    handled: list[bytes] = []

    def handler(message: Message) -> None:
        calls[message.key()] = calls.get(message.key(), 0) + 1
        if message.key() == b"bad" or (message.key() == b"flaky" and calls[b"flaky"] == 1):
            raise RuntimeError("parser crashed")
        handled.append(message.key())

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(docs, key=b"flaky", value=b"1")
    producer.produce(docs, key=b"bad", value=b"2")
    producer.flush(10)
    events_topic = f"{topic_prefix}recovery.events"
    control_topic = f"{topic_prefix}recovery.control"
    reader = TopicReader(bootstrap, [events_topic, control_topic])
    codec = locked_codec()
    consumer = RecoveringConsumer(group, [docs], service="parser", settings=settings,
                                  heartbeat_interval=0.5, failure_kind="CONSUMER_CRASHED")
    flaky_incident, bad_incident = f"{group}:{docs}:0:0", f"{group}:{docs}:0:1"
    with ConsumerThread(consumer, handler):
        restarted = reader.wait_for(lambda ms: consumer.restarts >= 1, timeout=60)
        assert restarted, types_for(lifecycle(codec, reader.on(events_topic)), bad_incident)
        assert consumer.mode.state == ctl.SAFE_MODE
        producer.produce(docs, key=b"after", value=b"3")
        producer.flush(10)
        assert reader.wait_for(lambda ms: consumer.mode.state == ctl.RUNNING, timeout=60)
    assert caught_up(crash_env, reader, [events_topic, control_topic])
    reader.close()
    events = lifecycle(codec, reader.on(events_topic))
    flaky = types_for(events, flaky_incident)
    assert flaky.count("recovery/retry_scheduled") == 1
    assert flaky[-2:] == ["recovery/recovery_completed", cc.CONSUMER_RECOVERED]
    recovered = [e for e in events if e["event_type"] == cc.CONSUMER_RECOVERED][0]
    assert orjson.loads(recovered["payload_json"])["attemptsRequired"] == 1
    bad = types_for(events, bad_incident)
    # 1 s, 2 s, 4 s reprocessing, then the critical handling.
    assert bad.count("recovery/retry_scheduled") == 3
    assert bad[-4:] == [cc.STOP_REQUESTED, "recovery/poisoned", cc.SAFE_MODE_RESTART_REQUESTED,
                        cc.RESUME_REQUESTED], bad
    stop = [e for e in events if e["event_type"] == cc.STOP_REQUESTED][0]
    assert orjson.loads(stop["payload_json"])["handledAs"] == "CRITICAL"
    restart = [c for c in commands(reader, control_topic, group)
               if c.command == ctl.RESTART_SAFE_MODE][0]
    assert restart.skip == (ctl.RecordId(docs, 0, 1),)
    assert handled == [b"flaky", b"after"] and calls[b"bad"] == 4


def test_minor_crash_is_logged_and_failed_restart_escalates(
        crash_env, worker_factory, topic_prefix):
    settings = client_settings(crash_env)
    worker_factory()
    reporter = FailureReporter(settings)
    group = f"{topic_prefix}mailer"
    reporter.report(kind="CONSUMER_CRASHED", error_type="slow_handler", severity="WARNING",
                    service="mailer", consumer_group=group, work_item_id="minor-1")
    reporter.report(kind="CONSUMER_CRASHED", error_type="segfault", severity="CRITICAL",
                    service="mailer", consumer_group=group, work_item_id="critical-1")
    reporter.flush()
    events_topic = f"{topic_prefix}recovery.events"
    control_topic = f"{topic_prefix}recovery.control"
    reader = TopicReader(settings.kafka_bootstrap_servers, [events_topic, control_topic])
    assert reader.wait_for(lambda ms: any(
        c.command == ctl.RESTART_SAFE_MODE for c in commands(reader, control_topic, group)),
        timeout=60)
    restart = [c for c in commands(reader, control_topic, group)
               if c.command == ctl.RESTART_SAFE_MODE][0]
    # The restart fails: the consumer says so, and the watch escalates at once.
    reporter.heartbeat(group, status="failed", control_id=restart.command_id)
    reporter.flush()
    assert reader.wait_for(lambda ms: "recovery/escalated" in types_for(
        events_of(reader, events_topic), f"consumer:{group}"), timeout=30)
    reader.close()
    events = events_of(reader, events_topic)
    assert types_for(events, "minor-1") == [
        "recovery/failure_received", cc.CONSUMER_CRASHED, cc.ERROR_LOGGED,
        "recovery/recovery_completed"]
    # Only the critical crash sent commands; the minor one changed nothing for the consumer.
    assert {c.incident_id for c in commands(reader, control_topic, group)} == {"critical-1"}
    assert types_for(events, f"consumer:{group}") == ["recovery/escalated"]
    assert not any(e["event_type"] == "recovery/poisoned" for e in events
                   if e["incident_id"] == "minor-1")


class Heartbeats:
    """A group's heartbeats as the wrappers send them: the positive marker that a stopped
    consumer's loop went on (it beats "stopped" each round) while a record waited."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        self.reader = TopicReader(bootstrap, [topic])
        self.group = group

    def beats(self) -> list[dict]:
        found = []
        for m in self.reader.messages:
            beat = orjson.loads(m.value())
            if beat.get("group") == self.group and not beat.get("check"):
                found.append(beat)
        return found

    def count(self, **fields: object) -> int:
        return sum(1 for b in self.beats() if all(b.get(k) == v for k, v in fields.items()))

    def wait(self, n: int, timeout: float = 60, **fields: object) -> bool:
        return self.reader.wait_for(lambda _ms: self.count(**fields) >= n, timeout)

    def close(self) -> None:
        self.reader.close()


def test_stop_command_pauses_a_running_consumer_until_resumed(crash_env, topic_prefix):
    """`stop` alone: the wrapper stops consuming (and says so in its heartbeats)."""
    settings = client_settings(crash_env)
    bootstrap = settings.kafka_bootstrap_servers
    docs, group = f"{topic_prefix}docs", f"{topic_prefix}stoppable"
    control_topic = f"{topic_prefix}recovery.control"
    ensure_topic(bootstrap, docs, partitions=1)
    # What was handled, with the wrapper's state at that moment.
    handled: list[tuple[bytes, str, int]] = []
    consumer = RecoveringConsumer(group, [docs], service="s", settings=settings,
                                  heartbeat_interval=0.5)
    producer = Producer({"bootstrap.servers": bootstrap})
    beats = Heartbeats(bootstrap, settings.topic("recovery.heartbeats"), group)

    def send(command: str, command_id: str) -> None:
        producer.produce(control_topic, key=group.encode(), value=ctl.control_command(
            command, group, command_id=command_id).encode())
        producer.flush(10)

    def handler(message: Message) -> None:
        handled.append((message.key(), consumer.mode.state, consumer.restarts))

    try:
        with ConsumerThread(consumer, handler):
            send(ctl.STOP, "s1")
            assert wait_until(lambda: consumer.mode.state == ctl.STOPPED, timeout=30)
            assert beats.wait(1, status=ctl.STOPPED)
            producer.produce(docs, key=b"while-stopped", value=b"x")
            producer.flush(10)
            before = beats.count(status=ctl.STOPPED)
            # Two more rounds of the stopped loop with the record on the broker.
            assert beats.wait(before + 2, status=ctl.STOPPED)
            assert handled == []
            send(ctl.RESUME, "r1")
            assert wait_until(lambda: len(handled) == 1, timeout=30)
    finally:
        beats.close()
    # Handled once, after the resume (a restart), never while stopped.
    assert handled == [(b"while-stopped", ctl.RUNNING, 1)]
    assert consumer.restarts == 1 and consumer.mode.state == ctl.RUNNING


def test_faust_agent_wrapper_obeys_control_commands(crash_env, topic_prefix, tmp_path):
    """The real Faust service (tests/services/faust_billing) obeys stop, restart in safe
    mode (skipping the poisoned record, debug logging, one record at a time) and resume."""
    settings = client_settings(crash_env)
    bootstrap = settings.kafka_bootstrap_servers
    group, docs = f"{topic_prefix}faust-svc", f"{topic_prefix}docs"
    control_topic = f"{topic_prefix}recovery.control"
    ensure_topic(bootstrap, docs, partitions=1)
    modes, log_path = tmp_path / "modes.jsonl", tmp_path / "service.log"
    env = {**crash_env, "BILLING_APP_ID": f"{topic_prefix}svc", "BILLING_GROUP": group,
           "BILLING_TOPIC": docs, "BILLING_HANDLED": str(tmp_path / "handled.txt"),
           "BILLING_MODES": str(modes), "RECOVERY_WEB_PORT": "0"}
    producer = Producer({"bootstrap.servers": bootstrap})
    beats = Heartbeats(bootstrap, settings.topic("recovery.heartbeats"), group)

    def handled() -> list[dict]:
        if not modes.exists():
            return []
        return [orjson.loads(x) for x in modes.read_bytes().splitlines() if x.strip()]

    def keys() -> list[str]:
        return [x["key"] for x in handled()]

    def service_log() -> str:
        return log_path.read_text(errors="replace") if log_path.exists() else ""

    def produce(key: bytes) -> None:
        producer.produce(docs, key=key, value=b"v")
        producer.flush(10)

    def send(command: ctl.ControlCommand) -> None:
        producer.produce(control_topic, key=group.encode(), value=command.encode())
        producer.flush(10)

    service = subprocess.Popen(
        [sys.executable, "-m", "tests.services.faust_billing", "worker", "-l", "info",
         "--without-web"],
        env=env, cwd=REPO, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        produce(b"warm")  # offset 0: the agent reads
        assert wait_until(lambda: keys() == ["warm"], timeout=120), service_log()[-3000:]
        send(ctl.control_command(ctl.STOP, group, command_id="s1"))
        assert beats.wait(1, status=ctl.STOPPED, control_id="s1"), service_log()[-3000:]
        produce(b"a")  # offset 1
        before = beats.count(status=ctl.STOPPED)
        assert beats.wait(before + 2, status=ctl.STOPPED)  # two beats while "a" waits
        assert keys() == ["warm"]
        send(ctl.control_command(ctl.RESTART_SAFE_MODE, group, command_id="r1",
                                 options=ctl.SAFE_MODE_OPTIONS,
                                 skip=(ctl.RecordId(docs, 0, 2),)))
        assert wait_until(lambda: keys() == ["warm", "a"], timeout=60), service_log()[-3000:]
        produce(b"poison")  # offset 2: to be skipped
        produce(b"b")  # offset 3: handled after the skip
        assert wait_until(lambda: "b" in keys(), timeout=60), service_log()[-3000:]
        assert "safe mode: skipping poisoned record" in service_log()
        send(ctl.control_command(ctl.RESUME, group, command_id="u1"))
        assert beats.wait(1, status="healthy", control_id="u1"), service_log()[-3000:]
        produce(b"c")
        assert wait_until(lambda: "c" in keys(), timeout=60), service_log()[-3000:]
    finally:
        beats.close()
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
    by_key = {x["key"]: x for x in handled()}
    assert keys() == ["warm", "a", "b", "c"]  # "poison" never reached the handler
    assert by_key["warm"]["state"] == ctl.RUNNING
    # "a" waited out the stop and was handled in safe mode: debug logging, one at a time.
    assert by_key["a"] == {"key": "a", "offset": 1, "state": ctl.SAFE_MODE, "skipped": 0,
                           "debug": True, "reduced": True}
    assert by_key["b"] == {"key": "b", "offset": 3, "state": ctl.SAFE_MODE, "skipped": 1,
                           "debug": True, "reduced": True}
    assert by_key["c"] == {"key": "c", "offset": 4, "state": ctl.RUNNING, "skipped": 1,
                           "debug": False, "reduced": False}
