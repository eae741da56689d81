"""A worker stops within RECOVERY_SHUTDOWN_TIMEOUT_S even when no broker answers, and a
second signal stops it at once. Its own broker, so stopping it disturbs no other test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LAUNCHER, REPO, TEST_BROKER_PORT, WorkerProcess, free_port, wait_until

pytestmark = pytest.mark.integration

PORT = TEST_BROKER_PORT + 600  # controller on PORT + 100
TIMEOUT_S = 8


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[list[str]]:
    args = ["--port", str(PORT), "--data-dir", str(tmp_path / "broker")]
    started = subprocess.run([sys.executable, str(LAUNCHER), "start", *args, "--fresh"],
                             capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stderr
    yield args
    subprocess.run([sys.executable, str(LAUNCHER), "stop", *args], capture_output=True,
                   timeout=120)


def worker_env(tmp_path: Path) -> dict[str, str]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOVERY_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{PORT}", RECOVERY_TOPIC_PREFIX=prefix,
               RECOVERY_APP_ID=f"recovery-{prefix.rstrip('.')}",
               RECOVERY_DATA_DIR=str(tmp_path / "data"), RECOVERY_WEB_PORT=str(free_port()),
               RECOVERY_SHUTDOWN_TIMEOUT_S=str(TIMEOUT_S), RECOVERY_LAG_INTERVAL_S="0")
    applied = subprocess.run([sys.executable, "-m", "app", "topics", "apply"], env=env,
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    return env


def serving(env: dict[str, str]) -> bool:
    """The worker has joined its group and holds its input partitions (it is working)."""
    try:
        url = f"http://127.0.0.1:{env['RECOVERY_WEB_PORT']}/debug/consumer-state"
        with urllib.request.urlopen(url, timeout=2) as answer:
            state = json.loads(answer.read())
    except (OSError, ValueError):
        return False
    return bool((state.get("kafka") or {}).get("partitions"))


def start_worker(env: dict[str, str], log: Path) -> WorkerProcess:
    worker = WorkerProcess(env, log).start()
    assert wait_until(lambda: serving(env), timeout=120), worker.log_tail()
    return worker


def stop_broker(args: list[str]) -> None:
    stopped = subprocess.run([sys.executable, str(LAUNCHER), "stop", *args],
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr


def freeze_broker(tmp_path: Path) -> int:
    """SIGSTOP the broker: connections stay open and nothing answers (the worst case)."""
    pid = int((tmp_path / "broker" / "node-1.pid").read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_sigterm_with_the_broker_frozen_exits_within_the_timeout(own_broker, tmp_path) -> None:
    env = worker_env(tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    frozen = freeze_broker(tmp_path)
    try:
        code, log = sigterm_and_time(worker)
    finally:
        os.kill(frozen, signal.SIGCONT)
    # Nothing answers, so Faust's own shutdown waits: the deadline ends it and says why.
    assert code == 3, log
    assert "did not finish within" in log and "at exit (deadline passed):" in log, log


def test_sigterm_with_the_broker_stopped_exits_within_the_timeout(own_broker, tmp_path) -> None:
    env = worker_env(tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    stop_broker(own_broker)
    sigterm_and_time(worker)


def sigterm_and_time(worker: WorkerProcess) -> tuple[int, str]:
    assert worker.proc is not None
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(TIMEOUT_S + 20)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        pytest.fail(f"still running {TIMEOUT_S + 20} s after SIGTERM\n{worker.log_tail()}")
    took = time.monotonic() - sent
    log = worker.log_tail(400)
    assert took <= TIMEOUT_S + 10, log
    # Either Faust finished in time or the deadline ended it and said so.
    assert code == 0 or ("did not finish within" in log and code == 3), (code, log)
    print(f"\nshutdown: exit {code} after {took:.1f} s")
    return code, log


def test_a_second_signal_exits_at_once(own_broker, tmp_path) -> None:
    env = worker_env(tmp_path)
    env["RECOVERY_SHUTDOWN_TIMEOUT_S"] = "120"
    worker = start_worker(env, tmp_path / "worker.log")
    frozen = freeze_broker(tmp_path)
    try:
        second_signal(worker)
    finally:
        os.kill(frozen, signal.SIGCONT)


def second_signal(worker: WorkerProcess) -> None:
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "exiting at the latest in" in worker.log_tail(400), timeout=30), \
        worker.log_tail()
    assert worker.proc.poll() is None, "the shutdown finished before the second signal"
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGINT)
    code = worker.proc.wait(20)
    assert time.monotonic() - sent < 10
    assert code == 128 + signal.SIGINT, worker.log_tail()
    assert "again: exiting now" in worker.log_tail(400)
