"""`recovery acls apply` on a SASL_SSL broker with KRaft's StandardAuthorizer (deny unless
an ACL allows), then each principal with its grants: a service is refused the dead-letter
topic, another group's redelivery topic and another group, and can report a failure and
read its own redeliveries; the worker runs the pipeline end to end; the operator replays."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from app.client import FailureReporter, RecoveringConsumer
from app.client.consumer import ensure_topic
from app.contracts import headers as h
from app.kafka import config as kafka_config
from app.kafka.dead_letters import read_dead_letters
from tests.conftest import LAUNCHER, WorkerProcess, free_port_block, wait_until
from tests.integration.test_replay import produce_dead_letters
from tests.integration.test_security import (
    ConsumerThread,
    SecureBroker,
    cli,
    client_settings,
    service_env,
)
from tests.kafka_helpers import TopicReader, lifecycle, locked_codec
from tests.tls_certs import write_tls_dir

pytestmark = pytest.mark.integration

USERS = {name: f"{name}-{uuid.uuid4().hex[:10]}" for name in
         ("worker", "billing", "shipping", "ops")}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("acl-broker")
    tls = write_tls_dir(root / "tls")
    port = free_port_block([0, 100, 200, 300])
    args = ["--port", str(port), "--data-dir", str(root / "data")]
    users = [arg for name, password in USERS.items()
             for arg in ("--scram-user", f"{name}:{password}")]
    started = subprocess.run(
        [sys.executable, str(LAUNCHER), "start", *args, "--fresh", "--tls-dir", str(tls),
         *users, "--authorizer"], capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stderr
    assert "StandardAuthorizer on" in started.stderr
    try:
        yield SecureBroker(started.stdout.strip().splitlines()[-1], f"127.0.0.1:{port + 200}",
                           f"127.0.0.1:{port + 300}", tls)
    finally:
        subprocess.run([sys.executable, str(LAUNCHER), "stop", *args], capture_output=True,
                       timeout=120)


def as_user(env: dict[str, str], broker: SecureBroker, user: str) -> dict[str, str]:
    """The same deployment (prefix, app id) as `user` on the SASL_SSL listener."""
    return {**env, "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_ssl,
            "RECOVERY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RECOVERY_KAFKA_SSL_CAFILE": str(broker.tls / "ca.crt"),
            "RECOVERY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "RECOVERY_KAFKA_SASL_USERNAME": user, "RECOVERY_KAFKA_SASL_PASSWORD": USERS[user]}


def refusal(config: dict, group: str, topic: str, timeout: float = 20) -> int | None:
    """The error code a consumer in `group` subscribed to `topic` is answered with (None:
    no refusal within the timeout, or a record was read)."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "log_level": 0})
    consumer.subscribe([topic])
    codes: list[int] = []

    def refused() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is not None:
            codes.append(message.error().code())
        return bool(codes) or (message is not None and message.error() is None)

    try:
        wait_until(refused, timeout, interval=0)
        return codes[0] if codes else None
    finally:
        consumer.close()


