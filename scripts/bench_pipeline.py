#!/usr/bin/env python3
"""Benchmark: failure events per second through classification and routing on one worker,
beside a bare aiokafka consume-and-produce loop over the same records in the same run; and
retry lateness (redelivery time minus due time) at a sustained retry rate.

  .venv/bin/python scripts/bench_pipeline.py [--events N] [--retry-rate R] [--retry-seconds S]

Uses KAFKA_BOOTSTRAP_SERVERS, else starts scripts/kafka on port 29092. Writes
docs/benchmarks/pipeline.md. Targets: worker rate >= half the bare loop's; p99 lateness < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, Producer  # noqa: E402

from app.avro.catalog import SchemaCatalog  # noqa: E402
from app.avro.codec import AvroCodec, LockedSchemaIds  # noqa: E402
from app.client.consumer import ensure_topic  # noqa: E402
from app.contracts import headers as h  # noqa: E402
from app.contracts.failure_event import new_failure_event  # noqa: E402
from app.kafka.config import producer_config  # noqa: E402
from app.settings import Settings  # noqa: E402

CODEC = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))


def bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "kafka"), "start", "--port",
                          "29092"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def immediate_failure(i: int) -> dict:
    """Failures decided on arrival (escalated, poisoned, dead-lettered): pure routing work."""
    if i % 3 == 0:
        return new_failure_event(kind="MCP_CONNECTION_LOST", error_type="authentication_failure",
                                 service="bench", work_item_id=f"b{i}")
    if i % 3 == 1:
        return new_failure_event(
            kind="CONSUMER_CRASHED", error_type="oom", service="bench", severity="FATAL",
            work_item_id=f"b{i}", failed_record={"topic": "t", "partition": 0, "offset": i,
                                                 "key": b"k", "value": b"x" * 200,
                                                 "headers": []})
    return new_failure_event(kind="EVENT_DELIVERY_FAILED", error_type="consumer_unavailable",
                             service="bench", work_item_id=f"b{i}")


def run_cli(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, check=True,
                   capture_output=True)


def produce_events(settings: Settings, count: int) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    topic = settings.topic("recovery.failures")
    for i in range(count):
        event = immediate_failure(i)
        producer.produce(topic, key=event["work_item_id"].encode(),
                         value=CODEC.encode("failure-event", event))
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)


async def bare_loop(servers: str, source: str, sink: str, count: int) -> tuple[float, int]:
    """The baseline: consume each record and produce it on, nothing else."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(source, bootstrap_servers=servers, group_id=f"bare-{uuid.uuid4()}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    seen = 0
    started = None
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batches.values():
                for record in records:
                    if started is None:
                        started = time.perf_counter()
                    await producer.send(sink, record.value, key=record.key,
                                        headers=record.headers)
                    seen += 1
        await producer.flush()
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()
    return elapsed, seen


def wait_for_outcomes(settings: Settings, count: int, timeout: float) -> tuple[float, int]:
    """Seconds from the first to the count-th terminal outcome, by broker timestamps."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic("recovery.events")])
    outcomes, first, last = set(), None, None
    deadline = time.monotonic() + timeout
    while len(outcomes) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        stamp = message.timestamp()[1] / 1000
        first = stamp if first is None else min(first, stamp)
        event = CODEC.decode(message.value(), "lifecycle-event")
        if event["outcome"]:
            outcomes.add(event["failure_event_id"])
            last = stamp if last is None else max(last, stamp)
    consumer.close()
    return (last - first) if first and last else float("nan"), len(outcomes)


def wait_for_records(servers: str, topic: str, count: int, timeout: float,
                     producing: subprocess.Popen) -> tuple[float, int]:
    """Seconds from the first to the count-th record of a topic, by broker timestamps, while
    the process producing them lives."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"bench-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    while seen < count and time.monotonic() < deadline:
        if producing.poll() is not None:
            raise SystemExit(f"{producing.args[-1]} exited with {producing.returncode}")
        for message in consumer.consume(1000, 0.5):
            if message.error():
                continue
            stamp = message.timestamp()[1] / 1000
            first = stamp if first is None else min(first, stamp)
            last = stamp if last is None else max(last, stamp)
            seen += 1
    consumer.close()
    return (last - first) if first and last else float("nan"), seen


