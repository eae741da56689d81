"""scripts/kafka: three nodes with a 3-voter quorum, idempotent start, stale pid clean-up."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.conftest import LAUNCHER, free_port_block

pytestmark = pytest.mark.integration


def launcher(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCHER), *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def three_nodes(tmp_path: Path):
    # Three brokers on port+0..2, their controllers on port+100..102.
    port = free_port_block(node + role for node in range(3) for role in (0, 100, 200, 300))
    args = ["--nodes", "3", "--port", str(port), "--data-dir", str(tmp_path / "cluster")]
    yield args, tmp_path / "cluster"
    launcher("stop", *args)


def test_three_node_cluster_restarts_a_killed_node(three_nodes) -> None:
    args, root = three_nodes
    started = launcher("start", *args)
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip().splitlines()[-1]
    assert len(bootstrap.split(",")) == 3

    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert len(admin.list_topics(timeout=10).brokers) == 3
    broker = ConfigResource(ConfigResource.Type.BROKER, "1")
    config = admin.describe_configs([broker])[broker].result()
    assert config["default.replication.factor"].value == "3"
    assert config["min.insync.replicas"].value == "2"

    again = launcher("start", *args)
    assert again.returncode == 0 and "nothing to do" in again.stderr

    pid = int((root / "node-2.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    status = launcher("status", *args)
    assert status.returncode == 3 and "node 2: stopped" in status.stdout
    assert "stale pid file" in status.stderr
    restarted = launcher("start", *args)
    assert restarted.returncode == 0, restarted.stderr
    assert "nothing to do" not in restarted.stderr
    assert int((root / "node-2.pid").read_text()) != pid
    assert launcher("status", *args).returncode == 0

    logs = launcher("logs", *args, "-n", "5")
    assert logs.returncode == 0 and "==> " in logs.stdout
    assert launcher("stop", *args).returncode == 0
    assert not (root / "node-1.pid").exists()
