"""TLS and SASL_SSL (SCRAM-SHA-512) through a real broker started by scripts/kafka with
certificates made here: the worker, the client API and the CLI run the pipeline over each;
refused credentials are one plain line; the password shows up nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient

from app.client import FailureReporter, RecoveringConsumer
from app.client.consumer import ensure_topic
from app.kafka import config as kafka_config
from app.kafka.dead_letters import read_dead_letters
from app.settings import Settings
from tests.conftest import LAUNCHER, REPO, TEST_BROKER_PORT, WorkerProcess, free_port
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec
from tests.tls_certs import write_tls_dir

pytestmark = pytest.mark.integration

USER = "recovery-svc"
# Distinctive, so a leak anywhere is found by a plain substring search.
PASSWORD = "Zebra-7Qx!pw-" + uuid.uuid4().hex[:12]
PORT = TEST_BROKER_PORT + 200  # TLS on PORT+200, SASL_SSL on PORT+300, controller PORT+100
FAST = {"RECOVERY_HEALTH_CHECK_INTERVAL_MS": "1000", "RECOVERY_HEARTBEAT_STALE_MS": "3000",
        "RECOVERY_HOLD_RETRY_MS": "2000", "RECOVERY_LAG_INTERVAL_S": "0",
        # Faust's consumer may subscribe before the broker lists the changelog topics the
        # worker has just created; it then waits for the next metadata refresh (5 min by
        # default) before it rejoins. Not a security matter, so the test refreshes sooner.
        "CONSUMER_METADATA_MAX_AGE_MS": "5000"}


@dataclass(frozen=True)
class SecureBroker:
    plaintext: str  # for the test's own reading only
    ssl: str
    sasl_ssl: str
    tls: Path


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("secure-broker")
    tls = write_tls_dir(root / "tls")
    args = ["--port", str(PORT), "--data-dir", str(root / "data")]
    started = subprocess.run(
        [sys.executable, str(LAUNCHER), "start", *args, "--fresh", "--tls-dir", str(tls),
         "--scram-user", f"{USER}:{PASSWORD}"], capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stderr
    assert PASSWORD not in started.stdout + started.stderr
    try:
        yield SecureBroker(started.stdout.strip().splitlines()[-1], f"127.0.0.1:{PORT + 200}",
                           f"127.0.0.1:{PORT + 300}", tls)
    finally:
        subprocess.run([sys.executable, str(LAUNCHER), "stop", *args], capture_output=True,
                       timeout=120)


def service_env(tmp_path: Path, bootstrap: str, **security: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RECOVERY_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env.update(FAST, KAFKA_BOOTSTRAP_SERVERS=bootstrap, RECOVERY_TOPIC_PREFIX=prefix,
               RECOVERY_APP_ID=f"recovery-{prefix.rstrip('.')}",
               RECOVERY_DATA_DIR=str(tmp_path / "data"), RECOVERY_WEB_PORT=str(free_port()))
    env.update({f"RECOVERY_KAFKA_{name.upper()}": value for name, value in security.items()})
    return env


def sasl_env(tmp_path: Path, broker: SecureBroker, password: str = PASSWORD,
             user: str = USER) -> dict[str, str]:
    return service_env(tmp_path, broker.sasl_ssl, security_protocol="SASL_SSL",
                       ssl_cafile=str(broker.tls / "ca.crt"), sasl_mechanism="SCRAM-SHA-512",
                       sasl_username=user, sasl_password=password)


def tls_env(tmp_path: Path, broker: SecureBroker, **override: str) -> dict[str, str]:
    files = {"ssl_cafile": str(broker.tls / "ca.crt"),
             "ssl_certfile": str(broker.tls / "client.crt"),
             "ssl_keyfile": str(broker.tls / "client.key"), **override}
    return service_env(tmp_path, broker.ssl, security_protocol="SSL",
                       **{k: v for k, v in files.items() if v})


def client_settings(env: dict[str, str]) -> Settings:
    """What a service using the client API reads from the same variables."""
    fields = {k.removeprefix("RECOVERY_").lower(): v for k, v in env.items()
              if k.startswith("RECOVERY_KAFKA_")}
    return Settings(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                    topic_prefix=env["RECOVERY_TOPIC_PREFIX"], **fields)


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=90)


def every_record(bootstrap: str) -> list[tuple[str, bytes]]:
    """(topic, key + value + header bytes) of every record on the broker."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    found = []
    for topic in topics:
        for record in read_dead_letters(bootstrap, topic):
            blob = (record.key or b"") + (record.value or b"") + b"".join(
                name.encode() + (value or b"") for name, value in record.headers)
            found.append((topic, blob))
    return found