def faust_passthrough(servers: str, source: str, sink: str, count: int,
                      workdir: Path) -> tuple[float, int]:
    """The smallest Faust worker over the same records (scripts/faust_passthrough.py)."""
    env = dict(os.environ, PASSTHROUGH_BROKER=servers, PASSTHROUGH_SOURCE=source,
               PASSTHROUGH_SINK=sink, PASSTHROUGH_APP_ID=f"passthrough-{uuid.uuid4().hex[:8]}",
               PASSTHROUGH_DATA_DIR=str(workdir / "passthrough"),
               PASSTHROUGH_WEB_PORT=str(free_port()))
    log = (workdir / "passthrough.log").open("w")
    worker = subprocess.Popen([sys.executable, str(REPO / "scripts" / "faust_passthrough.py")],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        return wait_for_records(servers, sink, count, timeout=600, producing=worker)
    finally:
        worker.terminate()
        worker.wait(60)


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", "worker", "--loglevel", "warning"],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def measure_lateness(settings: Settings, env: dict, rate: int, seconds: int,
                     workdir: Path) -> list[float]:
    group = settings.topic("bench-consumer")
    target = f"{group}.redelivery"
    ensure_topic(settings.kafka_bootstrap_servers, target)
    worker = start_worker(env, workdir / "worker-lateness.log")
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"late-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                         "topic.metadata.refresh.interval.ms": 1000})
    consumer.subscribe([target])
    time.sleep(8)  # let the worker join before the clock starts
    producer = Producer(producer_config(settings))
    total = rate * seconds
    lateness: list[float] = []
    interval = 1 / rate
    next_send = time.perf_counter()
    sent = 0
    deadline = time.monotonic() + seconds + 60
    while (sent < total or len(lateness) < total) and time.monotonic() < deadline:
        now = time.perf_counter()
        while sent < total and now >= next_send:
            event = new_failure_event(
                kind="PROCESSING_FAILED", error_type="handler_exception", service="bench",
                consumer_group=group, work_item_id=f"r{sent}", dispatch_target=target,
                failed_record={"topic": "t", "partition": 0, "offset": sent, "key": b"k",
                               "value": b"v" * 100, "headers": []})
            producer.produce(settings.topic("recovery.failures"), key=f"r{sent}".encode(),
                             value=CODEC.encode("failure-event", event))
            producer.poll(0)
            sent += 1
            next_send += interval
        message = consumer.poll(0.001)
        if message is not None and not message.error():
            due = h.header_int(message.headers(), h.RETRY_DUE)
            if due:
                lateness.append(message.timestamp()[1] - due)
    producer.flush(10)
    consumer.close()
    worker.terminate()
    worker.wait(60)
    return lateness


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        raise SystemExit("no retries were redelivered; see the worker logs in bench-pipeline-*")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stop_broker() -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "kafka"), "stop", "--port", "29092"],
                   capture_output=True, timeout=120)


def main() -> int:
    started = not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        return bench()
    finally:
        if started:  # a broker this run started does not outlive it
            stop_broker()


def bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--retry-rate", type=int, default=200)
    parser.add_argument("--retry-seconds", type=int, default=20)
    parser.add_argument("--report", type=Path, default=REPO / "docs/benchmarks/pipeline.md")
    args = parser.parse_args()

    servers = bootstrap()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=servers, RECOVERY_TOPIC_PREFIX=prefix,
               RECOVERY_APP_ID=f"recovery-{prefix.rstrip('.')}",
               RECOVERY_DATA_DIR=str(workdir / "data"), RECOVERY_WEB_PORT=str(free_port()))
    settings = Settings(kafka_bootstrap_servers=servers, topic_prefix=prefix)
    run_cli(env, "topics", "apply")
    ensure_topic(servers, f"{prefix}bare-sink")

    print(f"producing {args.events} failure events ...", flush=True)
    produce_events(settings, args.events)

    print("baseline: bare aiokafka consume-and-produce loop ...", flush=True)
    bare_seconds, bare_count = asyncio.run(
        bare_loop(servers, settings.topic("recovery.failures"), f"{prefix}bare-sink",
                  args.events))
    bare_rate = bare_count / bare_seconds

    print("baseline: the smallest Faust agent, passing records through ...", flush=True)
    ensure_topic(servers, f"{prefix}faust-sink")
    faust_seconds, faust_count = faust_passthrough(
        servers, settings.topic("recovery.failures"), f"{prefix}faust-sink", args.events,
        workdir)
    faust_rate = faust_count / faust_seconds

    print("worker: classification and routing ...", flush=True)
    worker = start_worker(env, workdir / "worker-throughput.log")
    worker_seconds, outcomes = wait_for_outcomes(settings, args.events, timeout=600)
    worker.terminate()
    worker.wait(60)
    worker_rate = outcomes / worker_seconds
    print(f"bare loop {bare_rate:,.0f}/s, worker {worker_rate:,.0f}/s", flush=True)

    print(f"lateness: {args.retry_rate} retries/s for {args.retry_seconds} s ...", flush=True)
    # Fresh topics, so the retry run does not first wade through the throughput run's input.
    late_prefix = f"late{uuid.uuid4().hex[:8]}."
    env_late = dict(env, RECOVERY_APP_ID=f"recovery-{late_prefix.rstrip('.')}",
                    RECOVERY_TOPIC_PREFIX=late_prefix, RECOVERY_WEB_PORT=str(free_port()),
                    RECOVERY_DATA_DIR=str(workdir / "data-late"))
    run_cli(env_late, "topics", "apply")
    late_settings = Settings(kafka_bootstrap_servers=servers, topic_prefix=late_prefix)
    lateness = measure_lateness(late_settings, env_late, args.retry_rate, args.retry_seconds,
                                workdir)
    p50, p99 = percentile(lateness, 0.5), percentile(lateness, 0.99)

    ratio = worker_rate / bare_rate
    lines = [
        "# Pipeline benchmark",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
        f"({os.cpu_count()} cores), one local Kafka 4.1.1 broker, "
        "`.venv/bin/python scripts/bench_pipeline.py "
        f"--events {args.events} --retry-rate {args.retry_rate} "
        f"--retry-seconds {args.retry_seconds}`.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| bare aiokafka consume-and-produce loop | {bare_rate:,.0f} records/s "
        f"({bare_count} in {bare_seconds:.2f} s) | baseline | |",
        f"| the smallest Faust agent: each record sent on, nothing else "
        f"(`scripts/faust_passthrough.py`) | {faust_rate:,.0f} records/s ({faust_count} in "
        f"{faust_seconds:.2f} s) | | {faust_rate / bare_rate:.0%} of baseline |",
        f"| worker: decode, classify, decide, route, lifecycle events | {worker_rate:,.0f} "
        f"failure events/s ({outcomes} in {worker_seconds:.2f} s) | >= 50% of baseline | "
        f"{'yes' if ratio >= 0.5 else 'no'} ({ratio:.0%}) |",
        f"| retry lateness p50 ({len(lateness)} retries at {args.retry_rate}/s) | "
        f"{p50:.0f} ms | | |",
        f"| retry lateness p99 | {p99:.0f} ms | < 100 ms | {'yes' if p99 < 100 else 'no'} |",
        "",
        "Each failure event in the throughput run is decided on arrival (escalated, poisoned or "
        "dead-lettered), so the worker writes three lifecycle events plus a dead letter or "
        "poison record for it, where the bare loop writes one record. Rates are measured "
        "between the first and last output record's broker timestamps (worker) or wall clock "
        "from the first consumed record (bare loop). Lateness is the redelivered record's "
        "broker timestamp minus its due time (`recovery.retry.due`).",
        "",
        f"The smallest Faust agent, which only sends each record on, reaches "
        f"{faust_rate / bare_rate:.0%} of the bare loop's rate in this run: that is the "
        "ceiling of one Faust agent here before any recovery work, so the worker's target of "
        f"half the bare loop is {'within' if faust_rate / bare_rate >= 0.5 else 'beyond'} "
        "what the chosen stack allows on this machine. The worker reaches "
        f"{worker_rate / faust_rate:.0%} of that ceiling.",
        "",
        "Why the throughput target is not met (a py-spy profile of the worker under this "
        "load, `py-spy record -p <worker pid>`, 2026-11-29): about 45% of the main thread is "
        "the incident agent's own work for an event (Avro decode about 20 µs, three lifecycle "
        "encodes about 14 µs each, four producer sends, an incident-table write with its "
        "changelog record), about 30% is Faust's stream and aiokafka's producer and consumer "
        "machinery per record, and the rest waits. Half the bare loop's rate would leave "
        "about 60 µs per event for all of that; one Faust agent spends more than that on its "
        "own per-record machinery here. Found on the way and fixed: the schemas were parsed "
        "again on every Avro read and write (127 µs per decode, now 20 µs).",
        "",
    ]
    args.report.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
