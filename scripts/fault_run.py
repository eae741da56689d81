#!/usr/bin/env python3
"""Fault run on a local three-node cluster: failure events produced with acks=all and
idempotence while (a) a worker is SIGKILLed at random moments and restarted, (b) one broker is
SIGKILLed and restarted later, (c) every broker JVM is frozen (SIGSTOP) for a while and then
resumed (SIGCONT). Then it counts terminal outcomes per failure event: zero lost and zero
duplicated is the pass mark, and the worker must carry on after the freeze by itself.

Beside the events decided on arrival runs the retry path: a service on the client API
(`RecoveringConsumer`) whose handler fails each order once and succeeds on the redelivery
(--orders, default one per 20 events). Each order's incident must end exactly once
(`recovery_completed`, or dead-lettered by the watchdog), none left open; with
--back-to-back every worker kill is followed by a second one within 2 s of the restart.

  .venv/bin/python scripts/fault_run.py [--events 100000] [--port 45092] [--workers 1]
      [--rate 500] [--worker-kills 3] [--freeze-seconds 30] [--broker-down-seconds 20]
      [--seed N] [--report docs/benchmarks/fault-run.md] [--json PATH] [--keep]

The cluster is the project's launcher (`scripts/kafka start --nodes 3 --port P`), started
fresh in --data-dir and stopped at the end (unless --keep). Brokers on P..P+2, controllers on
P+100..P+102, workers' web ports from --web-port. Topics come from `recovery topics apply`
(replication 3, min.insync.replicas 2). Outcomes are counted the way
tests/integration/test_exactly_once.py counts them: by the deterministic lifecycle event ids
(a reader keeping the first of each id), with the raw repeats before that dedupe reported
separately. Exit 0 when the run passed, 1 when it did not."""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource  # noqa: E402

from app.client import RecoveringConsumer  # noqa: E402
from app.client.consumer import ensure_topic  # noqa: E402
from app.contracts import headers as h  # noqa: E402
from app.contracts import lifecycle  # noqa: E402
from app.kafka.config import admin_config, consumer_config, producer_config  # noqa: E402
from app.kafka.topics import wait_for_leaders  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.integration.test_exactly_once import TERMINAL, failure  # noqa: E402
from tests.kafka_helpers import locked_codec  # noqa: E402
from tests.port_reservation import reserved_ports  # noqa: E402

LAUNCHER = REPO / "scripts" / "kafka"
CODEC = locked_codec()
# librdkafka logs every refused connection while a broker is down or frozen: errors (3) and
# below would drown the run's own lines; the clients recover by themselves.
QUIET = 2
MOVED_FOR = {"dead_lettered": "recovery.dlq", "poisoned": "recovery.poison"}
# Beyond the freeze: an acknowledgement held up by frozen brokers is not yet lost.
ACK_TIMEOUT_BEYOND_FREEZE_MS = 10_000


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- the cluster -----------------------------------------------------------------------------

class Cluster:
    """The launcher's three-node cluster, and the faults done to its broker JVMs."""

    def __init__(self, port: int, data_dir: Path):
        self.port = port
        self.data_dir = data_dir
        self.bootstrap = ""
        self.port_retries = 0
        self.port_holders: list[str] = []
        self.killed_port: int | None = None

    def launcher(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(LAUNCHER), *args, "--nodes", "3", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, timeout=timeout)

    def start(self, fresh: bool = False) -> float:
        """Start (or restart the missing nodes). A dead broker's port can be taken by a
        client's own connection to it: the ports are inside Linux's ephemeral range
        (32768-60999), and a client reconnecting to a port nobody listens on can be given
        that very port and end up connected to itself (TCP simultaneous open). Seen here:
        librdkafka keeps such a connection until its 60 s request timeout; the launcher
        refuses the port meanwhile, so try again for up to 3 minutes."""
        began = time.monotonic()
        self.port_retries = 0
        while True:
            done = self.launcher("start", *(["--fresh"] if fresh else []), "--timeout", "180")
            if done.returncode == 0:
                break
            taken = "already in use" in done.stderr + done.stdout  # at the check, or at bind
            if not taken or self.port_retries >= 90:
                raise RuntimeError(f"scripts/kafka start failed:\n{done.stdout}\n{done.stderr}")
            self.port_retries += 1
            if self.port_retries == 1:
                self.port_holders = port_holders(self.killed_port or self.port)
                say(f"held by: {self.port_holders}")
            say("a broker port is taken for now (a client's self-connection); retrying in 2 s")
            time.sleep(2)
        self.bootstrap = done.stdout.strip().splitlines()[-1]
        return time.monotonic() - began

    def stop(self) -> None:
        self.launcher("stop", timeout=180)

    def pid(self, node: int) -> int:
        return int((self.data_dir / f"node-{node}.pid").read_text().strip())

    def pids(self) -> dict[int, int]:
        return {node: self.pid(node) for node in (1, 2, 3)
                if (self.data_dir / f"node-{node}.pid").exists()}

    def kill(self, node: int) -> int:
        pid = self.pid(node)
        os.kill(pid, signal.SIGKILL)
        self.killed_port = self.port + node - 1
        return pid

    def signal_all(self, sig: int) -> list[int]:
        pids = list(self.pids().values())
        for pid in pids:
            os.kill(pid, sig)
        return pids


