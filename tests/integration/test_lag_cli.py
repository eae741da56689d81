"""`recovery lag` against a real broker: the numbers it prints for a group whose lag the test
set up, the status rules on live data, --watch, and bad input."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Producer

from tests.conftest import REPO, run_cli
from tests.integration.lag_setup import commit, make_topic

pytestmark = pytest.mark.integration


def rows(output: str, group: str) -> dict[str, list[str]]:
    """Lines of the table for ``group``, keyed by partition ('*' for the group line)."""
    found = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] == group:
            found["*" if cells[1] == "*" else cells[2]] = cells
    return found


def test_lag_prints_offsets_lag_and_status_of_each_partition(service_env, topic_prefix):
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group = f"{topic_prefix}orders", f"{topic_prefix}billing"
    make_topic(bootstrap, topic, [10, 4])
    commit(bootstrap, group, topic, [3, 4])
    result = run_cli(service_env, "lag", "--group", group)
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout, group)
    # GROUP TOPIC PARTITION COMMITTED END LAG TIME-LAG-S STATUS
    assert table["0"][1:] == [topic, "0", "3", "10", "7", "-", "STOP"]
    assert table["1"][1:] == [topic, "1", "4", "4", "0", "0.0", "OK"]
    # the group: no member (EMPTY), total lag 7, status STOP (rule G2)
    assert table["*"][2] == "(EMPTY)" and table["*"][3] == "7" and table["*"][-1] == "STOP"


def test_watch_estimates_time_lag_once_the_end_offsets_move(service_env, topic_prefix):
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group = f"{topic_prefix}events", f"{topic_prefix}indexer"
    make_topic(bootstrap, topic, [5])
    commit(bootstrap, group, topic, [2])
    stop = threading.Event()

    def produce() -> None:  # about 20 records a second while the CLI watches
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        while not stop.is_set():
            producer.produce(topic, value=b"x", partition=0)
            producer.poll(0)
            time.sleep(0.05)
        producer.flush(10)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app", "lag", "--group", group, "--watch",
             "--interval", "1", "--count", "3"],
            env=service_env, cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
        thread.join(10)
    assert result.returncode == 0, result.stderr
    snapshots = result.stdout.split("-- ")[1:]
    assert len(snapshots) == 3
    first, last = rows(snapshots[0], group)["0"], rows(snapshots[-1], group)["0"]
    assert first[6] == "-"  # one point: no time lag yet
    lags = [int(rows(s, group)["0"][5]) for s in snapshots]
    assert lags == sorted(lags) and lags[-1] > lags[0]  # the end moves, the group does not
    # the end was at offset 2 before the watch began: more than the 2 s the watch spans
    assert float(last[6]) > 2.0


def test_bad_input_is_one_plain_line_and_non_zero(service_env, topic_prefix):
    nothing = run_cli(service_env, "lag", "--group", f"{topic_prefix}nobody*")
    assert nothing.returncode == 1
    assert nothing.stderr.strip().splitlines() == [
        f"Error: no consumer group matches {topic_prefix}nobody*"]
    bad = run_cli(service_env, "lag", "--interval", "0", "--watch")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    unreachable = run_cli({**service_env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
                          "lag", "--timeout", "2")
    assert unreachable.returncode == 1
    [line] = unreachable.stderr.strip().splitlines()
    assert line.startswith("Error: cannot reach Kafka at 127.0.0.1:1")
