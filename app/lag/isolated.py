"""Lag snapshots taken in a child process, so that a crash inside librdkafka cannot take the
worker down with it.

librdkafka 2.16's admin group operations abort or segfault the whole process when the group
coordinator moves under them: a NULL consumer-group dereference when an OffsetFetch answers
NOT_COORDINATOR (librdkafka #5040, "segfault at 58" in rdk:main), and an
`rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0'` abort on timed-out
requests (#4605). The fault run (scripts/fault_run.py, docs/benchmarks/fault-run.md) killed the
worker that way after a broker restart and a freeze; a 20-line loop of
`list_consumer_group_offsets` reproduces the abort on the first SIGKILLed broker.

The collector therefore runs in a spawned child (not forked: the worker has threads). A child
that dies is one failed snapshot, reported as a LagError like an unreachable cluster; the next
snapshot starts a new child. A child that hangs past the deadline is terminated the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from app.lag.collect import LagCollector, LagError, Snapshot
from app.settings import Settings

_child_collector: LagCollector | None = None


def _start_child(settings: Settings, timeout: float, parent: int) -> None:
    global _child_collector
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _child_collector = LagCollector(settings, timeout=timeout)


def _exit_with_parent(parent: int) -> None:
    """A SIGKILLed worker leaves its child behind (it is re-parented): leave with it. The
    parent's pid comes from the parent itself: a child whose parent was killed while it was
    still starting is re-parented before it could ask for its parent's pid, and a fault run
    found such a child idling for ten minutes after its worker was gone."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _snapshot_in_child(patterns: list[str], sized_topics: list[str]) -> Snapshot:
    assert _child_collector is not None
    return _child_collector.snapshot(patterns, sized_topics=sized_topics)


class IsolatedCollector:
    """LagCollector's `snapshot`, run in one long-lived child process."""

    def __init__(self, settings: Settings, *, timeout: float = 15.0):
        self.settings = settings
        self.timeout = timeout
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child, initargs=(self.settings, self.timeout, os.getpid()))
        return self._pool

    def snapshot(self, patterns: Sequence[str] = (), *,
                 sized_topics: Iterable[str] = ()) -> Snapshot:
        args = (_snapshot_in_child, list(patterns), list(sized_topics))
        if self._pool is not None and any(
                process.exitcode is not None
                for process in list(getattr(self._pool, "_processes", {}).values())):
            # The child died while idle and the pool has not noticed yet (its management
            # thread marks it broken a moment later): a submit now would be lost with it.
            self.close()
        try:
            future = self._executor().submit(*args)
        except BrokenProcessPool:  # the child died while idle: a new one takes this snapshot
            self.close()
            future = self._executor().submit(*args)
        # The collector's own waits add up to a few timeouts; a child still busy after that
        # (or starting: importing the client takes a moment) is stuck.
        try:
            return future.result(timeout=self.timeout * 4 + 30)
        except BrokenProcessPool as exc:
            self.close()
            raise LagError("the lag collector process died (a librdkafka crash); a new one "
                           "starts with the next snapshot") from exc
        except FutureTimeout as exc:
            self.close()
            raise LagError("the lag collector process did not answer; it was stopped and a "
                           "new one starts with the next snapshot") from exc

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # A hung or dying child does not leave by itself: end it, then drop the pool.
        for process in list(getattr(pool, "_processes", {}).values()):
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
