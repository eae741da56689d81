"""Shared fixtures. Integration tests get a real Kafka broker: KAFKA_BOOTSTRAP_SERVERS if set,
else a testcontainers Kafka when a Docker engine answers, else the project's own launcher."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from tests.port_reservation import reserved_ports

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "scripts" / "kafka"
# Under pytest-xdist each process has its own session broker: gw0 on 39092 (+0..700 for the
# TLS and shutdown tests' brokers), gw1 on 31092, below the ephemeral range, and so on.
XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_BROKER_PORT = (int(os.environ.get("RECOVERY_TEST_KAFKA_PORT", "39092"))
                    - 8000 * XDIST_WORKER)


@pytest.fixture(scope="session", autouse=True)
def test_broker_ports_reserved() -> Iterator[bool]:
    """The local test brokers' ports (the session broker and its controller, the TLS test's
    broker with its controller, TLS and SASL_SSL listeners, the shutdown test's broker and
    its controller: TEST_BROKER_PORT + 0..700) are kept out of the source ports the suite's
    clients are given (tests/port_reservation.py)."""
    ports = {TEST_BROKER_PORT + offset for offset in range(0, 800, 100)}
    with reserved_ports(ports) as reserved:
        yield reserved


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(offsets: Iterable[int], attempts: int = 200) -> int:
    """A base port with base+offset free for every offset, below the kernel's ephemeral range.

    A launcher that derives several ports from one base cannot take them from the ephemeral
    range: any outgoing connection of a parallel client may hold one by the time it binds (a
    three-node start once failed on exactly that). Ports under 32768 are never handed out to
    outgoing connections, so a block found free there stays free unless someone listens on it.
    """
    wanted = sorted(set(offsets))
    for _ in range(attempts):
        base = random.randrange(20000, 32000 - wanted[-1])
        try:
            with contextlib.ExitStack() as held:
                for offset in wanted:
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no free block of ports for offsets {wanted}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    data_dir = Path.home() / ".cache" / "kafka-recovery" / f"test-broker-{TEST_BROKER_PORT}"
    started = subprocess.run(
        [sys.executable, str(LAUNCHER), "start", "--port", str(TEST_BROKER_PORT),
         "--data-dir", str(data_dir), "--fresh"],
        capture_output=True, text=True, timeout=600,
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/kafka start failed:\n{started.stdout}\n{started.stderr}")
    bootstrap = started.stdout.strip().splitlines()[-1]
    try:
        yield bootstrap
    finally:
        subprocess.run(
            [sys.executable, str(LAUNCHER), "stop", "--port", str(TEST_BROKER_PORT),
             "--data-dir", str(data_dir)],
            capture_output=True, timeout=120,
        )


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so tests on one broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:10]}."


def delete_topics_of(bootstrap: str, prefix: str) -> None:
    """Deletes a finished test's topics (its prefix, and its worker's changelogs, named after
    the app id): a broker keeps files open per partition, and a whole suite's topics passed
    the machine's 20,000 open files ("Too many open files" shut the broker's log dir)."""
    from confluent_kafka.admin import AdminClient

    from app.kafka.config import admin_config, for_bootstrap

    app_id = f"recovery-{prefix.rstrip('.')}"
    try:
        admin = AdminClient(admin_config(for_bootstrap(bootstrap)))
        names = [name for name in admin.list_topics(timeout=10).topics
                 if name.startswith(prefix) or name.startswith(app_id)]
        if names:
            for future in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    future.result(30)
    except Exception as exc:  # a test that broke the broker must not fail at clean-up too
        print(f"could not delete the topics of {prefix}: {exc}")


@pytest.fixture
def service_env(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
                ) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RECOVERY_TOPIC_PREFIX": topic_prefix,
        "RECOVERY_APP_ID": f"recovery-{topic_prefix.rstrip('.')}",
        "RECOVERY_DATA_DIR": str(tmp_path / "data"),
        "RECOVERY_WEB_PORT": str(free_port()),
    })
    yield env
    delete_topics_of(kafka_bootstrap, topic_prefix)


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path,
                 command: tuple[str, ...] = ("-m", "app", "worker")):
        self.env = env
        self.log_path = log_path
        self.command = command  # after the interpreter
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.command], env=self.env, cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def stop(self, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def exit_code(self, timeout: float) -> int | None:
        """The code the worker exits with by itself within `timeout` (None: it did not; it
        is stopped then)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.stop()

    def consumer_state(self) -> str:
        """The worker's /debug/consumer-state (where its consumer stands), for a failure's
        message; the error itself if the worker does not answer."""
        return self._debug_page("consumer-state")

    def consumer_tasks(self) -> str:
        """The worker's /debug/consumer-tasks (every task's stack), for a failure's files."""
        return self._debug_page("consumer-tasks")

    def _debug_page(self, name: str) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.env['RECOVERY_WEB_PORT']}/debug/{name}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read().decode()
        except Exception as exc:
            return f"no {name}: {exc!r}"

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def worker_factory(
    service_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(alongside: bool = False) -> WorkerProcess:
        # A worker running alongside others needs its own web port and its own data
        # directory (RocksDB locks it); a worker replacing one that stopped reuses both.
        env = service_env
        if alongside:
            env = {**service_env, "RECOVERY_WEB_PORT": str(free_port()),
                   "RECOVERY_DATA_DIR": str(tmp_path / f"data-{len(workers)}")}
        worker = WorkerProcess(env, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def applied_topics(service_env: dict[str, str]) -> dict[str, str]:
    result = run_cli(service_env, "topics", "apply")
    assert result.returncode == 0, result.stderr
    return service_env


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