def port_holders(port: int) -> list[str]:
    """Sockets using a port (`ss`), to show who holds a dead broker's port."""
    try:
        out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [" ".join(line.split()) for line in out.splitlines()
            if f":{port} " in line + " "][:20]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def die_with_parent() -> None:
    """In the worker, before exec: SIGKILL when this script dies, however it dies (a test's
    timeout kills it outright), so no worker outlives its run. Linux only."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


SKIPPED_READ = re.compile(r"never reached the agent; read (\d+) record")

# ---- workers ---------------------------------------------------------------------------------

class Worker:
    """One worker slot: its own RocksDB directory and web port, restarted in place."""

    def __init__(self, slot: int, env: dict[str, str], log_dir: Path):
        self.slot = slot
        self.env = env
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.incarnation = 0
        self.web_port = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.slot}.{self.incarnation}.log"

    def start(self) -> None:
        self.incarnation += 1
        env = dict(self.env)
        if env.get("RECOVERY_WEB_PORT") == "0":
            env["RECOVERY_WEB_PORT"] = str(free_port())
        self.web_port = int(env["RECOVERY_WEB_PORT"])
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env,
                                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=die_with_parent)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def debug_snapshot(self, label: str) -> dict[str, Any]:
        """The worker's /debug/consumer-state and /debug/consumer-tasks, saved next to its
        log: why a worker that is alive processes nothing."""
        state: dict[str, Any] = {}
        for page in ("consumer-state", "consumer-tasks"):
            url = f"http://127.0.0.1:{self.web_port}/debug/{page}"
            try:
                with urllib.request.urlopen(url, timeout=15) as answer:
                    body = answer.read().decode(errors="replace")
            except OSError as exc:
                body = f"{url}: {exc}"
            (self.log_dir / f"worker-{self.slot}.{self.incarnation}.{label}.{page}.txt") \
                .write_text(body)
            if page == "consumer-state":
                try:
                    state = json.loads(body)
                except ValueError:
                    state = {"error": body[:300]}
        return state

    def skipped_reads(self) -> tuple[int, int]:
        """How often this worker read input records again that Faust had let pass without
        handing them over (app/offset_gaps.py), and how many records that was."""
        repairs = records = 0
        for path in sorted(self.log_dir.glob(f"worker-{self.slot}.*.log")):
            for match in SKIPPED_READ.finditer(path.read_text(errors="replace")):
                repairs += 1
                records += int(match.group(1))
        return repairs, records

    def problems(self) -> collections.Counter:
        """Tracebacks and ERROR lines in every incarnation's log, counted by their text with
        the timestamp, pid and numbers taken out."""
        found: collections.Counter = collections.Counter()
        for path in sorted(self.log_dir.glob(f"worker-{self.slot}.*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if "Traceback" in line or "[ERROR]" in line or "[CRITICAL]" in line:
                    text = re.sub(r"^\[[^]]*\] \[\d+\] ", "", line.strip())
                    found[re.sub(r"\d+", "N", text)[:200]] += 1
        return found


# ---- producing -------------------------------------------------------------------------------

class Producing(threading.Thread):
    """Produces the failure events at a steady rate (acks=all, idempotence), so that the
    faults hit a producer in full flight, and keeps what the brokers acknowledged."""

    def __init__(self, settings: Settings, events: int, rate: float,
                 allowed: Callable[[], int]):
        super().__init__(name="producing", daemon=True)
        self.settings = settings
        self.events = events
        self.rate = rate
        # How many events may be produced so far (Run.allowed): production stays a little
        # ahead of the outcomes and of the next fault, so it is still in flight when each
        # fault hits, and there are events left to produce after the freeze.
        self.allowed = allowed
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.acked: set[str] = set()
        self.failed: dict[str, str] = {}
        self.produced = 0
        self.done = threading.Event()
        self.config = producer_config(settings, **{"linger.ms": 20, "log_level": QUIET})

    def on_delivery(self, err: KafkaError | None, message: Any) -> None:
        event_id = self.ids[int(message.key()[1:])]
        if err is None:
            self.acked.add(event_id)
        else:
            self.failed[event_id] = str(err)

    def run(self) -> None:
        producer = Producer(self.config)
        topic = self.settings.topic("recovery.failures")
        began = time.monotonic()
        for i in range(self.events):
            held = time.monotonic()
            while i >= self.allowed():
                producer.poll(0.2)
            began += time.monotonic() - held  # the rate resumes from here, not in a burst
            event = failure(i)
            self.ids.append(event["event_id"])
            self.index[event["event_id"]] = i
            value = CODEC.encode("failure-event", event)
            while True:
                try:
                    producer.produce(topic, key=event["work_item_id"].encode(), value=value,
                                     on_delivery=self.on_delivery)
                    break
                except BufferError:  # the local queue is full (brokers frozen): wait
                    producer.poll(0.5)
            self.produced = i + 1
            ahead = began + (i + 1) / self.rate - time.monotonic()
            if ahead > 0:
                producer.poll(ahead)
            elif i % 200 == 0:
                producer.poll(0)
        while producer.flush(5) > 0:
            pass
        self.done.set()


# ---- counting outcomes -----------------------------------------------------------------------

class Outcomes(threading.Thread):
    """Reads recovery.events, recovery.dlq and recovery.poison from the beginning and counts
    terminal outcomes per failure event, by deterministic lifecycle event id."""

    def __init__(self, settings: Settings):
        super().__init__(name="outcomes", daemon=True)
        self.events_topic = settings.topic("recovery.events")
        self.moved_topics = {settings.topic(t): t for t in MOVED_FOR.values()}
        self.consumer = Consumer(consumer_config(
            settings, f"fault-run-reader-{uuid.uuid4().hex[:8]}",
            **{"topic.metadata.refresh.interval.ms": 1000, "log_level": QUIET}))
        self.consumer.subscribe([self.events_topic, *self.moved_topics])
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.terminal_ids: set[str] = set()
        self.outcomes: dict[str, set[str]] = collections.defaultdict(set)
        self.kinds: dict[str, str] = {}
        self.raw_terminal: collections.Counter = collections.Counter()
        self.raw_repeats = 0
        self.first_seen: dict[str, float] = {}
        self.step_ids: set[str] = set()
        self.step_repeats = 0
        self.step_records = 0
        self.moved: dict[str, collections.Counter] = {t: collections.Counter()
                                                       for t in MOVED_FOR.values()}
        self.records = 0
        # incident -> its failure event, for every failure_received; terminal outcomes per
        # incident (the retry path's later steps name the incident, not the failure event).
        self.received: dict[str, str] = {}
        self.by_incident: dict[str, set[str]] = collections.defaultdict(set)
        self.incident_kinds: dict[str, str] = {}
        self.raw_by_incident: collections.Counter = collections.Counter()
        # incident -> its distinct lifecycle events in the order read, as (event type, event
        # id, outcome, emitted by, broker timestamp ms): whether two outcomes share a cycle
        # (lifecycle.conflicting), and who decided what, when, for the report.
        self.trail: dict[str, list[tuple[str, str, str | None, str, int]]] = \
            collections.defaultdict(list)

    def conflicting(self, incident: str) -> bool:
        return lifecycle.conflicting(
            {"event_type": kind, "event_id": event_id, "outcome": outcome}
            for kind, event_id, outcome, _, _ in self.trail.get(incident, ()))

    def progress(self) -> int:
        return len(self.outcomes)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for message in self.consumer.consume(500, 0.5):
                if message.error():
                    continue
                with self.lock:
                    self.records += 1
                    if message.topic() == self.events_topic:
                        self.on_lifecycle(message.value(), message)
                    else:
                        fid = h.header_value(message.headers(), h.FAILURE_EVENT_ID) or "?"
                        self.moved[self.moved_topics[message.topic()]][fid] += 1
        self.consumer.close()

    def on_lifecycle(self, value: bytes, message: Any = None) -> None:
        event = CODEC.decode(value, "lifecycle-event")
        if event["event_id"] not in self.step_ids and event["event_id"] not in self.terminal_ids:
            self.trail[event["incident_id"]].append((
                event["event_type"], event["event_id"], event["outcome"],
                h.header_value(message.headers(), h.EMITTED_BY) or "?" if message else "?",
                message.timestamp()[1] if message else 0))
        if event["event_type"] == "recovery/failure_received":
            self.received[event["incident_id"]] = event["failure_event_id"]
        if event["outcome"] not in TERMINAL:
            self.step_records += 1
            if event["event_id"] in self.step_ids:
                self.step_repeats += 1
            self.step_ids.add(event["event_id"])
            return
        fid = event["failure_event_id"] or f"incident:{event['incident_id']}"
        self.raw_terminal[fid] += 1
        self.raw_by_incident[event["incident_id"]] += 1
        if event["event_id"] in self.terminal_ids:
            self.raw_repeats += 1
            return
        self.terminal_ids.add(event["event_id"])
        self.by_incident[event["incident_id"]].add(event["event_id"])
        self.incident_kinds[event["incident_id"]] = event["outcome"]
        self.outcomes[fid].add(event["event_id"])
        self.kinds[fid] = event["outcome"]
        self.first_seen.setdefault(fid, time.monotonic())


# ---- the retry path --------------------------------------------------------------------------

class OrderService:
    """A service on the client API whose handler fails each order once and succeeds on the
    redelivery, fed at a steady rate: its failure reports go through retry, redelivery,
    acknowledgement and recovery_completed while the faults happen."""

    def __init__(self, settings: Settings, prefix: str, orders: int, rate: float):
        self.topic, self.group = f"{prefix}orders", f"{prefix}billing"
        self.settings = settings
        self.keys = [f"order-{i}".encode() for i in range(orders)]
        self.rate = rate
        self.seen: collections.Counter[bytes] = collections.Counter()
        self.handled: set[bytes] = set()
        self.produced = 0
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads: list[threading.Thread] = []

    def handle(self, message: Any) -> None:
        with self.lock:
            self.seen[message.key()] += 1
            first = self.seen[message.key()] == 1
        if first:
            raise RuntimeError("the first try of every order fails")
        with self.lock:
            self.handled.add(message.key())

    def serve(self, consumer: RecoveringConsumer) -> None:
        try:
            consumer.run(self.handle, until=self.stop_flag.is_set)
        except Exception:
            logging.getLogger("app.client").exception("the order service stopped")
            raise

    def feed(self) -> None:
        producer = Producer(producer_config(self.settings, **{"log_level": QUIET}))
        began = time.monotonic()
        for i, key in enumerate(self.keys):
            if self.stop_flag.is_set():
                break
            while True:
                try:
                    producer.produce(self.topic, key=key, value=b"order " + key)
                    break
                except BufferError:
                    producer.poll(0.5)
            self.produced = i + 1
            ahead = began + (i + 1) / self.rate - time.monotonic()
            producer.poll(max(0.0, ahead))
        while producer.flush(5) > 0 and not self.stop_flag.is_set():
            pass

    def start(self, log_path: Path) -> None:
        if not self.keys:
            return
        # The client API's own log (holds, redeliveries, acks) next to the workers' logs.
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(name)s: %(message)s"))
        client_log = logging.getLogger("app.client")
        client_log.addHandler(handler)
        client_log.setLevel(logging.INFO)
        ensure_topic(self.settings.kafka_bootstrap_servers, self.topic)
        consumer = RecoveringConsumer(self.group, [self.topic], service="billing",
                                      settings=self.settings, heartbeat_interval=1)
        self.threads = [
            threading.Thread(target=self.serve, args=(consumer,), daemon=True),
            threading.Thread(target=self.feed, daemon=True)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(30)


# ---- the run ---------------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str  # worker_kill, broker_kill, freeze
    at_fraction: float
    started: float = 0.0  # seconds since the run began
    progress_at_start: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    events: int = 100_000
    port: int = 45092
    data_dir: Path = Path.home() / ".cache" / "kafka-recovery" / "fault-run-45092"
    work_dir: Path | None = None
    workers: int = 1
    rate: float = 500.0
    worker_kills: int = 3
    freeze_seconds: float = 30.0
    broker_down_seconds: float = 20.0
    seed: int = 0
    web_port: int = 0  # 0: a free port for each worker start
    stall_timeout: float = 180.0
    # The final count's own bound, however slowly outcomes still trickle in (a run in a
    # rebalance storm once went on for 40 min without ever pausing for stall_timeout).
    final_timeout: float = 900.0
    drain_seconds: float = 10.0
    keep: bool = False
    orders: int = -1  # -1: one per 20 events
    back_to_back: bool = False


def plan(config: RunConfig, rng: random.Random) -> list[Fault]:
    """The faults in order, each at a random fraction of the outcomes counted so far, inside
    its own slot of the run so their effects do not overlap."""
    kinds = ["worker_kill", "broker_kill", "freeze"]
    for extra in range(config.worker_kills - 1):
        kinds.insert(2 if extra == 0 else len(kinds), "worker_kill")
    if config.worker_kills == 0:
        kinds.remove("worker_kill")
    low, high = 0.05, 0.85
    width = (high - low) / len(kinds)
    return [Fault(kind, round(low + i * width + rng.uniform(0, width * 0.5), 3))
            for i, kind in enumerate(kinds)]


class Run:
    def __init__(self, config: RunConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.began = time.monotonic()
        run_id = uuid.uuid4().hex[:8]
        self.prefix = f"fault-{run_id}."
        self.work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="fault-run-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster(config.port, config.data_dir)
        self.app_id = f"recovery-fault-{run_id}"
        self.workers: list[Worker] = []
        self.faults = plan(config, self.rng)
        self.next_target = config.events
        self.stall_states: dict[str, Any] | None = None
        self.faults_stopped: str | None = None
        self.notes: list[str] = []
        self.unexpected_exits: list[str] = []

    def allowed(self) -> int:
        """Production may run this far: a window beyond the outcomes counted and beyond the
        next fault's moment (a fault that takes long, like a broker restart, must not let the
        whole run be produced before the next one)."""
        window = max(100, min(int(self.config.rate * 20), self.config.events // 10))
        return min(self.outcomes.progress(), self.next_target) + window

    def produce_beyond(self, index: int) -> None:
        """A fault that waits for outcomes of new events lets production go on past the next
        fault's moment, up to `index` at least: else the two would wait on each other."""
        self.next_target = min(self.config.events, max(self.next_target, index))

    def t(self) -> float:
        return round(time.monotonic() - self.began, 1)

    def env(self, slot: int | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"KAFKA_BOOTSTRAP_SERVERS": self.cluster.bootstrap,
                    "RECOVERY_TOPIC_PREFIX": self.prefix, "RECOVERY_APP_ID": self.app_id,
                    # A lost acknowledgement is found by the watchdog soon after the freeze.
                    "RECOVERY_ACK_TIMEOUT_MS": str(int(self.config.freeze_seconds * 1000)
                                                   + ACK_TIMEOUT_BEYOND_FREEZE_MS),
                    "RECOVERY_WATCHDOG_INTERVAL_MS": "1000"})
        if slot is not None:
            web_port = self.config.web_port + slot if self.config.web_port else 0
            env.update({"RECOVERY_DATA_DIR": str(self.work_dir / f"worker-{slot}"),
                        "RECOVERY_WEB_PORT": str(web_port)})
        return env

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        say(f"starting a fresh 3-node cluster on port {self.config.port} "
            f"(data {self.config.data_dir})")
        start_s = self.cluster.start(fresh=True)
        say(f"cluster up in {start_s:.1f}s: {self.cluster.bootstrap}")
        applied = subprocess.run([sys.executable, "-m", "app", "topics", "apply"],
                                 env=self.env(), cwd=REPO, capture_output=True, text=True,
                                 timeout=180)
        if applied.returncode != 0:
            raise RuntimeError(f"topics apply failed: {applied.stderr}")
        self.settings = Settings(kafka_bootstrap_servers=self.cluster.bootstrap,
                                 topic_prefix=self.prefix)
        return {"cluster_start_s": round(start_s, 1), "topics": self.describe_topics()}

    def describe_topics(self) -> dict[str, Any]:
        admin = AdminClient(admin_config(self.settings))
        names = [self.settings.topic(t) for t in ("recovery.failures", "recovery.events",
                                                  "recovery.dlq", "recovery.poison")]
        # Just applied on a fresh cluster: the broker asked may not list them yet.
        wait_for_leaders(admin, names, timeout=60)
        metadata = admin.list_topics(timeout=30)
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
        configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
        out = {}
        for name in names:
            partitions = metadata.topics[name].partitions
            out[name[len(self.prefix):]] = {
                "partitions": len(partitions),
                "replication_factor": min(len(p.replicas) for p in partitions.values()),
                "min.insync.replicas": configs[name]["min.insync.replicas"].value,
            }
        return out

    # -- faults ----------------------------------------------------------------------------

    def wait_progress(self, target: int, stall: float) -> bool:
        """Until `target` outcomes are counted; False once no new outcome came for `stall`
        seconds (a stalled run is reported, not waited on)."""
        last, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < stall:
            self.watch_workers()
            progress = self.outcomes.progress()
            if progress >= target:
                return True
            if progress != last:
                last, last_change = progress, time.monotonic()
            time.sleep(0.2)
        return False

    def stop_faults(self, why: str) -> None:
        """No further fault is injected: the run goes to its final count and reports."""
        self.faults_stopped = why
        self.notes.append(why)
        say(why)

    def save_stall_states(self, label: str) -> None:
        """Each live worker's /debug/consumer-state and consumer-tasks, once per run: why a
        worker that is alive processes nothing."""
        if self.stall_states is None:
            say(f"{label}: saving each worker's /debug/consumer-state and consumer-tasks")
            self.stall_states = {f"worker-{w.slot}.{w.incarnation}": w.debug_snapshot("stall")
                                 for w in self.workers if w.alive()}

    def watch_workers(self) -> None:
        """A worker that died by itself (not by our SIGKILL) is a failure of the run; it is
        restarted so the count can finish, and reported."""
        for worker in self.workers:
            if not worker.alive():
                code = worker.proc.returncode if worker.proc else None
                self.unexpected_exits.append(
                    f"t={self.t()}s worker {worker.slot} (pid {worker.pid}) exited by itself "
                    f"with code {code}")
                say(self.unexpected_exits[-1])
                worker.start()

    def first_new_outcome(self, since: float, min_index: int, timeout: float) -> float | None:
        """Seconds from `since` until an outcome arrives for an event produced at index
        >= min_index (so: read from Kafka after the fault, not buffered before it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch_workers()
            with self.outcomes.lock:
                seen = [t for fid, t in self.outcomes.first_seen.items()
                        if t >= since and self.producing.index.get(fid, -1) >= min_index]
            if seen:
                return round(min(seen) - since, 1)
            time.sleep(0.2)
        return None

    def worker_kill(self, fault: Fault) -> None:
        worker = self.rng.choice(self.workers)
        pid = worker.pid
        worker.kill()
        killed = time.monotonic()
        pause = round(self.rng.uniform(0.5, 3.0), 1)
        say(f"SIGKILL worker {worker.slot} (pid {pid}) at {fault.progress_at_start} outcomes; "
            f"restart in {pause}s")
        time.sleep(pause)
        self.produce_beyond(self.producing.produced + 1)
        worker.start()
        fault.detail = {"worker": worker.slot, "pid": pid, "restart_after_s": pause}
        if self.config.back_to_back:
            # Back to back: the replacement dies too, within 2 s of its start.
            second = round(self.rng.uniform(0.2, 1.8), 1)
            time.sleep(second)
            fault.detail["second_kill"] = {"pid": worker.pid, "after_start_s": second}
            worker.kill()
            say(f"SIGKILL the replacement (pid {fault.detail['second_kill']['pid']}) "
                f"{second}s after its start")
            time.sleep(round(self.rng.uniform(0.5, 2.0), 1))
            worker.start()
        fault.detail["new_pid"] = worker.pid
        resumed = self.first_new_outcome(killed, self.producing.produced,
                                         self.config.stall_timeout)
        fault.detail["first_new_outcome_after_s"] = resumed
        if resumed is None:
            self.save_stall_states(f"no outcome {self.config.stall_timeout:.0f}s after the "
                                   "restart")
            self.stop_faults(f"the restarted worker {worker.slot} produced no outcome of a new "
                             f"event within {self.config.stall_timeout:.0f}s")
        say(f"worker {worker.slot} back: first outcome of a newly produced event "
            f"{resumed}s after the kill")

    def broker_kill(self, fault: Fault) -> None:
        node = self.rng.choice([1, 2, 3])
        pid = self.cluster.kill(node)
        killed = time.monotonic()
        say(f"SIGKILL broker node {node} (pid {pid}) at {fault.progress_at_start} outcomes")
        fault.detail = {"node": node, "pid": pid}
        at_kill = self.outcomes.progress()
        time.sleep(self.config.broker_down_seconds)
        fault.detail["outcomes_while_down"] = self.outcomes.progress() - at_kill
        restart = self.cluster.start()
        fault.detail["down_s"] = round(time.monotonic() - killed, 1)
        fault.detail["restart_s"] = round(restart, 1)
        fault.detail["new_pid"] = self.cluster.pid(node)
        fault.detail["port_taken_retries"] = self.cluster.port_retries
        if self.cluster.port_retries:
            fault.detail["port_holders"] = self.cluster.port_holders
        say(f"broker node {node} restarted in {restart:.1f}s "
            f"({fault.detail['outcomes_while_down']} outcomes while it was down)")

    def freeze(self, fault: Fault) -> None:
        before = {w.slot: w.pid for w in self.workers}
        pids = self.cluster.signal_all(signal.SIGSTOP)
        say(f"SIGSTOP all broker JVMs {pids} for {self.config.freeze_seconds:.0f}s at "
            f"{fault.progress_at_start} outcomes")
        time.sleep(self.config.freeze_seconds)
        self.cluster.signal_all(signal.SIGCONT)
        resumed = time.monotonic()
        produced_at_resume = self.producing.produced
        say("SIGCONT all broker JVMs")
        # Carrying on means more than flushing what was in flight: outcomes for events
        # produced after the thaw, and a good share of them, from the very same processes.
        wanted = min(self.config.events - produced_at_resume, max(200, self.config.events // 20))
        self.produce_beyond(produced_at_resume + wanted)
        if wanted <= 0:
            self.notes.append("every event was produced before the thaw: carrying on after "
                              "the freeze is not shown by this run")
            say(self.notes[-1])
        first = (self.first_new_outcome(resumed, produced_at_resume, self.config.stall_timeout)
                 if wanted > 0 else None)
        # Every event from produced_at_resume on was produced after the thaw, so all of their
        # outcomes count (subtracting those done by the first one's arrival once made a run
        # with 117 of 117 done read as 115 of 117).
        base = 0
        # Until `wanted` are done, or no new one came for --stall-timeout (as wait_progress).
        new, last_change = base, time.monotonic()
        while (first is not None and new - base < wanted
               and time.monotonic() - last_change < self.config.stall_timeout):
            time.sleep(0.5)
            with self.outcomes.lock:
                now_done = sum(1 for fid in self.outcomes.outcomes
                               if self.producing.index.get(fid, -1) >= produced_at_resume)
            if now_done != new:
                new, last_change = now_done, time.monotonic()
        after = {w.slot: w.pid for w in self.workers}
        fault.detail = {"broker_pids": pids, "seconds": self.config.freeze_seconds,
                        "first_new_outcome_after_s": first,
                        "new_events_done_after_thaw": new - base, "wanted": wanted,
                        "worker_pids_before": before, "worker_pids_after": after,
                        "same_workers": before == after and not any(
                            "exited by itself" in e for e in self.unexpected_exits),
                        "carried_on": 0 < wanted <= new - base and before == after}
        say(f"after the thaw: first new outcome in {first}s, {new - base} events produced "
            f"after the thaw done by the same worker processes: {before == after}")

    # -- main ------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        setup = self.setup()
        self.outcomes = Outcomes(self.settings)
        self.outcomes.start()
        for slot in range(self.config.workers):
            worker = Worker(slot, self.env(slot), self.work_dir)
            worker.start()
            self.workers.append(worker)
        self.producing = Producing(self.settings, self.config.events, self.config.rate,
                                   self.allowed)
        self.producing.start()
        orders = self.config.orders if self.config.orders >= 0 else self.config.events // 20
        seconds = self.config.events / self.config.rate
        self.service = OrderService(self.settings, self.prefix, orders,
                                    rate=max(1.0, orders / seconds))
        self.service.start(self.work_dir / "order-service.log")
        say(f"producing {self.config.events} failure events at {self.config.rate:.0f}/s; "
            f"{len(self.workers)} worker(s); faults planned at "
            + ", ".join(f"{f.kind}@{f.at_fraction:.0%}" for f in self.faults))
        for n, fault in enumerate(self.faults):
            if self.faults_stopped:
                break
            target = int(fault.at_fraction * self.config.events)
            self.next_target = target
            if not self.wait_progress(target, self.config.stall_timeout):
                self.save_stall_states(f"progress stalled before {fault.kind}")
                self.stop_faults(f"progress stalled before {fault.kind}: "
                                 f"{self.outcomes.progress()} < {target}")
                break
            fault.started = self.t()
            fault.progress_at_start = self.outcomes.progress()
            following = self.faults[n + 1:]
            self.next_target = (int(following[0].at_fraction * self.config.events)
                                if following else self.config.events)
            getattr(self, fault.kind)(fault)
        # Wait until every event is produced and every acknowledged one has an outcome, or
        # nothing moves for a while.
        self.next_target = self.config.events
        last, last_change = -1, time.monotonic()
        final_deadline = time.monotonic() + self.config.final_timeout
        snapshot_after = min(30.0, self.config.stall_timeout / 2)
        snapshot_taken = False
        while True:
            self.watch_workers()
            with self.outcomes.lock:
                # A copy: the producer thread adds to the set while this runs.
                acked = self.producing.acked.copy()
                done = sum(1 for fid in acked if fid in self.outcomes.outcomes)
                orders = self.order_incidents()
                orders_done = sum(1 for i in orders if i in self.outcomes.by_incident)
            if (self.producing.done.is_set() and done >= len(acked)
                    and len(orders) >= len(self.service.keys) and orders_done >= len(orders)):
                break
            done += orders_done
            if done != last:
                last, last_change = done, time.monotonic()
            elif not snapshot_taken and time.monotonic() - last_change > snapshot_after:
                snapshot_taken = True
                self.save_stall_states(f"no new outcome for {snapshot_after:.0f}s with "
                                       f"{len(acked) - done} events open")
            elif time.monotonic() - last_change > self.config.stall_timeout:
                self.notes.append(f"no new outcome for {self.config.stall_timeout:.0f}s with "
                                  f"{len(acked) - done} events still open and "
                                  f"{self.config.events - self.producing.produced} not yet "
                                  "produced")
                say(self.notes[-1])
                break
            elif time.monotonic() > final_deadline:
                self.save_stall_states("final count past its bound")
                self.notes.append(f"the final count passed --final-timeout "
                                  f"({self.config.final_timeout:.0f}s) with "
                                  f"{len(acked) - done} events still open")
                say(self.notes[-1])
                break
            time.sleep(1)
        finished = self.t()
        time.sleep(self.config.drain_seconds)  # anything arriving late would be a repeat
        self.service.stop()
        self.outcomes.stop_flag.set()
        self.outcomes.join()
        return self.summarize(setup, finished)

    def order_incidents(self) -> set[str]:
        """The incidents of the order service's reports (received, not produced here)."""
        return {incident for incident, fid in self.outcomes.received.items()
                if fid not in self.producing.index}

    def summarize(self, setup: dict[str, Any], finished: float) -> dict[str, Any]:
        o, p = self.outcomes, self.producing
        acked, failed = p.acked.copy(), dict(p.failed)  # a stalled producer may still add
        lost = [fid for fid in acked if fid not in o.outcomes]
        # Events decided on arrival; the retry path's incidents are counted under "orders".
        duplicated = {fid: sorted(ids) for fid, ids in o.outcomes.items()
                      if len(ids) > 1 and fid in p.index}
        unacked_with_outcome = [fid for fid in failed if fid in o.outcomes]
        moved_missing = {}
        moved_raw_repeats = {}
        for topic in MOVED_FOR.values():
            expected = [fid for fid, kind in o.kinds.items() if MOVED_FOR.get(kind) == topic
                        and fid in p.index]
            moved_missing[topic] = sum(1 for fid in expected if o.moved[topic][fid] == 0)
            moved_raw_repeats[topic] = sum(n - 1 for n in o.moved[topic].values() if n > 1)
        freeze = next((f for f in self.faults if f.kind == "freeze"), None)
        self.pauses(finished)
        result = {
            "config": {k: str(v) if isinstance(v, Path) else v
                       for k, v in asdict(self.config).items()},
            "setup": setup,
            "produced": p.produced,
            "acknowledged": len(acked),
            "delivery_failures": len(failed),
            "delivery_failure_samples": list(failed.values())[:5],
            "events_with_outcome": len(o.outcomes),
            "lost": len(lost),
            "lost_sample": lost[:20],
            "duplicated": len(duplicated),
            "duplicated_sample": dict(list(duplicated.items())[:10]),
            "raw_terminal_records": sum(o.raw_terminal.values()),
            "raw_terminal_repeats": o.raw_repeats,
            "events_with_raw_repeat": sum(1 for n in o.raw_terminal.values() if n > 1),
            "step_records": o.step_records,
            "step_repeats": o.step_repeats,
            "outcome_kinds": dict(collections.Counter(o.kinds.values())),
            "moved_missing": moved_missing,
            "moved_raw_repeats": moved_raw_repeats,
            "unacked_with_outcome": len(unacked_with_outcome),
            "faults": [asdict(f) for f in self.faults],
            "faults_done": sum(1 for f in self.faults if f.started),
            "carried_on_after_freeze": bool(freeze and freeze.detail.get("carried_on")),
            "unexpected_worker_exits": self.unexpected_exits,
            "worker_log_problems": [f"{n} x {text}" for text, n in sum(
                (w.problems() for w in self.workers), collections.Counter()).most_common(20)],
            "skipped_records_read_again": [sum(column) for column in zip(
                (0, 0), *(w.skipped_reads() for w in self.workers), strict=True)],
            "notes": self.notes,
            "stall_states": self.stall_states,
            "finished_s": finished,
        }
        orders = self.order_incidents()
        conflicting = [i for i in sorted(orders) if o.conflicting(i)]
        order_kinds = collections.Counter(o.incident_kinds[i] for i in orders
                                          if i in o.incident_kinds)
        result["orders"] = {
            "fed": self.service.produced, "of": len(self.service.keys),
            "reported": len(orders),
            "open": sum(1 for i in orders if i not in o.by_incident),
            "open_sample": sorted(i for i in orders if i not in o.by_incident)[:10],
            # Two outcomes in one cycle; a dead letter replayed and completed is two cycles.
            "conflicting": len(conflicting),
            "conflicting_sample": {i: sorted(o.by_incident[i]) for i in conflicting[:20]},
            # Each step of a conflicting incident: (step, worker/generation, timestamp ms).
            "conflicting_trails": {i: [(event_id.rsplit(":", 1)[-1], by, stamp)
                                       for _, event_id, _, by, stamp in o.trail.get(i, [])]
                                   for i in conflicting[:20]},
            # Incidents with more than one outcome because a dead letter was replayed (the
            # consumer-health recovery watch) or a new report came: a cycle each.
            "reopened": sum(1 for i in orders if len(o.by_incident.get(i, ())) > 1)
            - len(conflicting),
            "outcomes": dict(order_kinds),
            "handled": len(self.service.handled),
            "raw_terminal_records": sum(o.raw_by_incident[i] for i in orders),
        }
        if lost:
            result["lost_positions"] = self.positions(set(lost))
        result["passed"] = (result["lost"] == 0 and result["duplicated"] == 0
                            and result["faults_done"] == len(self.faults)
                            and result["carried_on_after_freeze"]
                            and not self.unexpected_exits
                            and all(n == 0 for n in moved_missing.values())
                            and result["produced"] == self.config.events
                            and result["orders"]["open"] == 0
                            and result["orders"]["conflicting"] == 0
                            and result["orders"]["reported"] == len(self.service.keys)
                            and result["orders"]["handled"] == len(self.service.keys))
        return result

    def pauses(self, finished: float) -> None:
        """Per fault, the longest time without a new outcome between the fault and the next
        one (or the end): how long processing stood still because of it."""
        times = sorted(t - self.began for t in self.outcomes.first_seen.values())
        done = [f for f in self.faults if f.started]
        for fault, following in zip(done, [*done[1:], None], strict=False):
            end = following.started if following else finished
            inside = [t for t in times if fault.started <= t <= end]
            edges = [fault.started, *inside, end]
            gaps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
            fault.detail["longest_pause_s"] = round(max(gaps), 1)

    def positions(self, lost: set[str]) -> dict[str, Any]:
        """Where the lost events sit in recovery.failures: partition, offsets, as runs."""
        consumer = Consumer(consumer_config(self.settings, f"fault-run-scan-{uuid.uuid4()}"))
        topic = self.settings.topic("recovery.failures")
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        ends = {}
        for partition in meta.partitions:
            ends[partition] = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                             timeout=30)[1]
        consumer.assign([TopicPartition(topic, pt, 0) for pt in meta.partitions])
        found: dict[int, list[int]] = collections.defaultdict(list)
        remaining = {pt for pt, end in ends.items() if end > 0}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                if message.error():
                    continue
                if message.offset() >= ends[message.partition()] - 1:
                    remaining.discard(message.partition())
                event = CODEC.decode(message.value(), "failure-event")
                if event["event_id"] in lost:
                    found[message.partition()].append(message.offset())
        consumer.close()
        runs: dict[str, list[str]] = {}
        for partition, offsets in found.items():
            offsets.sort()
            spans, start = [], offsets[0]
            for a, b in zip(offsets, offsets[1:] + [None], strict=True):
                if b != a + 1:
                    spans.append(f"{start}-{a}" if a != start else str(start))
                    start = b
            runs[str(partition)] = spans
        return runs

    def teardown(self) -> None:
        for worker in self.workers:
            worker.stop()
        if not self.config.keep:
            say("stopping the cluster")
            self.cluster.stop()


