"""Scale-out with the batched worker: a second and a third worker join mid-stream, then one
leaves by SIGTERM and one by SIGKILL, while failure events keep arriving. Nothing is lost, no
failure event gets two different outcomes, and the incident table (its changelog, which the
next owner of a partition restores) ends with every incident terminal."""

from __future__ import annotations

import os
import signal
import threading
import time

import orjson
import pytest
from confluent_kafka import Producer

from app.kafka.config import producer_config
from app.pipeline.decide import TERMINAL
from app.settings import Settings
from tests.integration.test_exactly_once import OutcomeCount, failure
from tests.integration.test_pipeline import caught_up
from tests.kafka_helpers import TopicReader, locked_codec

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kills")]

EVENTS = 4800
RATE = 200  # failure events per second: the stream lasts about 24 s


def test_workers_join_and_leave_mid_stream_without_loss_or_double_outcomes(
    applied_topics, worker_factory, topic_prefix, tmp_path
):
    settings = Settings(kafka_bootstrap_servers=applied_topics["KAFKA_BOOTSTRAP_SERVERS"],
                        topic_prefix=topic_prefix)
    codec = locked_codec()
    events = [failure(i) for i in range(EVENTS)]
    ids = [e["event_id"] for e in events]
    incident_ids = {e["work_item_id"] for e in events}

    def produce() -> None:
        producer = Producer(producer_config(settings))
        started = time.monotonic()
        for i, event in enumerate(events):
            delay = started + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.produce(settings.topic("recovery.failures"),
                             key=event["work_item_id"].encode(),
                             value=codec.encode("failure-event", event))
            producer.poll(0)
        producer.flush(60)

    first = worker_factory()
    reader = TopicReader(settings.kafka_bootstrap_servers, [settings.topic("recovery.events")])
    outcomes = OutcomeCount(codec)

    def reached(fraction: float, timeout: float = 180) -> None:
        assert reader.wait_for(
            lambda ms: outcomes.update(ms) or len(outcomes.per_event) >= EVENTS * fraction,
            timeout=timeout), (len(outcomes.per_event), first.log_tail())

    producing = threading.Thread(target=produce, daemon=True)
    producing.start()
    reached(1 / 6)
    second = worker_factory(alongside=True)
    reached(2 / 6)
    third = worker_factory(alongside=True)
    reached(3 / 6)
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(60)  # a bounded, clean stop
    reached(4 / 6)
    os.kill(second.proc.pid, signal.SIGKILL)
    second.proc.wait()
    producing.join(120)
    done = reader.wait_for(lambda ms: outcomes.update(ms) or len(outcomes.per_event) >= EVENTS,
                           timeout=300)
    assert done, (len(outcomes.per_event), third.log_tail())
    if not caught_up(applied_topics, reader, [settings.topic("recovery.events")], timeout=120):
        state = third.consumer_state()
        (tmp_path / "consumer-state.json").write_text(state)
        raise AssertionError(f"commits stayed behind; the last worker's consumer state: {state}")
    reader.close()
    outcomes.update(reader.messages)
    lost = [i for i in ids if outcomes.per_event[i] == 0]
    doubled = {i: n for i, n in outcomes.per_event.items() if n > 1}
    assert lost == [] and doubled == {}

    # The incident table as a worker taking a partition over would restore it.
    changelog = f"{applied_topics['RECOVERY_APP_ID']}-incidents-changelog"
    tables = TopicReader(settings.kafka_bootstrap_servers, [changelog])
    assert tables.read_to_end([changelog], 60)
    tables.close()
    last: dict[str, dict] = {}
    for message in tables.messages:
        if message.value() is not None:
            last[orjson.loads(message.key())] = orjson.loads(message.value())
    assert incident_ids <= set(last)
    open_ones = {k: v["state"] for k, v in last.items() if k in incident_ids
                 and v["state"] not in TERMINAL}
    assert open_ones == {}
    assert third.proc.poll() is None, third.log_tail()