def test_each_principal_can_do_its_work_and_nothing_else(broker: SecureBroker,
                                                           tmp_path: Path) -> None:
    admin_env = service_env(tmp_path, broker.plaintext)  # User:ANONYMOUS, the super user
    prefix = admin_env["RECOVERY_TOPIC_PREFIX"]
    billing, shipping = f"{prefix}billing", f"{prefix}shipping"
    orders, dlq = f"{prefix}orders", f"{prefix}recovery.dlq"
    principals = ["--worker", "User:worker", "--service", f"User:billing={billing}",
                  "--service", f"User:shipping={shipping}", "--operator", "User:ops"]
    assert (applied := cli(admin_env, "topics", "apply")).returncode == 0, applied.stderr
    first = cli(admin_env, "acls", "apply", *principals)
    assert first.returncode == 0, first.stderr
    created = int(first.stdout.splitlines()[-1].split()[0])
    assert created > 50 and first.stdout.splitlines()[-1].endswith(
        " created, 0 present, 0 drifted"), first.stdout

    # The lag monitor on: it asks about the services' groups with the worker's grants.
    worker = WorkerProcess({**as_user(admin_env, broker, "worker"),
                            "RECOVERY_LAG_INTERVAL_S": "2"}, tmp_path / "worker.log")
    worker.start()
    try:
        # Whose topics these are is the services' business: the admin creates them and lets
        # billing read its input; `acls apply` reports that grant as drift and keeps it.
        plain = {"bootstrap.servers": broker.plaintext}
        for topic in (orders, f"{shipping}.redelivery"):
            ensure_topic(broker.plaintext, topic, admin_settings=plain)
        grant = AclBinding(ResourceType.TOPIC, orders, ResourcePatternType.LITERAL,
                           "User:billing", "*", AclOperation.READ, AclPermissionType.ALLOW)
        owner = AdminClient(plain)
        for future in owner.create_acls([grant]).values():
            future.result(30)

        def granted() -> bool:
            # The controller has it; the broker's authorizer, which `acls apply` asks, may
            # not yet (a gate's run read 0 drifted).
            found = owner.describe_acls(AclBindingFilter(
                ResourceType.TOPIC, orders, ResourcePatternType.LITERAL, "User:billing", None,
                AclOperation.ANY, AclPermissionType.ANY)).result(30)
            return any(b.operation == AclOperation.READ for b in found)

        assert wait_until(granted, 30)
        again = cli(admin_env, "acls", "apply", *principals)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[-1] == f"0 created, {created} present, 1 drifted"
        assert f"drift: User:billing READ TOPIC literal {orders} (allow)" in again.stdout
        # Only a super user may create ACLs: anyone else gets one plain line.
        refused = cli(as_user(admin_env, broker, "billing"), "acls", "apply", *principals)
        dry = cli(as_user(admin_env, broker, "billing"), "acls", "apply", "--dry-run",
                  *principals)
        for result, lacking in ((refused, "DESCRIBE and ALTER"), (dry, "DESCRIBE")):
            assert result.returncode == 1 and not result.stdout, result.stdout
            assert result.stderr.strip().splitlines() == [
                f"Error: this principal lacks {lacking} on the cluster, which reading and "
                "creating ACLs need; run it as a super user"], result.stderr

        # The service is refused what is not its own ...
        billing_settings = client_settings(as_user(admin_env, broker, "billing"))
        config = kafka_config.common_config(billing_settings)
        assert refusal(config, billing, dlq) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert refusal(config, billing, f"{shipping}.redelivery") == \
            KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert refusal(config, shipping, f"{billing}.redelivery") == \
            KafkaError.GROUP_AUTHORIZATION_FAILED
        answers: list[KafkaError] = []
        forger = Producer({**kafka_config.producer_config(billing_settings), "log_level": 0})
        forger.produce(dlq, value=b"forged dead letter",
                       on_delivery=lambda err, _message: answers.append(err))
        forger.flush(20)
        assert [err.code() for err in answers] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

        # ... and does its work with its own: a report the worker handles, a redelivery it
        # reads in its own group from its own redelivery topic, an acknowledgement.
        reader = TopicReader(broker.plaintext, [f"{prefix}recovery.events"])
        codec = locked_codec()
        reporter = FailureReporter(billing_settings)
        reporter.report(kind="EVENT_DELIVERY_FAILED", error_type="topic_not_found",
                        service="billing", work_item_id=f"{prefix}reported")
        assert reporter.flush(30) == 0
        source = Producer(plain)
        source.produce(orders, key=b"order-1", value=b"payload")
        assert source.flush(30) == 0
        calls: dict[bytes, int] = {}

        def flaky(message: Message) -> None:
            calls[message.key()] = calls.get(message.key(), 0) + 1
            if calls[message.key()] <= 1:
                raise RuntimeError("downstream timeout")

        consumer = RecoveringConsumer(billing, [orders], service="billing",
                                      settings=billing_settings, heartbeat_interval=1)

        def handled(messages: list[Message]) -> bool:
            events = lifecycle(codec, messages)
            return {f"{prefix}reported"} <= {e["incident_id"] for e in events} and any(
                e["event_type"] == "recovery/recovery_completed" for e in events)

        with ConsumerThread(consumer, flaky):
            done = reader.wait_for(handled, timeout=90)
            assert consumer.control is not None and consumer.control.reader.active
        reader.close()
        assert done, worker.log_tail()
        assert calls[b"order-1"] == 2

        # The worker's lag monitor sees billing's group (and its own), nobody else's.
        def lag_groups() -> dict[str, set[str]]:
            url = f"http://127.0.0.1:{admin_env['RECOVERY_WEB_PORT']}/api/overview"
            with urllib.request.urlopen(url, timeout=5) as answer:
                data = json.load(answer)
            assert data["errors"] == [], data["errors"]
            return {g["group"]: {p["topic"] for p in g["partitions"]} for g in data["groups"]}

        assert wait_until(lambda: f"{billing}.redelivery" in lag_groups().get(billing, ()),
                          30), lag_groups()
        seen = lag_groups()
        assert set(seen) <= {billing, admin_env["RECOVERY_APP_ID"]}
        # billing's input is not the worker's to describe: its offsets there are not shown
        assert orders not in seen[billing]
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert "Authenticated as worker via SCRAM-SHA-512" in log
        assert "AUTHORIZATION_FAILED" not in log and "AuthorizationFailed" not in log
        assert "lag snapshot failed" not in log
    finally:
        worker.stop()

    # The operator replays a dead letter of billing's to billing's redelivery topic.
    produce_dead_letters(broker.plaintext, dlq, [(orders, billing, "timeout", "o-9", None)])
    ops_env = as_user(admin_env, broker, "ops")
    replayed = cli(ops_env, "replay", "--group", billing)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    redelivered = [d for d in read_dead_letters(broker.plaintext, f"{billing}.redelivery")
                   if h.header_value(d.headers, h.REPLAY_ID)]
    assert [d.key for d in redelivered] == [b"o-9"]