def write_report(result: dict[str, Any], command: str, path: Path) -> None:
    cfg = result["config"]
    verdict = "PASSED" if result["passed"] else "FAILED"
    lines = [
        "# Fault run: three-node cluster, worker and broker kills, frozen brokers",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
        f"({os.cpu_count()} cores, shared with other work), Kafka 4.1.1 from `scripts/kafka`.",
        "",
        "```sh",
        command,
        "```",
        "",
        f"**Result: {verdict}.** {result['lost']} lost, {result['duplicated']} duplicated "
        f"terminal outcomes over {result['acknowledged']:,} acknowledged failure events.",
        "",
        "## Setup",
        "",
        f"- 3 combined broker/controller nodes on ports {cfg['port']}-{cfg['port'] + 2} "
        f"(controllers {cfg['port'] + 100}-{cfg['port'] + 102}); cluster up in "
        f"{result['setup']['cluster_start_s']} s. The cluster's ports were "
        f"{'' if result.get('ports_reserved') else 'NOT '}reserved from Linux's ephemeral "
        "range for the run (`reserved_ports` in the script: without that, clients "
        "reconnecting to a dead broker connect to themselves and hold its port).",
        f"- {cfg['workers']} worker(s) (`python -m app worker`), topics from "
        "`recovery topics apply`:",
    ]
    for name, desc in result["setup"]["topics"].items():
        lines.append(f"  - `{name}`: {desc['partitions']} partitions, replication "
                     f"{desc['replication_factor']}, min.insync.replicas "
                     f"{desc['min.insync.replicas']}")
    lines += [
        f"- Producer: `app.kafka.config.producer_config` (acks=all, enable.idempotence=true), "
        f"{cfg['rate']:.0f} events/s, {cfg['events']:,} events (the three kinds of "
        "`tests/integration/test_exactly_once.py`: escalated, poisoned, dead-lettered).",
        f"- Seed {cfg['seed']} (faults at random moments: the fraction of outcomes counted "
        "when each one fires, and the victims, come from it).",
        "",
        "## Faults",
        "",
        "*Longest pause*: the longest time without a new outcome between the fault and the "
        "next one. *First outcome of a newly produced event*: from the fault until an event "
        "produced after it has its outcome, so it includes working off the backlog.",
        "",
        "| # | fault | at (s) | outcomes then | longest pause (s) | what happened |",
        "|---|---|---|---|---|---|",
    ]
    for n, fault in enumerate(result["faults"], 1):
        d = fault["detail"]
        if fault["kind"] == "worker_kill":
            what = (f"SIGKILL worker {d.get('worker')} (pid {d.get('pid')}), restarted after "
                    f"{d.get('restart_after_s')} s; first outcome of a newly produced event "
                    f"{d.get('first_new_outcome_after_s')} s after the kill")
        elif fault["kind"] == "broker_kill":
            what = (f"SIGKILL broker node {d.get('node')} (pid {d.get('pid')}); "
                    f"{d.get('outcomes_while_down')} outcomes while it was down; "
                    f"`scripts/kafka start` restarted it in {d.get('restart_s')} s "
                    f"(down {d.get('down_s')} s; {d.get('port_taken_retries', 0)} retries "
                    "while its port was taken by a client's self-connection)")
        else:
            what = (f"SIGSTOP all 3 broker JVMs for {d.get('seconds')} s, then SIGCONT; first "
                    f"outcome of an event produced after the thaw "
                    f"{d.get('first_new_outcome_after_s')} s later; "
                    f"{d.get('new_events_done_after_thaw')} such events done "
                    f"by the same worker process(es) (pids {d.get('worker_pids_before')} before, "
                    f"{d.get('worker_pids_after')} after); no restart")
        lines.append(f"| {n} | {fault['kind']} | {fault['started']} | "
                     f"{fault['progress_at_start']:,} | {d.get('longest_pause_s')} | {what} |")
    lines += [
        "",
        "## Figures",
        "",
        "| measure | value |",
        "|---|---|",
        f"| failure events produced / acknowledged by the brokers | {result['produced']:,} / "
        f"{result['acknowledged']:,} |",
        f"| delivery failures reported to the producer | {result['delivery_failures']} |",
        f"| failure events with a terminal outcome | {result['events_with_outcome']:,} |",
        f"| **lost** (acknowledged, no terminal outcome) | **{result['lost']}** |",
        f"| **duplicated** (two different terminal outcomes, after dedupe by event id) | "
        f"**{result['duplicated']}** |",
        f"| raw terminal records before dedupe | {result['raw_terminal_records']:,} |",
        f"| raw repeats before dedupe (same lifecycle event id again) | "
        f"{result['raw_terminal_repeats']:,} (on {result['events_with_raw_repeat']:,} events) |",
        f"| non-terminal lifecycle records / raw repeats | {result['step_records']:,} / "
        f"{result['step_repeats']:,} |",
        f"| outcomes by kind | {result['outcome_kinds']} |",
        f"| dead-lettered/poisoned outcomes without their moved record | "
        f"{result['moved_missing']} |",
        f"| moved records repeated (raw, same failure event) | {result['moved_raw_repeats']} |",
        "| input records Faust let pass, read again by the agents (`app/offset_gaps.py`) | "
        f"{result['skipped_records_read_again'][1]} records in "
        f"{result['skipped_records_read_again'][0]} runs |",
        f"| worker carried on after the freeze without a restart | "
        f"{'yes' if result['carried_on_after_freeze'] else 'NO'} |",
        f"| workers that exited by themselves | {len(result['unexpected_worker_exits'])} |",
        f"| retry path: orders fed / failure reports (incidents) | {result['orders']['fed']:,} "
        f"/ {result['orders']['reported']:,} |",
        f"| retry path: **open** incidents at the end / conflicting (two outcomes in one "
        f"cycle) | **{result['orders']['open']}** / **{result['orders']['conflicting']}** |",
        f"| retry path: incidents reopened (a dead letter replayed, then a second outcome) | "
        f"{result['orders']['reopened']:,} |",
        f"| retry path: outcomes by kind; orders handled by the service | "
        f"{result['orders']['outcomes']}; {result['orders']['handled']:,} |",
        f"| retry path: raw terminal records for its incidents | "
        f"{result['orders']['raw_terminal_records']:,} |",
        f"| run time until every outcome was in | {result['finished_s']} s |",
    ]
    if result.get("lost_positions"):
        lines += ["", "Lost events by partition and offset runs in `recovery.failures`: "
                  f"`{result['lost_positions']}`"]
    trails = result["orders"].get("conflicting_trails") or {}
    if trails:
        lines += ["", "Conflicting retry-path incidents (up to 5): each step, the worker and "
                  "consumer generation that sent it, and its broker timestamp:", ""]
        for incident, steps in list(trails.items())[:5]:
            lines.append(f"- `{incident}`: " + ", ".join(
                f"{step} by {who} at {stamp}" for step, who, stamp in steps))
    if result["notes"] or result["unexpected_worker_exits"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in
                                       result["notes"] + result["unexpected_worker_exits"]]
    lines += [
        "",
        "## How it is counted",
        "",
        "A reader consumes `recovery.events`, `recovery.dlq` and `recovery.poison` from the "
        "beginning. A terminal lifecycle event (outcome completed, dead_lettered, poisoned or "
        "escalated) has a deterministic id (`<failure event id>:dead-lettered`, ...); the reader "
        "keeps the first of each id, as docs/exactly-once.md tells consumers to do. *Lost* is "
        "a failure event the brokers acknowledged to the producer that has no terminal outcome "
        "once nothing moves any more; *duplicated* is one with two different terminal "
        "outcomes. The raw repeats (the same id sent again, mostly the work of the last second "
        "before a SIGKILL redone after the restart) are what an id-keeping reader drops; they "
        "are counted before that dedupe. After the last outcome the reader listens "
        f"{cfg['drain_seconds']:.0f} s more, so late repeats are counted too.",
        "",
    ]
    if result["worker_log_problems"]:
        lines += ["Worker log lines with ERROR or a traceback, by kind (numbers as N):", "",
                  "```"]
        lines += result["worker_log_problems"] + ["```", ""]
    # A hand-written "## Findings" section at the end of an earlier report is kept.
    kept = path.read_text().partition("\n## Findings")[1:] if path.exists() else ("", "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "".join(kept))


def parse_args(argv: list[str] | None = None) -> tuple[RunConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--port", type=int, default=45092)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="worker data and logs (default: a new temporary directory)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=500.0, help="events produced per second")
    parser.add_argument("--worker-kills", type=int, default=3)
    parser.add_argument("--freeze-seconds", type=float, default=30.0)
    parser.add_argument("--broker-down-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--web-port", type=int, default=0,
                        help="first worker's web port (default: any free port)")
    parser.add_argument("--stall-timeout", type=float, default=180.0)
    parser.add_argument("--final-timeout", type=float, default=900.0,
                        help="bound of the final count after the last fault, in seconds")
    parser.add_argument("--drain-seconds", type=float, default=10.0,
                        help="how long the reader listens on after the last outcome")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the markdown report here (docs/benchmarks/fault-run.md)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--orders", type=int, default=-1,
                        help="orders for the retry-path service (default: events / 20)")
    parser.add_argument("--back-to-back", action="store_true",
                        help="kill each replacement worker again within 2 s of its start")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    config = RunConfig(
        events=args.events, port=args.port,
        data_dir=args.data_dir or Path.home() / ".cache" / "kafka-recovery"
        / f"fault-run-{args.port}",
        work_dir=args.work_dir, workers=args.workers, rate=args.rate,
        worker_kills=args.worker_kills, freeze_seconds=args.freeze_seconds,
        broker_down_seconds=args.broker_down_seconds, seed=seed, web_port=args.web_port,
        stall_timeout=args.stall_timeout, final_timeout=args.final_timeout,
        drain_seconds=args.drain_seconds, keep=args.keep,
        orders=args.orders, back_to_back=args.back_to_back)
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    run = Run(config)
    ports = {config.port + n + base for n in range(3) for base in (0, 100)}
    # Clients reconnecting to a dead broker can otherwise get its port as their own and
    # connect to themselves, so the restarted broker cannot bind (tests/port_reservation.py).
    with reserved_ports(ports, lambda why: say(f"{why}; restarts will retry instead")) \
            as reserved:
        try:
            result = run.execute()
        finally:
            run.teardown()
    result["ports_reserved"] = reserved
    result["work_dir"] = str(run.work_dir)
    orders = result["orders"]
    say(f"retry path: {orders['fed']} orders, {orders['reported']} incidents, "
        f"{orders['open']} open, {orders['conflicting']} conflicting, outcomes "
        f"{orders['outcomes']}, {orders['handled']} handled by the service")
    say(f"{result['acknowledged']} acknowledged, {result['events_with_outcome']} with an "
        f"outcome: {result['lost']} lost, {result['duplicated']} duplicated, "
        f"{result['raw_terminal_repeats']} raw repeats; carried on after freeze: "
        f"{result['carried_on_after_freeze']}; {'PASSED' if result['passed'] else 'FAILED'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.report:
        command = " ".join([".venv/bin/python scripts/fault_run.py",
                            *(argv if argv is not None else sys.argv[1:])])
        if "--seed" not in command:
            command += f"  # seed drawn: {config.seed}"
        write_report(result, command, args.report)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
