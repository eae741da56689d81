#!/usr/bin/env python3
"""Benchmark: the worker under a failure storm beside the clients' and Faust's own ceilings,
all in one run on one broker over same-sized backlogs of failure events.

  (a) a confluent-kafka batch loop: consume(2000), produce each record on
  (b) an aiokafka loop: getmany, send each record on
  (c) the smallest Faust agent that only consumes, in batches (scripts/faust_consume_only.py)
  (d) the worker on a mix decided on arrival (escalated, poisoned, dead-lettered)
  (e) the worker on a mix where a third of the events are retried once and acknowledged by
      a service
plus retry lateness at a sustained retry rate, the aggregate rate of 1, 2 and 3 worker
processes over one backlog, the worker's peak RSS on a small and a large backlog, and
(--profile) a py-spy profile of the worker on (d).

  .venv/bin/python scripts/bench_pipeline.py [--events N] [--rss-events N]
      [--retry-rate R] [--retry-seconds S] [--workers 1,2,3] [--profile]

Rates are by broker timestamps: first to last output record. Uses KAFKA_BOOTSTRAP_SERVERS,
else starts scripts/kafka on port 29092. Writes docs/benchmarks/pipeline.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from app.avro.catalog import SchemaCatalog  # noqa: E402
from app.avro.codec import AvroCodec, LockedSchemaIds  # noqa: E402
from app.client import FailureReporter  # noqa: E402
from app.client.consumer import ensure_topic  # noqa: E402
from app.contracts import headers as h  # noqa: E402
from app.contracts.failure_event import new_failure_event  # noqa: E402
from app.kafka.config import producer_config  # noqa: E402
from app.kafka.topics import load_topic_specs  # noqa: E402
from app.settings import Settings  # noqa: E402

CODEC = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))
# The retried third of mix (e): one quick retry, so the run's tail is not a backoff.
QUICK_RETRY_POLICY = """
[retry.default]
attempts = 3
backoff = "fixed"
initial_ms = 200
max_ms = 200
jitter = 0.0
on_exhausted = "dead_letter"
"""


def bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "kafka"), "start", "--port",
                          "29092"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def decided_on_arrival(i: int, _group: str, _target: str) -> dict:
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


def a_third_retried(i: int, group: str, target: str) -> dict:
    """Mix (e): every third event a processing failure retried once through the tiers and
    redelivered to a service that acknowledges it; the rest decided on arrival."""
    if i % 3 == 2:
        return retryable(f"b{i}", i, group, target)
    return decided_on_arrival(i, group, target)


def retryable(work_item: str, i: int, group: str, target: str) -> dict:
    return new_failure_event(
        kind="PROCESSING_FAILED", error_type="handler_exception", service="bench",
        consumer_group=group, work_item_id=work_item, dispatch_target=target,
        failed_record={"topic": "t", "partition": 0, "offset": i, "key": b"k",
                       "value": b"v" * 100, "headers": []})


def run_cli(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, check=True,
                   capture_output=True)


def produce_events(settings: Settings, count: int, mix=decided_on_arrival, group: str = "",
                   target: str = "") -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    topic = settings.topic("recovery.failures")
    for i in range(count):
        event = mix(i, group, target)
        producer.produce(topic, key=event["work_item_id"].encode(),
                         value=CODEC.encode("failure-event", event))
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)


def confluent_loop(servers: str, source: str, sink: str, count: int) -> None:
    """(a) consume(2000), produce each record on: the Python client's limit."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"loop-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})
    producer = Producer({"bootstrap.servers": servers, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True})
    consumer.subscribe([source])
    seen = 0
    try:
        while seen < count:
            for message in consumer.consume(2000, 1.0):
                if message.error():
                    continue
                while True:
                    try:
                        producer.produce(sink, message.value(), message.key(),
                                         headers=message.headers())
                        break
                    except BufferError:
                        producer.poll(0.01)
                seen += 1
            producer.poll(0)
        producer.flush(60)
    finally:
        consumer.close()