class ConsumerThread:
    def __init__(self, consumer: RecoveringConsumer, handler):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=consumer.run, args=(handler,),
                                       kwargs={"until": self.stop.is_set}, daemon=True)

    def __enter__(self) -> ConsumerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_sasl_ssl_pipeline_recovers_and_the_password_shows_up_nowhere(
        broker: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = sasl_env(tmp_path, broker)
    prefix = env["RECOVERY_TOPIC_PREFIX"]
    applied = cli(env, "topics", "apply")
    assert applied.returncode == 0, applied.stderr
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        settings = client_settings(env)
        orders, group = f"{prefix}orders", f"{prefix}billing"
        ensure_topic(settings.kafka_bootstrap_servers, orders,
                     admin_settings=kafka_config.admin_config(settings))
        producer = Producer(kafka_config.producer_config(settings))
        producer.produce(orders, key=b"order-1", value=b"payload")
        assert producer.flush(30) == 0
        calls: dict[bytes, int] = {}

        def flaky(message: Message) -> None:
            calls[message.key()] = calls.get(message.key(), 0) + 1
            if calls[message.key()] <= 1:
                raise RuntimeError("downstream timeout")

        reader = TopicReader(broker.plaintext, [f"{prefix}recovery.events"])
        codec = locked_codec()
        consumer = RecoveringConsumer(group, [orders], service="billing", settings=settings,
                                      heartbeat_interval=1)
        with ConsumerThread(consumer, flaky):
            done = reader.wait_for(lambda ms: any(
                e["event_type"] == "recovery/recovery_completed"
                for e in lifecycle(codec, ms)), timeout=120)
        events = lifecycle(codec, reader.messages)
        reader.close()
        assert done, (events, worker.log_tail())
        assert calls[b"order-1"] == 2
        steps = [e["event_type"] for e in events]
        assert steps[0] == "recovery/failure_received" and "recovery/redelivered" in steps
    finally:
        worker.stop()

    log = (tmp_path / "worker.log").read_text(errors="replace")
    # The log searched below is the worker's real one, and the worker logged in with SCRAM.
    assert "[^Worker]: Ready" in log and f"Authenticated as {USER} via SCRAM-SHA-512" in log
    for where, text in [("worker log", log), ("topics apply", applied.stdout + applied.stderr),
                        ("client log", caplog.text)]:
        assert PASSWORD not in text, where
    assert all(PASSWORD not in repr(event) for event in events)
    records = every_record(broker.plaintext)
    assert any(topic == f"{prefix}recovery.events" for topic, _ in records)
    leaks = [topic for topic, blob in records if PASSWORD.encode() in blob]
    assert leaks == []


def test_mutual_tls_pipeline_through_cli_client_and_worker(
        broker: SecureBroker, tmp_path: Path) -> None:
    env = tls_env(tmp_path, broker)
    prefix = env["RECOVERY_TOPIC_PREFIX"]
    assert (applied := cli(env, "topics", "apply")).returncode == 0, applied.stderr
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        line = orjson.dumps({"kind": "EVENT_DELIVERY_FAILED", "work_item_id": f"{prefix}cli",
                             "source": {"service": "bus"},
                             "error": {"type": "topic_not_found"}}).decode()
        produced = cli(env, "produce", "-", stdin=line + "\n")
        assert produced.returncode == 0, produced.stderr
        reporter = FailureReporter(client_settings(env))
        reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="topic_not_found",
                        service="bus", work_item_id=f"{prefix}client")
        assert reporter.flush(30) == 0
        reader = TopicReader(broker.plaintext, [f"{prefix}recovery.events"])
        codec = locked_codec()
        wanted = {f"{prefix}cli", f"{prefix}client"}

        def received(messages: list[Message]) -> bool:
            return wanted <= {e["incident_id"] for e in lifecycle(codec, messages)
                              if e["event_type"] == "recovery/failure_received"}

        assert reader.wait_for(received, timeout=120), worker.log_tail()
        reader.close()
    finally:
        worker.stop()


def one_line_refusal(result: subprocess.CompletedProcess, began: float) -> str:
    assert result.returncode != 0
    assert time.monotonic() - began < 30, "the refusal took a timeout's length"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and not result.stdout.strip(), result.stderr
    return lines[0]


@pytest.mark.parametrize("user", [USER, "nobody"])
def test_a_wrong_password_is_refused_at_once_with_one_plain_line(
        broker: SecureBroker, tmp_path: Path, user: str) -> None:
    wrong = "Wrong-" + uuid.uuid4().hex[:10]
    env = sasl_env(tmp_path, broker, password=wrong, user=user)
    for args in (["topics", "apply"], ["produce", "-"], ["worker"]):
        began = time.monotonic()
        line = one_line_refusal(cli(env, *args), began)
        assert line.startswith(f"Error: authentication failed at {broker.sasl_ssl} "
                               f"(SASL_SSL, SCRAM-SHA-512, user {user})"), line
        assert "invalid credentials" in line and wrong not in line


def test_tls_refusals_name_the_certificate_problem(broker: SecureBroker, tmp_path: Path) -> None:
    stranger = write_tls_dir(tmp_path / "other-ca", ca_name="some other CA")
    began = time.monotonic()
    untrusted = one_line_refusal(
        cli(tls_env(tmp_path, broker, ssl_cafile=str(stranger / "ca.crt")), "topics", "apply"),
        began)
    assert untrusted.startswith(f"Error: TLS handshake with {broker.ssl} failed")
    assert "certificate verify failed" in untrusted
    began = time.monotonic()
    anonymous = one_line_refusal(
        cli(tls_env(tmp_path, broker, ssl_certfile="", ssl_keyfile=""), "topics", "apply"),
        began)
    assert "refused the TLS client certificate" in anonymous
