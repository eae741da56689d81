"""The worker's lag snapshots run in a child process: a librdkafka crash there (it aborts or
segfaults when a group coordinator moves, see app/lag/isolated.py) costs at most one
snapshot, never the worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from app.lag.collect import LagError
from app.lag.isolated import IsolatedCollector
from app.settings import Settings

pytestmark = pytest.mark.integration


def child_of(collector: IsolatedCollector):
    [child] = list(collector._pool._processes.values())  # type: ignore[union-attr]
    return child


def test_a_child_that_died_while_idle_is_replaced_for_the_next_snapshot(kafka_bootstrap: str):
    collector = IsolatedCollector(Settings(kafka_bootstrap_servers=kafka_bootstrap), timeout=10)
    try:
        first = collector.snapshot()
        child = child_of(collector)
        assert child.pid != os.getpid()
        os.kill(child.pid, signal.SIGABRT)  # what librdkafka's failed assertion does
        child.join(10)
        again = collector.snapshot()
        assert again.taken_at_ms >= first.taken_at_ms
        assert child_of(collector).pid != child.pid
    finally:
        collector.close()


def test_a_crash_during_a_snapshot_is_one_lag_error_and_the_caller_lives_on():
    # Nothing listens on port 1: the child waits in its metadata request while it is killed.
    collector = IsolatedCollector(Settings(kafka_bootstrap_servers="127.0.0.1:1"), timeout=20)
    outcome: list[BaseException] = []

    def take() -> None:
        try:
            collector.snapshot()
        except BaseException as exc:
            outcome.append(exc)

    try:
        taking = threading.Thread(target=take)
        taking.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not getattr(collector._pool, "_processes", None):
            time.sleep(0.1)
        time.sleep(3)  # the child has started and is inside the snapshot
        os.kill(child_of(collector).pid, signal.SIGSEGV)
        taking.join(30)
        assert not taking.is_alive()
        [error] = outcome
        assert isinstance(error, LagError) and "died" in str(error)
    finally:
        collector.close()