async def aiokafka_loop(servers: str, source: str, sink: str, count: int) -> None:
    """(b) getmany, then send each record on."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(source, bootstrap_servers=servers,
                                group_id=f"aio-{uuid.uuid4()}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    seen = 0
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batches.values():
                for record in records:
                    await producer.send(sink, record.value, key=record.key,
                                        headers=record.headers)
                    seen += 1
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()


def timestamps(servers: str, topic: str, count: int, timeout: float,
               alive: subprocess.Popen | None = None) -> list[tuple[float, bytes | None]]:
    """(broker timestamp in s, value) of the first `count` records of a topic."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"bench-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen: list[tuple[float, bytes | None]] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise SystemExit(f"{alive.args} exited with {alive.returncode}")
        for message in consumer.consume(1000, 0.5):
            if not message.error():
                seen.append((message.timestamp()[1] / 1000, message.value()))
    consumer.close()
    return seen


def span_rate(stamps: list[float], count: int) -> tuple[float, float]:
    """(records/s, seconds) between the first and last broker timestamp."""
    seconds = max(stamps) - min(stamps) if len(stamps) > 1 else float("nan")
    return (count / seconds if seconds > 0 else float("nan")), seconds


def faust_consume_only(servers: str, source: str, count: int, workdir: Path,
                       settings: Settings) -> tuple[float, int, float]:
    """(c) The batch tallies' broker timestamps: the records after the first batch over the
    time from the first tally to the last."""
    tallies = f"{source}.tallies"
    ensure_topic(servers, tallies, 1)
    env = dict(os.environ, CONSUME_BROKER=servers, CONSUME_SOURCE=source,
               CONSUME_TALLIES=tallies, CONSUME_APP_ID=f"consume-{uuid.uuid4().hex[:8]}",
               CONSUME_DATA_DIR=str(workdir / "consume-only"),
               CONSUME_BATCH=str(settings.batch_size), CONSUME_WAIT_MS=str(settings.batch_wait_ms))
    log = (workdir / "consume-only.log").open("w")
    worker = subprocess.Popen([sys.executable, str(REPO / "scripts" / "faust_consume_only.py")],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        consumer = Consumer({"bootstrap.servers": servers, "group.id": f"t-{uuid.uuid4()}",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([tallies])
        rows: list[tuple[float, int]] = []
        deadline = time.monotonic() + 600
        while sum(n for _, n in rows) < count and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SystemExit(f"consume-only agent exited with {worker.returncode}")
            for message in consumer.consume(100, 0.5):
                if not message.error():
                    rows.append((message.timestamp()[1] / 1000, int(message.value())))
        consumer.close()
    finally:
        worker.terminate()
        worker.wait(60)
    rows.sort()
    total = sum(n for _, n in rows)
    seconds = rows[-1][0] - rows[0][0]
    return (total - rows[0][1]) / seconds, total, seconds


@dataclass
class WorkerRun:
    rate: float
    outcomes: int
    seconds: float
    peak_rss_mb: list[float]
    machine_busy: float = float("nan")  # the CPUs' busy share while the backlog was worked
    worker_cpu_s: tuple[float, ...] = ()  # each worker's CPU seconds over that time


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_env(servers: str, workdir: Path, name: str, policy: str | None = None) -> dict:
    prefix = f"{name}{uuid.uuid4().hex[:6]}."
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=servers, RECOVERY_TOPIC_PREFIX=prefix,
               RECOVERY_APP_ID=f"recovery-{prefix.rstrip('.')}",
               RECOVERY_DATA_DIR=str(workdir / prefix.rstrip(".")),
               RECOVERY_LAG_INTERVAL_S="0")
    if policy:
        path = workdir / f"{name}-policy.toml"
        path.write_text(policy)
        env["RECOVERY_POLICY_FILE"] = str(path)
    run_cli(env, "topics", "apply")
    return env


def start_worker(env: dict, log: Path, index: int = 0, profile: Path | None = None
                 ) -> subprocess.Popen:
    env = dict(env, RECOVERY_WEB_PORT=str(free_port()),
               RECOVERY_DATA_DIR=f"{env['RECOVERY_DATA_DIR']}/w{index}")
    command = [sys.executable, "-m", "app", "worker", "--loglevel", "warning"]
    if profile is not None:
        spy = Path(sys.executable).parent / "py-spy"
        command = [str(spy), "record", "--format", "raw", "--rate", "200", "--output",
                   str(profile), "--", *command]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def worker_pid(process: subprocess.Popen, profiled: bool) -> int:
    """The worker's own pid (under py-spy, the child of the py-spy process)."""
    if not profiled:
        return process.pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        if children.exists() and children.read_text().split():
            return int(children.read_text().split()[0])
        time.sleep(0.2)
    return process.pid


def group_members(servers: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": servers})
    try:
        [described] = admin.describe_consumer_groups([group]).values()
        result = described.result(10)
        return len(result.members) if str(result.state).endswith("STABLE") else 0
    except Exception:
        return 0


class Acknowledger:
    """The service of mix (e): reads its redelivery topic and acknowledges each record."""

    def __init__(self, settings: Settings, target: str):
        self.reporter = FailureReporter(settings)
        self.consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                                  "group.id": f"ack-{uuid.uuid4()}",
                                  "auto.offset.reset": "earliest",
                                  "topic.metadata.refresh.interval.ms": 1000})
        self.consumer.subscribe([target])
        self.stop = threading.Event()
        self.acked = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for message in self.consumer.consume(500, 0.2):
                if message.error():
                    continue
                incident = h.header_value(message.headers(), h.INCIDENT_ID)
                if incident:
                    self.reporter.acknowledge(incident)
                    self.acked += 1
            self.reporter.flush(5)
        self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def outcomes_of(settings: Settings, count: int, timeout: float,
                workers: list[subprocess.Popen]) -> tuple[list[float], int]:
    """Broker timestamps of every lifecycle event up to the count-th terminal outcome."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic("recovery.events")])
    outcomes: set[str] = set()
    stamps: list[float] = []
    deadline = time.monotonic() + timeout
    while len(outcomes) < count and time.monotonic() < deadline:
        if any(w.poll() is not None for w in workers):
            raise SystemExit("a worker exited during the run; see its log")
        for message in consumer.consume(1000, 0.5):
            if message.error():
                continue
            event = CODEC.decode(message.value(), "lifecycle-event")
            if event["outcome"]:  # completed, escalated, dead_lettered or poisoned
                outcomes.add(event["incident_id"])
                stamps.append(message.timestamp()[1] / 1000)
    consumer.close()
    return stamps, len(outcomes)


def worker_run(servers: str, workdir: Path, name: str, count: int, *, workers: int = 1,
               mix=decided_on_arrival, policy: str | None = None, backlog_first: bool = True,
               profile: Path | None = None) -> WorkerRun:
    """`workers` worker processes over `count` failure events: the backlog is produced
    before they start (backlog_first) or, for several workers, once the group is stable
    with all of them (so the figure is their rate, not their joining)."""
    env = worker_env(servers, workdir, name, policy)
    settings = Settings(kafka_bootstrap_servers=servers, topic_prefix=env["RECOVERY_TOPIC_PREFIX"])
    group = settings.topic("bench-service")
    target = f"{group}.redelivery"
    acker = None
    if mix is a_third_retried:
        ensure_topic(servers, target)
        acker = Acknowledger(settings, target)
    if backlog_first:
        produce_events(settings, count, mix, group, target)
    procs = [start_worker(env, workdir / f"{name}-{i}.log", i, profile if i == 0 else None)
             for i in range(workers)]
    pids: list[int] = []
    try:
        pids = [worker_pid(p, profile is not None and i == 0) for i, p in enumerate(procs)]
        if not backlog_first:
            deadline = time.monotonic() + 120
            while group_members(servers, env["RECOVERY_APP_ID"]) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{workers} workers did not form a stable group")
                time.sleep(1)
            time.sleep(5)  # standby and table recovery settle
        ticks, used = cpu_ticks(), [cpu_seconds(pid) for pid in pids]
        if not backlog_first:
            produce_events(settings, count, mix, group, target)
        stamps, outcomes = outcomes_of(settings, count, 900, procs)
        (busy, total), (busy0, total0) = cpu_ticks(), ticks
        machine_busy = (busy - busy0) / max(1, total - total0)
        worker_cpu = tuple(cpu_seconds(pid) - u for pid, u in zip(pids, used, strict=True))
        rss = [peak_rss_mb(pid) for pid in pids]
    finally:
        # The workers themselves: under py-spy, stopping the worker is what makes py-spy
        # write its profile and exit (a signal to py-spy would leave the worker running).
        for pid in pids or [p.pid for p in procs]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(90)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if acker is not None:
            acker.close()
    rate, seconds = span_rate(stamps, outcomes)
    return WorkerRun(rate, outcomes, seconds, rss, machine_busy, worker_cpu)


def measure_lateness(servers: str, workdir: Path, rate: int, seconds: int) -> list[float]:
    env = worker_env(servers, workdir, "late")
    settings = Settings(kafka_bootstrap_servers=servers, topic_prefix=env["RECOVERY_TOPIC_PREFIX"])
    group = settings.topic("bench-consumer")
    target = f"{group}.redelivery"
    ensure_topic(servers, target)
    worker = start_worker(env, workdir / "worker-lateness.log")
    consumer = Consumer({"bootstrap.servers": servers,
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
            event = retryable(f"r{sent}", sent, group, target)
            producer.produce(settings.topic("recovery.failures"), key=f"r{sent}".encode(),
                             value=CODEC.encode("failure-event", event))
            producer.poll(0)
            sent += 1
            next_send += interval
        for message in consumer.consume(500, 0.001):
            if not message.error():
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


def profile_stacks(raw: Path) -> list[tuple[list[str], int]]:
    """The event loop's busy samples from py-spy's raw output: stacks under the loop that
    are not waiting in `select` (the other threads, librdkafka's poller and Faust's consumer
    thread, mostly wait)."""
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] for f in stack.split(";")]
        if (count.isdigit() and "BaseEventLoop.run_forever" in frames
                and frames[-1] != "EpollSelector.select"):
            stacks.append((stack.split(";"), int(count)))
    return stacks


def profile_summary(raw: Path, top: int = 12) -> list[str]:
    """Where the event loop's busy time goes: by what the loop runs (inclusive), and within
    the batches' record handling, the functions the samples were in (self time)."""
    if not raw.exists():
        return ["(no profile was written)"]
    stacks = profile_stacks(raw)
    busy = sum(n for _, n in stacks) or 1
    runs: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    handling = 0
    for frames, n in stacks:
        names = [f.split(" (")[0] for f in frames]
        if "Handle._run" in names:
            below = names[names.index("Handle._run") + 1:]
            runs[" > ".join(below[:2]) or "(the loop itself)"] += n
        else:
            runs["(the loop itself)"] += n
        if "BatchRunner.each" in names:
            handling += n
            own[frames[-1]] += n
    lines = [f"{busy} busy samples of the event loop (200 per second).", "",
             "| what the event loop runs | share of busy samples |", "|---|---|"]
    lines += [f"| {what} | {n / busy:.1%} |" for what, n in runs.most_common(top)]
    lines += ["", f"Within the batches' record handling ({handling / busy:.0%} of the busy "
              "samples), self time:", "", "| function | where | share of handling |",
              "|---|---|---|"]
    lines += [f"| {frame.split(' (')[0]} | `{frame.split(' (')[-1].rstrip(')')}` | "
              f"{n / (handling or 1):.1%} |" for frame, n in own.most_common(top)]
    return lines


def scaling_limit(scaling: list[tuple[int, WorkerRun]]) -> str:
    """What the scaling runs' CPU figures say about what limits them."""
    if not scaling:
        return ""
    parts = [f"{k} worker(s): the cores {r.machine_busy:.0%} busy, the workers "
             f"{sum(r.worker_cpu_s):.1f} CPU s of {r.seconds * (os.cpu_count() or 1):.1f}"
             for k, r in scaling]
    saturated = all(r.machine_busy >= 0.85 for k, r in scaling if k > 1)
    verdict = ("the CPU is the limit: with more than one worker the cores are saturated "
               "and the broker, the benchmark's own reader and the workers share them"
               if saturated else "the cores are not saturated, so the limit is elsewhere "
               "(the broker's or the group's coordination)")
    return f"CPU while the backlog was worked: {'; '.join(parts)}. So {verdict}."


def cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, total) CPU ticks so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used (/proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--rss-events", default="100000,200000",
                        help="backlog sizes for the peak-RSS runs, comma-separated")
    parser.add_argument("--retry-rate", type=int, default=1000)
    parser.add_argument("--retry-seconds", type=int, default=30)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--report", type=Path, default=REPO / "docs/benchmarks/pipeline.md")
    args = parser.parse_args()

    servers = bootstrap()
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    base = worker_env(servers, workdir, "base")
    settings = Settings(kafka_bootstrap_servers=servers, topic_prefix=base["RECOVERY_TOPIC_PREFIX"])
    source = settings.topic("recovery.failures")
    partitions = {s.name: s.partitions for s in load_topic_specs(settings.topics_dir)}
    n = args.events
    print(f"backlog: {n} failure events ...", flush=True)
    produce_events(settings, n)

    print("(a) confluent-kafka batch loop ...", flush=True)
    ensure_topic(servers, f"{source}.a")
    confluent_loop(servers, source, f"{source}.a", n)
    a_rate, a_s = span_rate([t for t, _ in timestamps(servers, f"{source}.a", n, 120)], n)

    print("(b) aiokafka loop ...", flush=True)
    ensure_topic(servers, f"{source}.b")
    asyncio.run(aiokafka_loop(servers, source, f"{source}.b", n))
    b_rate, b_s = span_rate([t for t, _ in timestamps(servers, f"{source}.b", n, 120)], n)

    print("(c) Faust agent that only consumes, in batches ...", flush=True)
    c_rate, c_count, c_s = faust_consume_only(servers, source, n, workdir, settings)

    print("(d) worker, decided on arrival ...", flush=True)
    d = worker_run(servers, workdir, "d", n)
    print(f"    {d.rate:,.0f}/s", flush=True)
    profile = workdir / "profile.txt" if args.profile else None
    if profile is not None:  # its own run: the profiler slows the worker it samples
        print("(d) again under py-spy ...", flush=True)
        worker_run(servers, workdir, "p", n, profile=profile)
    print("(e) worker, a third retried once and acknowledged ...", flush=True)
    e = worker_run(servers, workdir, "e", n, mix=a_third_retried, policy=QUICK_RETRY_POLICY)
    print(f"    {e.rate:,.0f}/s", flush=True)

    big: list[tuple[int, WorkerRun]] = []
    for size in [int(x) for x in args.rss_events.split(",") if x]:
        print(f"RSS: worker over {size} events ...", flush=True)
        big.append((size, worker_run(servers, workdir, f"rss{size}", size)))

    scaling: list[tuple[int, WorkerRun]] = []
    for k in [int(x) for x in args.workers.split(",") if x]:
        print(f"scaling: {k} worker(s) ...", flush=True)
        scaling.append((k, worker_run(servers, workdir, f"s{k}", n, workers=k,
                                      backlog_first=False)))

    print(f"lateness: {args.retry_rate} retries/s for {args.retry_seconds} s ...", flush=True)
    lateness = measure_lateness(servers, workdir, args.retry_rate, args.retry_seconds)
    p50, p99 = percentile(lateness, 0.5), percentile(lateness, 0.99)

    def met(ok: bool) -> str:
        return "yes" if ok else "no"

    one = scaling[0][1].rate if scaling else float("nan")
    two = next((r.rate for k, r in scaling if k == 2), float("nan"))
    lines = [
        "# Pipeline benchmark",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
        f"({os.cpu_count()} cores, the broker on the same cores), one local Kafka broker, "
        f"`{source.split('.', 1)[1]}` with {partitions['recovery.failures']} partitions, "
        f"batches of {settings.batch_size} (wait {settings.batch_wait_ms} ms): "
        f"`.venv/bin/python scripts/bench_pipeline.py --events {n} --rss-events "
        f"{args.rss_events} --retry-rate {args.retry_rate} --retry-seconds "
        f"{args.retry_seconds} --workers {args.workers}{' --profile' if args.profile else ''}`.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| (a) confluent-kafka batch loop: `consume(2000)`, `produce` each | {a_rate:,.0f} "
        f"records/s ({n} in {a_s:.2f} s) | baseline | |",
        f"| (b) aiokafka loop: `getmany`, `send` each | {b_rate:,.0f} records/s ({n} in "
        f"{b_s:.2f} s) | baseline | |",
        f"| (c) Faust agent that only consumes, `take_events` | {c_rate:,.0f} records/s "
        f"({c_count} in {c_s:.2f} s) | baseline | |",
        f"| (d) worker, decided on arrival | {d.rate:,.0f} failure events/s ({d.outcomes} in "
        f"{d.seconds:.2f} s) | | |",
        f"| (e) worker, a third retried once and acknowledged | {e.rate:,.0f} failure events/s "
        f"({e.outcomes} in {e.seconds:.2f} s) | | |",
        f"| d/c | {d.rate / c_rate:.2f} | >= 0.7 | {met(d.rate / c_rate >= 0.7)} |",
        f"| e/c | {e.rate / c_rate:.2f} | >= 0.5 | {met(e.rate / c_rate >= 0.5)} |",
        f"| d/a | {d.rate / a_rate:.3f} | | |",
        f"| retry lateness p50 ({len(lateness)} retries at {args.retry_rate}/s for "
        f"{args.retry_seconds} s) | {p50:.0f} ms | | |",
        f"| retry lateness p99 | {p99:.0f} ms | < 100 ms | {met(p99 < 100)} |",
        *[f"| {k} worker process(es) over one backlog of {n} | {r.rate:,.0f} events/s "
          f"({r.outcomes} in {r.seconds:.2f} s; peak RSS "
          f"{', '.join(f'{x:.0f}' for x in r.peak_rss_mb)} MB; CPU seconds per worker "
          f"{', '.join(f'{x:.1f}' for x in r.worker_cpu_s)}; the machine's "
          f"{os.cpu_count()} cores {r.machine_busy:.0%} busy) | "
          f"{'>= 1.5x one' if k == 2 else ''} | "
          f"{met(r.rate >= 1.5 * one) + f' ({r.rate / one:.2f}x)' if k == 2 else ''} |"
          for k, r in scaling],
        f"| worker peak RSS, {n}-event backlog (d) | {d.peak_rss_mb[0]:.0f} MB | < 400 MB | "
        f"{met(d.peak_rss_mb[0] < 400)} |",
        *[f"| worker peak RSS, {size}-event backlog | {r.peak_rss_mb[0]:.0f} MB "
          f"({r.rate:,.0f} events/s) | < 400 MB | {met(r.peak_rss_mb[0] < 400)} |"
          for size, r in big],
        *([f"| peak RSS growth, {big[0][0]} to {big[-1][0]} events | "
           f"{big[-1][1].peak_rss_mb[0] / big[0][1].peak_rss_mb[0] - 1:+.0%} | flat: < +10% "
           f"| {met(big[-1][1].peak_rss_mb[0] < 1.10 * big[0][1].peak_rss_mb[0])} |"]
          if len(big) > 1 else []),
        "",
        "Rates are by broker timestamps, first to last output record: the sink records for "
        "(a) and (b), a tally record per batch for (c) (the records after the first batch "
        "over the time from the first tally to the last), the lifecycle events up to each "
        "incident's terminal outcome for the worker. In (d) each failure event is decided on "
        "arrival (escalated, poisoned or dead-lettered): three lifecycle events plus a dead "
        "letter or poison record, and an incident-table write. In (e) every third event is a "
        "processing failure retried once (200 ms) through a retry tier, redelivered to a "
        "service that acknowledges it, and completed. Lateness is the redelivered record's "
        "broker timestamp minus its due time (`recovery.retry.due`). Peak RSS is the worker "
        "process's VmHWM (its lag child is off in these runs). The scaling runs produce the "
        "backlog once all workers are in a stable group, so they time working, not joining; "
        f"with the broker and every worker on the same {os.cpu_count()} cores, more "
        "processes share the same CPU.",
        f"Two workers reach {two / one:.2f}x one worker's rate here. "
        + scaling_limit(scaling),
        "",
    ]
    if profile is not None:
        lines += ["## Where the worker's time goes (py-spy on a repeat of run (d))", "",
                  *profile_summary(profile), ""]
    args.report.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
